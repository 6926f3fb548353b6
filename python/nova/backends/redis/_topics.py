"""Topic configs as stored in Redis: canonical JSON, compared field by field.

A callable ``ordering_key`` cannot travel: its qualified name (``module:qualname``) is stored
and every process must create the topic with a callable of the same name.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from ..._types import DeliveryMode, OnFull, TopicConfig
from ...errors import ValidationError

__all__ = ["encode", "decode", "callable_name", "describe_difference"]


def callable_name(fn: Callable[..., Any]) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qualname = getattr(fn, "__qualname__", None) or getattr(fn, "__name__", None) or type(fn).__qualname__
    return f"{module}:{qualname}"


def _as_dict(cfg: TopicConfig) -> dict[str, Any]:
    key = cfg.ordering_key
    if key is None:
        ordering: Any = None
    elif isinstance(key, str):
        ordering = {"metadata": key}
    else:
        ordering = {"callable": callable_name(key)}
    return {
        "partitions": cfg.partitions,
        "buffer_size": cfg.buffer_size,
        "delivery_mode": cfg.delivery_mode.value,
        "max_concurrency": cfg.max_concurrency,
        "on_full": cfg.on_full.value,
        "ordering_key": ordering,
        "retention": cfg.retention,
        "dedup_window": cfg.dedup_window,
    }


def encode(cfg: TopicConfig) -> str:
    """Canonical JSON of ``cfg`` (sorted keys, so equal configs give equal texts)."""
    return json.dumps(_as_dict(cfg), sort_keys=True, separators=(",", ":"))


class _RemoteCallable:
    """Stands for a callable ordering key another process registered: calling it is an error
    until this process creates the topic with its own callable of the same name."""

    def __init__(self, topic: str, name: str) -> None:
        self.topic = topic
        self.name = name
        self.__qualname__ = name.split(":", 1)[-1]
        self.__module__ = name.split(":", 1)[0]

    def __call__(self, event: Any) -> str:
        raise ValidationError(
            f"topic '{self.topic}' partitions by the callable {self.name}, which lives in another "
            f"process; call bus.create_topic('{self.topic}', ordering_key=<that callable>) in this "
            "process before publishing to it"
        )

    def __repr__(self) -> str:
        return f"<remote ordering key {self.name}>"


def decode(topic: str, text: str | bytes) -> TopicConfig:
    """The TopicConfig stored for ``topic`` (a callable key becomes a placeholder that
    raises ValidationError when used)."""
    d = json.loads(text)
    ordering = d.get("ordering_key")
    key: Any
    if ordering is None:
        key = None
    elif "metadata" in ordering:
        key = str(ordering["metadata"])
    else:
        key = _RemoteCallable(topic, str(ordering["callable"]))
    return TopicConfig(
        partitions=int(d["partitions"]),
        buffer_size=int(d["buffer_size"]),
        delivery_mode=DeliveryMode(d["delivery_mode"]),
        max_concurrency=int(d["max_concurrency"]),
        on_full=OnFull(d["on_full"]),
        ordering_key=key,
        retention=d.get("retention"),
        dedup_window=int(d["dedup_window"]),
    )


def is_remote(cfg: TopicConfig) -> bool:
    return isinstance(cfg.ordering_key, _RemoteCallable)


def describe_difference(stored: str | bytes, wanted: str) -> str:
    a = json.loads(stored)
    b = json.loads(wanted)
    diffs = [
        f"{k}: existing {a.get(k)!r}, requested {b.get(k)!r}"
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k)
    ]
    return "; ".join(diffs)
