"""Leases: which process consumes which partition, for each subscriber (consumer group).

One background thread per backend. Every tick (at most a quarter of ``lease_ttl``, and
0.25 s at most so a released partition is taken over at once) it:

1. heartbeats the process in each consumer group's member set (server time, so host clocks
   do not matter) and learns how many processes are alive in it;
2. renews every lease it holds (compare-and-``PEXPIRE``); a lease that is no longer ours
   stops its worker at once;
3. balances: a subscriber's fair share of a topic is ``ceil(partitions / live members)``;
   past it, the extra partitions are handed back (their workers finish the event in hand,
   acknowledge, and release the lease); below it, free partitions are taken
   (``SET NX PX``) and a worker starts on each;
4. follows the topic registry: pattern subscriptions attach to new matching topics, and
   subscriptions of deleted topics end.

When Redis is unreachable, renewals fail; a worker whose lease was not renewed for 80% of
``lease_ttl`` stops before another process may take the partition over.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import zlib
from typing import TYPE_CHECKING, Any

from ...errors import BackendError
from . import _keys
from ._conn import TRANSIENT
from ._consumer import DELETED, LOST, REBALANCE, Attachment, PartitionWorker

if TYPE_CHECKING:
    from ._backend import RedisBackend

__all__ = ["LeaseKeeper"]

_log = logging.getLogger("nova.backends.redis")

# Redis unreachable, directly or through a backend call that wrapped it.
_OUTAGE: tuple[type[BaseException], ...] = (*TRANSIENT, BackendError)


class LeaseKeeper:
    def __init__(self, backend: RedisBackend) -> None:
        self.backend = backend
        self.ttl = backend.lease_ttl
        self.ttl_ms = max(1, int(backend.lease_ttl * 1000))
        self.tick = min(backend.lease_ttl / 4, 0.25)
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._acquiring = True
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failing = False
        self._offset = zlib.crc32(backend.consumer.encode())

    def start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="nova-redis-leases", daemon=True)
                self._thread.start()
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    def drain(self) -> None:
        """Stop taking leases (shutdown); keep renewing those held until ``stop``."""
        self._acquiring = False
        self._wake.set()

    def stop(self, timeout: float | None = 2.0) -> None:
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout)

    # -- the loop ---------------------------------------------------------------------------

    def _run(self) -> None:
        b = self.backend
        while not self._stop.is_set():
            started = time.monotonic()
            try:
                self._tick(started)
                if self._failing:
                    _log.info("nova: redis backend %s: lease keeper reconnected", b.label)
                    self._failing = False
            except _OUTAGE as exc:
                if not self._failing:
                    _log.warning(
                        "nova: redis backend %s: lease keeper cannot reach Redis (%s); retrying",
                        b.label,
                        b.scrub(repr(exc)),
                    )
                    self._failing = True
            except Exception:  # noqa: BLE001 - keep the leases alive whatever happens
                _log.exception("nova: redis backend %s: lease keeper tick failed", b.label)
            self._wake.wait(max(0.0, self.tick - (time.monotonic() - started)))
            self._wake.clear()
        self._leave()

    def _leave(self) -> None:
        b = self.backend
        cgs = {att.cg for att in b._attachments_snapshot(include_detached=True)}
        if not cgs:
            return
        try:
            pipe = b._client.pipeline(transaction=False)
            for cg in cgs:
                pipe.zrem(_keys.members(cg), b.consumer)
            pipe.execute()
        except Exception:  # noqa: BLE001 - the membership expires on its own
            pass

    def _tick(self, now: float) -> None:
        b = self.backend
        if self._acquiring:
            b._follow_registry()
        atts = b._attachments_snapshot()
        workers = b._workers_snapshot()
        if not atts and not workers:
            return
        client = b._client
        scripts = b._scripts
        pipe = client.pipeline(transaction=False)
        cgs = sorted({a.cg for a in atts}) if self._acquiring else []
        for cg in cgs:
            scripts.heartbeat(keys=[_keys.members(cg)], args=[b.consumer, self.ttl_ms], client=pipe)
        for w in workers:
            scripts.renew(keys=[w.lease_key], args=[b.consumer, self.ttl_ms], client=pipe)
        results: list[Any] = pipe.execute() if (cgs or workers) else []
        members = {cg: max(1, int(n)) for cg, n in zip(cgs, results[: len(cgs)], strict=True)}
        renewed_until = now + self.ttl * 0.8
        for w, ok in zip(workers, results[len(cgs) :], strict=True):
            if int(ok) == 1:
                w.lease_deadline = renewed_until
            elif w.alive and w.reason is None:
                _log.warning(
                    "nova: redis backend %s: lease of %s for %s was lost; stopping",
                    b.label,
                    w.stream,
                    w.att.cg,
                )
                w.stop(LOST)
        if not self._acquiring:
            return
        for att in atts:
            self._balance(att, members.get(att.cg, 1), now)

    def _balance(self, att: Attachment, live: int, now: float) -> None:
        b = self.backend
        share = math.ceil(att.partitions / live)
        with b._lock:
            if att.detached:
                return
            running = {p: w for p, w in att.workers.items() if w.reason is None}
            busy = set(att.workers)  # partitions with a worker, stopping ones included
            # A worker of an earlier subscription of the same group may still be finishing.
            held_keys = {w.lease_key for w in b._live_workers}
            busy.update(p for p in range(att.partitions) if _keys.lease(att.topic, p, att.cg) in held_keys)
        held = len(running)
        if held > share:
            # Hand back the partitions furthest from our preferred start.
            order = sorted(running, key=lambda p: (p - self._offset) % att.partitions, reverse=True)
            for p in order[: held - share]:
                running[p].stop(REBALANCE)
            return
        if held == share:
            return
        want = share - held
        candidates = [(self._offset + i) % att.partitions for i in range(att.partitions)]
        candidates = [p for p in candidates if p not in busy]
        if not candidates:
            return
        # Only free ones (a lease held elsewhere would block our share forever otherwise).
        holders = b._client.mget([_keys.lease(att.topic, p, att.cg) for p in candidates])
        candidates = [
            p for p, h in zip(candidates, holders, strict=True) if h is None or h == b.consumer.encode()
        ][:want]
        if not candidates:
            return
        pipe = b._client.pipeline(transaction=False)
        for p in candidates:
            b._scripts.acquire(
                keys=[_keys.lease(att.topic, p, att.cg)], args=[b.consumer, self.ttl_ms], client=pipe
            )
        results = pipe.execute()
        for p, ok in zip(candidates, results, strict=True):
            if int(ok) != 1:
                continue
            worker = PartitionWorker(b, att, p, self.ttl)
            worker.lease_deadline = now + self.ttl * 0.8
            if not b._add_worker(att, worker):
                # Detached meanwhile: give the lease straight back.
                b._scripts.release(keys=[worker.lease_key], args=[b.consumer], client=b._client)
                continue
            worker.start()

    # used by delete_topic / detach
    @staticmethod
    def stop_workers(att: Attachment, reason: str = DELETED) -> list[PartitionWorker]:
        workers = list(att.workers.values())
        for w in workers:
            w.stop(reason)
        return workers
