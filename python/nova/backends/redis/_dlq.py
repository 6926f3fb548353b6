"""The dead-letter stream ``nova:{topic}:dlq``: one entry per event that exhausted its
attempts or could not be decoded.

Fields: ``payload`` (the message's ``event`` field exactly as received), ``error``
(``Type: message``), ``listener`` (the subscriber's name), ``partition``, ``attempts`` (0 for
a message that did not decode), and for convenience ``group`` (the Redis consumer group),
``message_id``, ``event_id``, ``event_type`` (empty when undecodable) and ``failed_at`` (RFC 3339,
UTC).
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import Any

__all__ = ["fields", "error_text", "raw_payload"]


def error_text(exc: BaseException) -> str:
    return f"{type(exc).__qualname__}: {exc}"


def raw_payload(message: dict[bytes, bytes] | None) -> bytes:
    """The ``event`` field as received; a message without one is kept whole, as JSON."""
    if message and b"event" in message:
        return message[b"event"]
    if not message:
        return b""
    return json.dumps(
        {k.decode("utf-8", "replace"): v.decode("utf-8", "replace") for k, v in message.items()}
    ).encode()


def fields(
    *,
    payload: bytes,
    error: str,
    listener: str,
    partition: int,
    attempts: int,
    group: str,
    message_id: str,
    event: Any = None,
) -> dict[str, Any]:
    return {
        "payload": payload,
        "error": error,
        "listener": listener,
        "partition": str(partition),
        "attempts": str(attempts),
        "group": group,
        "message_id": message_id,
        "event_id": "" if event is None else str(event.id),
        "event_type": "" if event is None else str(event.type),
        "failed_at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
    }
