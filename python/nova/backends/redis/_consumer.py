"""The consumer loop: one thread per partition this process holds the lease of, for one
subscriber (a Redis consumer group).

On start it takes over what earlier holders left pending (``XAUTOCLAIM``) and processes its
own pending entries first, in stream order; then it reads new entries (``XREADGROUP >``).
Each event runs through the subscriber's managed listener (retries wait here, holding back
only this partition); an entry is ``XACK``\\ ed only after success or after it was written to
the dead-letter stream. Connection errors are retried with backoff; after one, pending entries
are read again so nothing fetched is forgotten.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

import redis

from ..._types import DeliveryMode, TopicConfig
from ...errors import ClosedError, ListenerNotFound, RetryLimitExceeded
from . import _dlq, _keys
from ._conn import TRANSIENT

if TYPE_CHECKING:
    from ._backend import RedisBackend, RedisSubscription

__all__ = ["Attachment", "PartitionWorker", "Counters", "Backoff"]


def _split(blob: Any) -> list[tuple[bytes, bytes, bytes]]:
    """Entries of the scripted read's reply (see ``_scripts._READ``)."""
    if not blob:
        return []
    data = bytes(blob) if not isinstance(blob, bytes) else blob
    out = []
    pos = 0
    end = len(data)
    index = data.index
    while pos < end:
        s1 = index(b" ", pos)
        s3 = index(b" ", s1 + 3)
        start = s3 + 1
        stop = start + int(data[s1 + 3 : s3])
        out.append((data[pos:s1], data[s1 + 1 : s1 + 2], data[start:stop]))
        pos = stop
    return out


def _entries(reply: Any) -> list[tuple[bytes, bytes, bytes]]:
    """Entries of an XREADGROUP reply (RESP2 list or RESP3 dict), as ``_split`` gives them."""
    if not reply:
        return []
    streams = list(reply.values()) if isinstance(reply, dict) else [s[1] for s in reply]
    out = []
    for entries in streams:
        for msg_id, message in entries:
            if not message:
                out.append((msg_id, b"d", b""))
            elif b"event" in message:
                out.append((msg_id, b"e", message[b"event"]))
            else:
                out.append((msg_id, b"x", b""))
    return out


_log = logging.getLogger("nova.backends.redis")

# Why a worker stops. A worker that still holds its lease releases it when it ends, except
# when the lease was lost (someone else may hold it now).
REBALANCE, UNSUBSCRIBE, SHUTDOWN, LOST, DELETED = "rebalance", "unsubscribe", "shutdown", "lost", "deleted"

_RECOVER_EVERY = 5.0  # seconds between re-reads of our own pending entries
_ACK_EVERY = 0.2  # seconds: acks of a long batch are sent at least this often


class Counters:
    """Process-local counters of a backend (read by ``stats()``)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.published = 0
        self.processed = 0
        self.failed = 0
        self.dropped = 0
        self.skipped = 0  # EXACTLY_ONCE duplicates skipped
        self.dead_lettered = 0

    def add(self, **deltas: int) -> None:
        with self.lock:
            for name, n in deltas.items():
                setattr(self, name, getattr(self, name) + n)


class Backoff:
    """Exponential backoff for reconnects: 50 ms doubling to 2 s."""

    def __init__(self, first: float = 0.05, cap: float = 2.0) -> None:
        self.first = first
        self.cap = cap
        self.next = first

    def reset(self) -> None:
        self.next = self.first

    def step(self) -> float:
        delay = self.next
        self.next = min(self.cap, self.next * 2)
        return delay


@dataclass(eq=False)
class Attachment:
    """One subscriber consuming one topic: a Redis consumer group on each partition stream."""

    sub: RedisSubscription
    topic: str
    config: TopicConfig
    cg: str  # the Redis consumer group: "{group}:{subscriber}"
    subscriber: str  # the subscriber's name (listener name, "#k" for a repeat)
    managed: Any  # ManagedListener
    workers: dict[int, PartitionWorker] = field(default_factory=dict)
    detached: bool = False

    @property
    def mode(self) -> DeliveryMode:
        return self.config.delivery_mode

    @property
    def partitions(self) -> int:
        return self.config.partitions


class _Stop(Exception):
    """Internal: leave the loop now (the current event stays pending)."""


class PartitionWorker:
    """Consumes partition ``partition`` of ``att.topic`` for ``att``'s consumer group."""

    def __init__(self, backend: RedisBackend, att: Attachment, partition: int, lease_ttl: float) -> None:
        self.backend = backend
        self.att = att
        self.partition = partition
        self.stream = _keys.stream(att.topic, partition)
        self.lease_key = _keys.lease(att.topic, partition, att.cg)
        self.lease_ttl = lease_ttl
        # Renewed by the lease keeper; the worker does not start an event past it.
        self.lease_deadline = time.monotonic() + lease_ttl * 0.8
        self.reason: str | None = None
        self.stop_event = threading.Event()
        self.busy = False  # inside a listener call (or its retry wait)
        self.fetched: deque[tuple[bytes, Any, Any]] = deque()  # (id, event | None, raw)
        self.unacked: list[bytes] = []
        self.left: list[Any] = []  # events fetched and not processed when it stopped
        self.done = threading.Event()
        # Reads started / finished, and entries received but not yet decoded: flush() uses
        # them for AT_MOST_ONCE, whose entries leave no pending trace in Redis.
        self.reads_started = 0
        self._ok = 0  # successes not yet added to the backend's counters
        self.reads_done = 0
        self.raw = 0
        self.thread = threading.Thread(
            target=self._run, name=f"nova-redis-{att.topic}-{partition}-{att.subscriber}", daemon=True
        )

    # -- control (other threads) ----------------------------------------------------------

    def start(self) -> None:
        self.thread.start()

    def stop(self, reason: str) -> None:
        if self.reason is None:
            self.reason = reason
        self.stop_event.set()

    @property
    def alive(self) -> bool:
        return not self.done.is_set()

    @property
    def queued(self) -> int:
        return len(self.fetched)

    @property
    def idle(self) -> bool:
        return not self.busy and not self.fetched and not self.unacked and not self.raw

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        b = self.backend
        backoff = Backoff()
        recover = self.att.mode is not DeliveryMode.AT_MOST_ONCE
        last_recover = time.monotonic()
        failing = False
        try:
            while not self.stop_event.is_set():
                try:
                    if self.unacked:
                        self._ack()
                    if time.monotonic() >= self.lease_deadline:
                        self.stop(LOST)
                        break
                    if recover:
                        self._claim_pending()
                        self._drain_own_pending()
                        recover = False
                        last_recover = time.monotonic()
                    else:
                        entries = self._read(">", b.block_ms)
                        if entries:
                            self._process(entries)
                        elif time.monotonic() - last_recover > _RECOVER_EVERY and (
                            self.att.mode is not DeliveryMode.AT_MOST_ONCE
                        ):
                            recover = True
                    if failing:
                        _log.info("nova: redis backend %s: %s reconnected", b.label, self.stream)
                        failing = False
                    backoff.reset()
                except _Stop:
                    break
                except TRANSIENT as exc:
                    if not failing:
                        _log.warning(
                            "nova: redis backend %s: %s (%s): %s; retrying with backoff",
                            b.label,
                            self.stream,
                            self.att.cg,
                            b.scrub(repr(exc)),
                        )
                        failing = True
                    recover = self.att.mode is not DeliveryMode.AT_MOST_ONCE
                    self._requeue_fetched()
                    self.stop_event.wait(backoff.step())
                except redis.ResponseError as exc:
                    if "NOGROUP" in str(exc):
                        # The stream or group vanished (Redis lost its data, or the topic was
                        # deleted and published again): recreate it and start over.
                        self._requeue_fetched()
                        try:
                            b._create_group(self.stream, self.att.cg)
                        except TRANSIENT:
                            pass
                        recover = self.att.mode is not DeliveryMode.AT_MOST_ONCE
                        self.stop_event.wait(backoff.step())
                    else:
                        _log.error(
                            "nova: redis backend %s: %s (%s): %s",
                            b.label,
                            self.stream,
                            self.att.cg,
                            b.scrub(repr(exc)),
                        )
                        self._requeue_fetched()
                        self.stop_event.wait(backoff.step())
        except BaseException:  # noqa: BLE001 - a bug or KeyboardInterrupt: log, give the partition up
            _log.exception(
                "nova: redis backend %s: consumer of %s (%s) crashed; the partition is handed back",
                b.label,
                self.stream,
                self.att.cg,
            )
            self.stop_event.wait(1.0)  # no hot loop of take-crash-release
            self.stop(REBALANCE)
        finally:
            self._finish()

    def _finish(self) -> None:
        b = self.backend
        if self.unacked:
            try:
                self._ack()
            except Exception:  # noqa: BLE001 - Redis down: they stay pending and come back
                pass
        self.left = [ev for _id, ev, _raw in self.fetched if ev is not None]
        self.fetched.clear()
        if self.reason != LOST:
            try:
                b._scripts.release(keys=[self.lease_key], args=[b.consumer], client=b._reader)
            except Exception:  # noqa: BLE001 - it expires on its own
                pass
        self.done.set()
        b._worker_done(self)

    def _requeue_fetched(self) -> None:
        # Entries fetched but not processed stay pending in Redis and are read again.
        self.fetched.clear()
        self.raw = 0

    # -- Redis calls ----------------------------------------------------------------------

    def _read(self, start: str, block: int | None) -> list[tuple[bytes, bytes, bytes]]:
        """Entries as (id, kind, payload): kind b"e" (payload: the ``event`` field), b"x"
        (no ``event`` field) or b"d" (deleted while pending). A non-blocking scripted read
        first; when it finds nothing and ``block`` is set, a blocking XREADGROUP."""
        b = self.backend
        noack = self.att.mode is DeliveryMode.AT_MOST_ONCE
        self.reads_started += 1
        try:
            blob: Any = b._scripts.read(
                keys=[self.stream],
                args=[self.att.cg, b.consumer, b.batch_size, start, "1" if noack else "0"],
                client=b._reader,
            )
            entries = _split(blob)
            if not entries and block is not None:
                reply: Any = b._reader.xreadgroup(
                    self.att.cg,
                    b.consumer,
                    {self.stream: start},
                    count=b.batch_size,
                    block=block,
                    noack=noack,
                )
                entries = _entries(reply)
            self.raw = len(entries)
        finally:
            self.reads_done += 1
        return entries

    def _claim_pending(self) -> None:
        """Make every pending entry of this group on this stream ours: whoever had them
        before us (a dead process, or one that released the lease) will not process them."""
        b = self.backend
        cursor: Any = "0-0"
        while True:
            # Not JUSTID: redis-py's parsed form of it drops the cursor.
            reply: Any = b._reader.xautoclaim(
                self.stream, self.att.cg, b.consumer, min_idle_time=0, start_id=cursor, count=200
            )
            cursor = reply[0]
            if cursor in (b"0-0", "0-0"):
                return
            if self.stop_event.is_set():
                raise _Stop

    def _drain_own_pending(self) -> None:
        last = "0"
        while not self.stop_event.is_set():
            entries = self._read(last, None)
            if not entries:
                return
            last_id = entries[-1][0]
            last = last_id.decode() if isinstance(last_id, bytes) else str(last_id)
            self._process(entries)
            if self.unacked:
                self._ack()

    def _ack(self) -> None:
        if self.att.mode is DeliveryMode.AT_MOST_ONCE:
            self.unacked.clear()
            return
        ids = self.unacked
        self.backend._reader.xack(self.stream, self.att.cg, *ids)
        self.unacked = []

    def _commit(self, fn: Callable[[], Any]) -> bool:
        """Run a write that must happen (dead letter, seen mark) until Redis takes it; False
        when the worker is stopped first (the entry then stays pending)."""
        backoff = Backoff()
        while True:
            try:
                fn()
                return True
            except TRANSIENT:
                if self.stop_event.wait(backoff.step()):
                    return False

    # -- processing -----------------------------------------------------------------------

    def _decode(self, entries: list[tuple[bytes, bytes, bytes]]) -> None:
        loads = self.backend.serializer.loads
        event_cls = self.backend._event_cls
        fetched = self.fetched
        for msg_id, kind, payload in entries:
            if kind == b"e":
                try:
                    event = loads(payload)
                    if not isinstance(event, event_cls):
                        raise TypeError(f"the serializer returned {type(event).__name__}, not a nova.Event")
                    fetched.append((msg_id, event, payload))
                except Exception as exc:  # noqa: BLE001 - any decode failure is a poison message
                    fetched.append((msg_id, exc, payload))
            elif kind == b"x":
                found: Any = self.backend._reader.xrange(self.stream, msg_id, msg_id)
                message = found[0][1] if found else None
                fetched.append(
                    (msg_id, ValueError("the message has no 'event' field"), _dlq.raw_payload(message))
                )
            else:
                # Deleted from the stream while pending: nothing to process.
                fetched.append((msg_id, None, None))

    def _process(self, entries: list[tuple[bytes, bytes, bytes]]) -> None:
        self._decode(entries)
        self.raw = 0
        try:
            self._process_fetched()
        finally:
            if self._ok:
                self.backend._counters.add(processed=self._ok)
                self._ok = 0

    def _process_fetched(self) -> None:
        att = self.att
        exactly_once = att.mode is DeliveryMode.EXACTLY_ONCE
        seen: set[Any] = set()
        if exactly_once:
            seen = self._seen_ids()
        last_ack = time.monotonic()
        while self.fetched:
            if self.stop_event.is_set() and (
                att.mode is not DeliveryMode.AT_MOST_ONCE or self.reason in (SHUTDOWN, UNSUBSCRIBE, DELETED)
            ):
                raise _Stop
            if time.monotonic() >= self.lease_deadline:
                self.stop(LOST)
                raise _Stop
            msg_id, event, raw = self.fetched[0]
            if event is None:
                self.unacked.append(msg_id)
            elif isinstance(event, BaseException):
                self._poison(msg_id, event, raw)
            elif exactly_once and event.id in seen:
                self.backend._counters.add(skipped=1)
                self.unacked.append(msg_id)
            else:
                self._deliver(msg_id, event, raw)
                if exactly_once:
                    seen.add(event.id)
            self.fetched.popleft()
            if self.unacked and time.monotonic() - last_ack > _ACK_EVERY:
                self._ack()
                last_ack = time.monotonic()
        if self.unacked:
            self._ack()

    def _seen_ids(self) -> set[Any]:
        b = self.backend
        ids = [
            ev.id for _id, ev, _raw in self.fetched if ev is not None and not isinstance(ev, BaseException)
        ]
        if not ids:
            return set()
        keys = [_keys.seen(self.att.topic, self.att.cg, i) for i in ids]
        values = b._reader.mget(keys)
        return {i for i, v in zip(ids, values, strict=True) if v is not None}

    def _poison(self, msg_id: bytes, exc: BaseException, raw: bytes) -> None:
        att = self.att
        b = self.backend
        _log.error(
            "nova: redis backend %s: message %s of %s does not decode (%s); it goes to %s",
            b.label,
            msg_id.decode(),
            self.stream,
            _dlq.error_text(exc),
            _keys.dlq(att.topic),
        )
        entry = _dlq.fields(
            payload=raw,
            error=_dlq.error_text(exc),
            listener=att.subscriber,
            partition=self.partition,
            attempts=0,
            group=att.cg,
            message_id=msg_id.decode(),
        )
        if not self._commit(lambda: b._reader.xadd(_keys.dlq(att.topic), cast(Any, entry))):
            raise _Stop
        b._counters.add(failed=1, dead_lettered=1)
        self.unacked.append(msg_id)

    def _deliver(self, msg_id: bytes, event: Any, raw: bytes) -> None:
        att = self.att
        b = self.backend
        managed = att.managed
        at_most_once = att.mode is DeliveryMode.AT_MOST_ONCE
        self.busy = True
        try:
            for attempt in itertools.count(1):
                try:
                    delay = managed.attempt(event, attempt, att.topic)
                except RetryLimitExceeded as exc:
                    cause = exc.__cause__ if exc.__cause__ is not None else exc
                    if at_most_once:
                        b._counters.add(processed=1, failed=1, dropped=1)
                        return
                    entry = _dlq.fields(
                        payload=raw,
                        error=_dlq.error_text(cause),
                        listener=att.subscriber,
                        partition=self.partition,
                        attempts=attempt,
                        group=att.cg,
                        message_id=msg_id.decode(),
                        event=event,
                    )
                    if not self._commit(lambda: b._reader.xadd(_keys.dlq(att.topic), cast(Any, entry))):
                        raise _Stop from None
                    b._counters.add(processed=1, failed=1, dead_lettered=1)
                    self.unacked.append(msg_id)
                    return
                except (ClosedError, ListenerNotFound):
                    # Unsubscribed or shut down meanwhile: the entry stays pending.
                    raise _Stop from None
                if delay is None:
                    if att.mode is DeliveryMode.EXACTLY_ONCE:
                        key = _keys.seen(att.topic, att.cg, event.id)
                        ttl = b.dedup_ttl_ms
                        self._commit(lambda: b._reader.set(key, b"1", px=ttl, nx=True))
                    self._ok += 1
                    self.unacked.append(msg_id)
                    return
                if at_most_once:  # a managed listener of one attempt never asks for more
                    b._counters.add(processed=1, failed=1, dropped=1)
                    return
                if self.stop_event.wait(float(delay)):
                    raise _Stop
        finally:
            self.busy = False
