"""``RedisBackend``: the Bus API across processes and hosts on Redis Streams (see docs/api.md,
Distributed bus)."""

from __future__ import annotations

import atexit
import dataclasses
import logging
import os
import socket
import threading
import time
import uuid
import weakref
from collections.abc import Iterable, Mapping
from typing import Any

import redis

from ..._core import TopicPattern

from ... import _core  # type: ignore[attr-defined, unused-ignore]
from ..._closing import ClosesOnExit
from ..._types import BusStats, DeliveryMode, ShutdownReport, TopicConfig, TopicInfo
from ...errors import BusClosed, ListenerNotFound, TopicNotFound, ValidationError
from ...resilience import ListenerConfig, ListenerManager, RetryPolicy
from ...resilience._util import listener_name
from . import _keys, _topics
from ._conn import TRANSIENT, Secrets, backend_error, connect, redact_url, without_retries
from ._consumer import DELETED, SHUTDOWN, UNSUBSCRIBE, Attachment, Counters, PartitionWorker
from ._leases import LeaseKeeper
from ._scripts import Scripts
from ._serializer import JsonSerializer, Serializer

__all__ = ["RedisBackend", "RedisSubscription"]

_log = logging.getLogger("nova.backends.redis")

_BATCH_CHUNK = 1000  # events per server-side XADD script call in publish_batch
_TOMBSTONE_TTL = 3600  # seconds


class RedisSubscription(ClosesOnExit):
    """A subscription on a :class:`RedisBackend`: ``id``, ``topic`` (the topic, or the pattern
    of ``subscribe_pattern``), ``listener`` (a ``nova.Listener``), ``active``,
    ``unsubscribe()`` (idempotent) and context-manager use."""

    def __init__(
        self,
        backend: RedisBackend,
        topic: str,
        listener: Any,
        config: ListenerConfig | None,
        pattern: TopicPattern | None,
    ) -> None:
        self.id = str(uuid.uuid4())
        self.topic = topic
        self.listener = listener
        self.config = config
        self.pattern = pattern
        self._backend = weakref.ref(backend)
        self._active = True
        self._managed: dict[bool, Any] = {}  # single attempt? -> ManagedListener

    @property
    def active(self) -> bool:
        return self._active

    @property
    def name(self) -> str:
        return str(self.listener.name)

    def unsubscribe(self) -> None:
        """Stop consuming (idempotent). Entries fetched and not yet processed stay pending in
        Redis for the next holder; the leases are released."""
        backend = self._backend()
        if backend is None:
            self._active = False
            return
        backend._unsubscribe(self)

    def _close_on_exit(self) -> None:
        self.unsubscribe()

    def __repr__(self) -> str:
        kind = "pattern" if self.pattern is not None else "topic"
        return f"RedisSubscription({kind}={self.topic!r}, listener={self.name!r}, active={self._active})"


class RedisBackend(ClosesOnExit):
    """A distributed backend for ``nova.Bus`` on Redis Streams (see docs/api.md, Distributed bus)::

        bus = Bus(backend=RedisBackend("redis://localhost:6379/0", group="billing"))

    ``url``: ``redis://``, ``rediss://`` (TLS) or ``unix://``, with credentials if needed
    (never shown: see :attr:`url`). ``group``: processes of one group share the work of each
    subscriber. ``consumer``: this process's name in the group (default host, pid and a random
    suffix; it must be unique among live processes). ``lease_ttl``: seconds a partition lease
    lives without renewal (renewed every ``lease_ttl / 4`` at most, and at least 4 times a
    second). ``serializer``: an object with ``dumps(event) -> bytes | str`` and
    ``loads(bytes) -> Event`` (default JSON).

    Keyword-only extras: ``start`` (``"earliest"``: a new subscriber reads what the topic's
    streams still hold; ``"latest"``: only what is published after its group was created),
    ``batch_size`` (entries per read), ``block`` (seconds a read waits for new entries; bounds
    how fast a consumer notices a stop), ``dedup_ttl`` (seconds an EXACTLY_ONCE id is
    remembered), ``socket_timeout``, ``connect_timeout``, ``redis_options`` (extra keyword
    arguments for ``redis.Redis.from_url``, e.g. ``ssl_ca_certs``) and ``name``.

    Construction connects and pings: a refused connection or wrong credentials raise
    ``BackendError``.
    """

    def __init__(
        self,
        url: str,
        group: str,
        consumer: str | None = None,
        lease_ttl: float = 10.0,
        serializer: Serializer | None = None,
        *,
        start: str = "earliest",
        batch_size: int = 256,
        block: float = 0.25,
        dedup_ttl: float = 86400.0,
        socket_timeout: float = 10.0,
        connect_timeout: float = 5.0,
        redis_options: Mapping[str, Any] | None = None,
        name: str = "redis",
    ) -> None:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"RedisBackend.name must be a non-empty str, got {name!r}")
        if not isinstance(group, str) or not group:
            raise ValidationError(f"RedisBackend.group must be a non-empty str, got {group!r}")
        if consumer is not None and (not isinstance(consumer, str) or not consumer):
            raise ValidationError(f"RedisBackend.consumer must be a non-empty str or None, got {consumer!r}")
        for field_name, value, low in (
            ("lease_ttl", lease_ttl, 0.1),
            ("block", block, 0.001),
            ("dedup_ttl", dedup_ttl, 0.001),
            ("socket_timeout", socket_timeout, 0.001),
            ("connect_timeout", connect_timeout, 0.001),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or not value >= low:
                raise ValidationError(f"RedisBackend.{field_name} must be a number >= {low}, got {value!r}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ValidationError(f"RedisBackend.batch_size must be an integer >= 1, got {batch_size!r}")
        if start not in ("earliest", "latest"):
            raise ValidationError(f"RedisBackend.start must be 'earliest' or 'latest', got {start!r}")
        if serializer is None:
            serializer = JsonSerializer()
        elif not (
            callable(getattr(serializer, "dumps", None)) and callable(getattr(serializer, "loads", None))
        ):
            raise ValidationError(
                "RedisBackend.serializer must have dumps(event) -> bytes | str and loads(bytes) -> Event, "
                f"got {type(serializer).__name__}"
            )
        self.name = name
        self.group = group
        self.consumer = consumer or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.lease_ttl = float(lease_ttl)
        self.serializer: Serializer = serializer
        self.start = start
        self.batch_size = batch_size
        self.block_ms = max(1, int(block * 1000))
        self.dedup_ttl_ms = max(1, int(dedup_ttl * 1000))
        self._url = redact_url(url) if isinstance(url, str) else "<invalid>"
        self._secrets = Secrets(url) if isinstance(url, str) else Secrets("")
        self.label = f"'{name}' ({self._url})"
        # Reads block for up to `block`: the socket timeout must leave room for it.
        self._client: redis.Redis = connect(
            url,
            socket_timeout=max(float(socket_timeout), block + 5.0),
            connect_timeout=float(connect_timeout),
            options=redis_options,
            label=f"RedisBackend {self.label}",
        )
        self._scripts = Scripts(self._client)
        self._reader = without_retries(self._client)  # the consumer threads' client
        self._event_cls: Any = _core.Event
        self._lock = threading.RLock()
        self._configs: dict[str, TopicConfig] = {}
        self._subs: list[RedisSubscription] = []
        self._atts: list[Attachment] = []
        self._taken: dict[tuple[str, str], Attachment] = {}  # (topic, cg) -> attachment
        self._live_workers: set[PartitionWorker] = set()
        self._counters = Counters()
        self._keeper = LeaseKeeper(self)
        self._manager = ListenerManager(name=f"{name}-listeners")
        self._once_manager = ListenerManager(name=f"{name}-listeners-once")
        self._closed = False
        me = weakref.ref(self)
        atexit.register(_shutdown_at_exit, me)

    # -- presentation ---------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The Redis URL with its credentials replaced by ``***``."""
        return self._url

    @property
    def closed(self) -> bool:
        return self._closed

    def scrub(self, text: str) -> str:
        """``text`` with any credential of the URL replaced by ``***``."""
        return self._secrets.scrub(text)

    def __repr__(self) -> str:
        return (
            f"RedisBackend(url={self._url!r}, group={self.group!r}, "
            f"consumer={self.consumer!r}, lease_ttl={self.lease_ttl:g})"
        )

    def _error(self, where: str, exc: BaseException, hint: str = "") -> Exception:
        if not hint and isinstance(exc, TRANSIENT):
            hint = "Redis is unreachable; nothing was lost on our side, try again when it is back"
        return backend_error(f"redis backend {self.label}: {where}", exc, self._secrets, hint)

    def _check_open(self, what: str) -> None:
        if self._closed:
            raise BusClosed(
                f"redis backend {self.label} is shut down; {what} is not possible "
                "(create a new Bus and backend)"
            )

    # -- topics ------------------------------------------------------------------------------

    def create_topic(self, name: str, cfg: TopicConfig | None = None) -> None:
        """Create ``name`` with ``cfg`` in Redis (every process may do it with the same config;
        another config raises ValidationError)."""
        self._create(name, cfg if cfg is not None else TopicConfig())

    def _create(self, name: str, cfg: TopicConfig) -> TopicConfig:
        if not isinstance(name, str) or not name:
            raise ValidationError(f"create_topic: name must be a non-empty str, got {name!r}")
        if not isinstance(cfg, TopicConfig):
            raise ValidationError(
                f"create_topic: config must be a nova.TopicConfig, got {type(cfg).__name__}"
            )
        self._check_open(f"creating topic '{name}'")
        text = _topics.encode(cfg)
        try:
            stored = self._scripts.create_topic(
                keys=[_keys.config(name), _keys.TOPICS, _keys.tombstone(name)],
                args=[text, name],
                client=self._client,
            )
        except redis.RedisError as exc:
            raise self._error(f"creating topic '{name}' failed", exc) from None
        if stored not in (b"", ""):
            stored_text = stored.decode() if isinstance(stored, bytes) else str(stored)
            if stored_text != text:
                raise ValidationError(
                    f"topic '{name}' already exists in Redis ({self._url}) with another config: "
                    f"{_topics.describe_difference(stored_text, text)}; use the same config in "
                    "every process, or delete the topic first"
                )
        with self._lock:
            self._configs[name] = cfg
            for att in self._atts:
                if att.topic == name and _topics.is_remote(att.config):
                    att.config = cfg
        return cfg

    def _load(self, name: str) -> TopicConfig | None:
        try:
            text = self._client.get(_keys.config(name))
        except redis.RedisError as exc:
            raise self._error(f"reading the config of topic '{name}' failed", exc) from None
        if text is None:
            return None
        return _topics.decode(name, text)

    def _ensure(self, name: str) -> TopicConfig:
        """The topic's config: cached, else from Redis, else created with ``TopicConfig()``
        (the Bus defaults do not reach the backend on publish)."""
        cfg = self._configs.get(name)
        if cfg is not None:
            return cfg
        if not isinstance(name, str) or not name:
            raise ValidationError(f"topic must be a non-empty str, got {name!r}")
        cfg = self._load(name)
        if cfg is None:
            return self._create(name, TopicConfig())
        with self._lock:
            cfg = self._configs.setdefault(name, cfg)
        return cfg

    def topic_config(self, name: str) -> TopicConfig | None:
        """The topic's config (None if absent). A callable ordering key registered by another
        process is a placeholder until this process creates the topic with its own."""
        cfg = self._configs.get(name)
        if cfg is not None:
            return cfg
        return self._load(name)

    def topics(self) -> list[str]:
        """Every topic in Redis, sorted."""
        try:
            names = self._client.smembers(_keys.TOPICS)
        except redis.RedisError as exc:
            raise self._error("listing topics failed", exc) from None
        return sorted(n.decode() if isinstance(n, bytes) else str(n) for n in names)

    def delete_topic(self, name: str) -> None:
        """Delete the topic's streams, config and leases (TopicNotFound if absent); its
        subscriptions end here at once and in other processes within a lease tick. The
        dead-letter stream ``nova:{topic}:dlq`` is kept."""
        cfg = self._load(name)
        if cfg is None:
            raise TopicNotFound(f"no topic '{name}' in Redis ({self._url}); topics: {self.topics()}")
        self._detach_topic(name)
        streams = [_keys.stream(name, p) for p in range(cfg.partitions)]
        try:
            pipe = self._client.pipeline(transaction=False)
            for s in streams:
                pipe.xinfo_groups(s)
            groups = pipe.execute(raise_on_error=False)
            leases: set[str] = set()
            for p, reply in enumerate(groups):
                if isinstance(reply, list):
                    for g in reply:
                        cg = g.get("name", b"")
                        cg = cg.decode() if isinstance(cg, bytes) else str(cg)
                        leases.add(_keys.lease(name, p, cg))
            pipe = self._client.pipeline(transaction=True)
            pipe.set(_keys.tombstone(name), b"1", ex=_TOMBSTONE_TTL)
            pipe.srem(_keys.TOPICS, name)
            pipe.delete(_keys.config(name), *streams, *sorted(leases))
            pipe.execute()
        except redis.RedisError as exc:
            raise self._error(f"deleting topic '{name}' failed", exc) from None
        with self._lock:
            self._configs.pop(name, None)

    def topic_info(self, name: str) -> TopicInfo:
        """TopicInfo(name, partitions, delivery_mode, subscribers, queued): ``subscribers``
        counts this process's active subscriptions of the topic; ``queued`` the entries not
        yet acknowledged (pending or not yet delivered) by the slowest of them, over all
        partitions."""
        cfg = self.topic_config(name)
        if cfg is None:
            raise TopicNotFound(f"no topic '{name}' in Redis ({self._url}); topics: {self.topics()}")
        with self._lock:
            cgs = {a.cg for a in self._atts if a.topic == name and not a.detached}
        queued = 0
        if cgs:
            try:
                backlog = self._backlog({name: cfg}, {name: cgs})
            except redis.RedisError as exc:
                raise self._error(f"reading topic '{name}' failed", exc) from None
            queued = sum(backlog.values())
        return TopicInfo(
            name=name,
            partitions=cfg.partitions,
            delivery_mode=cfg.delivery_mode,
            subscribers=len(cgs),
            queued=queued,
        )

    # -- publishing ----------------------------------------------------------------------

    def _partition(self, topic: str, cfg: TopicConfig, event: Any) -> int:
        # The local bus's own rule (src/bus/topic.rs), so every process agrees with it.
        return _core.event_partition(event, cfg.ordering_key, cfg.partitions, topic)

    def _dumps(self, topic: str, event: Any) -> bytes | str:
        if not isinstance(event, self._event_cls):
            raise ValidationError(f"publish to '{topic}': expected a nova.Event, got {type(event).__name__}")
        try:
            return self.serializer.dumps(event)
        except Exception as exc:
            raise ValidationError(
                f"publish to '{topic}': event {event.id} ({event.type}) cannot be serialized by "
                f"{type(self.serializer).__name__}: {type(exc).__name__}: {exc} (with the default JSON "
                "serializer, data must be JSON-serialisable)"
            ) from exc

    @staticmethod
    def _minid(cfg: TopicConfig) -> str:
        if cfg.retention is None:
            return ""
        return f"{max(0, int((time.time() - cfg.retention) * 1000))}-0"

    def publish(self, topic: str, event: Any) -> None:
        """``XADD`` the event to its partition's stream; BackendError when Redis is down (the
        event was then not published, or — if the reply was lost — possibly published)."""
        self._check_open(f"publishing to '{topic}'")
        cfg = self._ensure(topic)
        payload = self._dumps(topic, event)
        stream = _keys.stream(topic, self._partition(topic, cfg, event))
        minid = self._minid(cfg)
        try:
            if minid:
                self._client.xadd(stream, {"event": payload}, minid=minid, approximate=True)
            else:
                self._client.xadd(stream, {"event": payload})
        except redis.RedisError as exc:
            raise self._error(
                f"publishing event {event.id} ({event.type}) to '{topic}' failed", exc
            ) from None
        self._counters.add(published=1)

    def publish_batch(self, topic: str, events: Iterable[Any]) -> None:
        """Publish the events in order, all or nothing (one ``MULTI`` pipeline of server-side
        ``XADD`` loops); every event is validated and serialized before anything is sent."""
        self._check_open(f"publishing to '{topic}'")
        batch = list(events)
        if not batch:
            return
        cfg = self._ensure(topic)
        chunks: list[tuple[list[str], bytes]] = []
        for i in range(0, len(batch), _BATCH_CHUNK):
            index: dict[int, int] = {}
            parts: list[bytes] = []
            for e in batch[i : i + _BATCH_CHUNK]:
                payload = self._dumps(topic, e)
                data = payload.encode() if isinstance(payload, str) else bytes(payload)
                p = self._partition(topic, cfg, e)
                k = index.get(p)
                if k is None:
                    k = index[p] = len(index) + 1
                parts.append(b"%d:%d:" % (k, len(data)))
                parts.append(data)
            chunks.append(([_keys.stream(topic, p) for p in index], b"".join(parts)))
        minid = self._minid(cfg)
        try:
            pipe = self._client.pipeline(transaction=True)
            for streams, blob in chunks:
                self._scripts.xadd_many(keys=streams, args=[minid, blob], client=pipe)
            pipe.execute()
        except redis.RedisError as exc:
            raise self._error(
                f"publishing a batch of {len(batch)} events to '{topic}' failed "
                "(none of them was published, unless the reply was lost)",
                exc,
            ) from None
        self._counters.add(published=len(batch))

    # -- subscribing ---------------------------------------------------------------------

    def _as_listener(self, listener: Any, where: str) -> Any:
        if isinstance(listener, _core.Listener):
            return listener
        if not callable(listener):
            raise ValidationError(f"{where}: listener must be callable or a nova.Listener, got {listener!r}")
        return _core.Listener(listener_name(listener), listener)

    def _check_config(self, config: Any, where: str) -> ListenerConfig | None:
        if config is not None and not isinstance(config, ListenerConfig):
            raise ValidationError(f"{where}: config must be a nova.ListenerConfig or None, got {config!r}")
        return config

    def subscribe(self, topic: str, listener: Any, config: ListenerConfig | None = None) -> RedisSubscription:
        """Consume ``topic`` (created with ``TopicConfig()`` if absent) in this process's share
        of its partitions. The Redis consumer group is ``{group}:{listener name}``; the k-th
        subscription of one name to one topic in a process is ``{name}#k`` (k >= 2), so give
        each listener a stable name and subscribe in the same order in every process."""
        self._check_open(f"subscribing to '{topic}'")
        if not isinstance(topic, str) or not topic:
            raise ValidationError(f"subscribe: topic must be a non-empty str, got {topic!r}")
        lst = self._as_listener(listener, "subscribe")
        cfg_l = self._check_config(config, "subscribe")
        cfg = self._ensure(topic)
        sub = RedisSubscription(self, topic, lst, cfg_l, None)
        with self._lock:
            self._subs.append(sub)
        try:
            self._attach(sub, topic, cfg)
        except BaseException:
            sub.unsubscribe()
            raise
        self._keeper.start()
        return sub

    def subscribe_pattern(
        self, regex: str, listener: Any, config: ListenerConfig | None = None
    ) -> RedisSubscription:
        """Consume every topic, existing or created later (seen within a lease tick), whose
        whole name matches ``regex`` (the core's linear-time engine, as the in-process bus)."""
        self._check_open("subscribing")
        if not isinstance(regex, str):
            raise ValidationError(f"subscribe_pattern: regex must be a str, got {type(regex).__name__}")
        pattern = TopicPattern(regex)  # ValidationError with the position when invalid
        lst = self._as_listener(listener, "subscribe_pattern")
        cfg_l = self._check_config(config, "subscribe_pattern")
        sub = RedisSubscription(self, regex, lst, cfg_l, pattern)
        with self._lock:
            self._subs.append(sub)
        try:
            self._follow_registry(only=sub)
        except BaseException:
            sub.unsubscribe()
            raise
        self._keeper.start()
        return sub

    def _managed_for(self, sub: RedisSubscription, single: bool) -> Any:
        with self._lock:
            managed = sub._managed.get(single)
            if managed is not None:
                return managed
            manager = self._once_manager if single else self._manager
            config = sub.config
            if single:
                base = config if config is not None else ListenerConfig(timeout=None)
                config = dataclasses.replace(base, retry=RetryPolicy(max_attempts=1))
            elif config is None:
                config = ListenerConfig()
            name = sub.name
            k = 1
            while name in manager:
                k += 1
                name = f"{sub.name}#{k}"
            inner = _core.Listener(name, sub.listener.handler, on_error=sub.listener.on_error)
            managed = manager.register(inner, config)
            sub._managed[single] = managed
            return managed

    def _attach(self, sub: RedisSubscription, topic: str, cfg: TopicConfig) -> Attachment | None:
        with self._lock:
            if not sub._active or self._closed:
                return None
            if any(a.sub is sub and a.topic == topic for a in self._atts):
                return None
            subscriber = sub.name
            k = 1
            while (topic, _keys.consumer_group(self.group, subscriber)) in self._taken:
                k += 1
                subscriber = f"{sub.name}#{k}"
            cg = _keys.consumer_group(self.group, subscriber)
            managed = self._managed_for(sub, cfg.delivery_mode is DeliveryMode.AT_MOST_ONCE)
            att = Attachment(sub=sub, topic=topic, config=cfg, cg=cg, subscriber=subscriber, managed=managed)
            self._taken[(topic, cg)] = att
        try:
            self._create_groups(topic, cfg.partitions, cg)
        except BaseException:
            with self._lock:
                self._taken.pop((topic, cg), None)
            raise
        with self._lock:
            if not sub._active or self._closed:
                self._taken.pop((topic, cg), None)
                return None
            self._atts.append(att)
        self._keeper.wake()
        return att

    def _create_groups(self, topic: str, partitions: int, cg: str) -> None:
        start = "0" if self.start == "earliest" else "$"
        try:
            pipe = self._client.pipeline(transaction=False)
            for p in range(partitions):
                pipe.xgroup_create(_keys.stream(topic, p), cg, id=start, mkstream=True)
            results = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            raise self._error(f"creating consumer group '{cg}' on topic '{topic}' failed", exc) from None
        for r in results:
            if isinstance(r, Exception) and "BUSYGROUP" not in str(r):
                raise self._error(f"creating consumer group '{cg}' on topic '{topic}' failed", r)

    def _create_group(self, stream: str, cg: str) -> None:
        """Recreate one group (a worker met NOGROUP) unless the topic was deleted."""
        topic = stream.rsplit(":", 1)[0][len("nova:") :]
        if self._client.exists(_keys.tombstone(topic)):
            return
        start = "0" if self.start == "earliest" else "$"
        try:
            self._client.xgroup_create(stream, cg, id=start, mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def _unsubscribe(self, sub: RedisSubscription) -> None:
        with self._lock:
            if not sub._active:
                return
            sub._active = False
            atts = [a for a in self._atts if a.sub is sub]
            for a in atts:
                self._detach(a, UNSUBSCRIBE)
            if sub in self._subs:
                self._subs.remove(sub)
            managed = list(sub._managed.items())
            still = {a.cg for a in self._atts}
            gone = {a.cg for a in atts} - still
        if gone and not self._closed:
            # Leave those groups' member sets now, so the other processes' fair share grows
            # at once instead of after lease_ttl.
            try:
                pipe = self._client.pipeline(transaction=False)
                for cg in gone:
                    pipe.zrem(_keys.members(cg), self.consumer)
                pipe.execute()
            except redis.RedisError:
                pass
        for single, m in managed:
            manager = self._once_manager if single else self._manager
            try:
                manager.unregister(m.name)
            except ListenerNotFound:
                pass
        self._keeper.wake()

    def _detach(self, att: Attachment, reason: str) -> None:
        """Under the lock: stop consuming ``att`` (its workers end after the event in hand)."""
        att.detached = True
        if att in self._atts:
            self._atts.remove(att)
        if self._taken.get((att.topic, att.cg)) is att:
            del self._taken[(att.topic, att.cg)]
        for w in att.workers.values():
            w.stop(reason)

    def _detach_topic(self, name: str) -> None:
        with self._lock:
            for att in [a for a in self._atts if a.topic == name]:
                self._detach(att, DELETED)
                if att.sub.pattern is None:
                    att.sub._active = False
                    if att.sub in self._subs:
                        self._subs.remove(att.sub)
            self._configs.pop(name, None)

    def _follow_registry(self, only: RedisSubscription | None = None) -> None:
        """Attach pattern subscriptions to matching topics; end attachments of topics deleted
        elsewhere; re-register topics Redis lost (a restart without persistence)."""
        with self._lock:
            subs = [only] if only is not None else [s for s in self._subs if s._active]
            atts = list(self._atts) if only is None else []
        if not subs:
            return
        raw = self._client.smembers(_keys.TOPICS)
        names = {n.decode() if isinstance(n, bytes) else str(n) for n in raw}
        for att in atts:
            if att.topic in names:
                continue
            if self._client.exists(_keys.tombstone(att.topic)):
                _log.info(
                    "nova: redis backend %s: topic '%s' was deleted; its subscription ends",
                    self.label,
                    att.topic,
                )
                self._detach_topic(att.topic)
            else:
                cfg = self._configs.get(att.topic, att.config)
                try:
                    self._create(att.topic, cfg)
                except ValidationError:
                    pass
                self._create_groups(att.topic, cfg.partitions, att.cg)
        for sub in subs:
            if sub.pattern is None:
                continue
            for name in sorted(names):
                if not sub.pattern.fullmatch(name):
                    continue
                with self._lock:
                    if any(a.sub is sub and a.topic == name for a in self._atts):
                        continue
                found = self._configs.get(name) or self._load(name)
                if found is not None:
                    self._attach(sub, name, found)

    # -- bookkeeping used by the keeper and the workers ------------------------------------

    def _attachments_snapshot(self, include_detached: bool = False) -> list[Attachment]:
        with self._lock:
            atts = list(self._atts)
            if include_detached:
                atts.extend(a for a in self._taken.values() if a not in atts)
        return atts

    def _workers_snapshot(self) -> list[PartitionWorker]:
        with self._lock:
            return list(self._live_workers)

    def _add_worker(self, att: Attachment, worker: PartitionWorker) -> bool:
        with self._lock:
            if att.detached or self._closed or worker.partition in att.workers:
                return False
            att.workers[worker.partition] = worker
            self._live_workers.add(worker)
            return True

    def _worker_done(self, worker: PartitionWorker) -> None:
        with self._lock:
            if worker.att.workers.get(worker.partition) is worker:
                del worker.att.workers[worker.partition]
            self._live_workers.discard(worker)
        self._keeper.wake()

    # -- flush, stats, shutdown ----------------------------------------------------------

    def _backlog(self, cfgs: dict[str, TopicConfig], cgs: dict[str, set[str]]) -> dict[tuple[str, int], int]:
        """Per (topic, partition): entries of the slowest of ``cgs[topic]`` not yet
        acknowledged (pending + not delivered)."""
        keys = [(t, p) for t, cfg in cfgs.items() for p in range(cfg.partitions)]
        pipe = self._client.pipeline(transaction=False)
        for t, p in keys:
            pipe.xinfo_groups(_keys.stream(t, p))
        replies = pipe.execute(raise_on_error=False)
        out: dict[tuple[str, int], int] = {}
        unknown: list[tuple[str, int, Any]] = []
        for (t, p), reply in zip(keys, replies, strict=True):
            worst = 0
            if isinstance(reply, list):
                for g in reply:
                    name = g.get("name", b"")
                    name = name.decode() if isinstance(name, bytes) else str(name)
                    if name not in cgs.get(t, ()):
                        continue
                    lag = g.get("lag")
                    pending = int(g.get("pending", 0))
                    if lag is None:
                        unknown.append((t, p, g.get("last-delivered-id")))
                        lag = 0
                    worst = max(worst, pending + int(lag))
            out[(t, p)] = worst
        for t, p, delivered in unknown:
            # Lag unknown (entries were trimmed or deleted): compare with the last entry.
            last = self._client.xrevrange(_keys.stream(t, p), count=1)
            if last and _id_tuple(last[0][0]) > _id_tuple(delivered):
                out[(t, p)] = max(out[(t, p)], 1)
        return out

    def flush(self, timeout: float | None = None) -> bool:
        """Wait until every partition of the topics this process subscribes to has nothing
        pending or undelivered for those subscribers (whichever process holds it), and this
        process has nothing in hand; False on timeout."""
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        delay = 0.005
        while True:
            try:
                if self._drained():
                    return True
            except TRANSIENT:
                pass
            except redis.RedisError as exc:
                raise self._error("flush failed", exc) from None
            if deadline is not None and time.monotonic() >= deadline:
                return False
            wait = delay if deadline is None else min(delay, max(0.0, deadline - time.monotonic()))
            time.sleep(wait)
            delay = min(delay * 2, 0.05)

    def _drained(self) -> bool:
        with self._lock:
            atts = [a for a in self._atts if not a.detached]
            workers = list(self._live_workers)
        if any(not w.idle for w in workers):
            return False
        if not atts:
            return True
        # AT_MOST_ONCE entries leave no pending trace: a read in progress during the check
        # below may be receiving some, so wait for it to end before trusting `idle`.
        reads = {w: w.reads_started for w in workers if w.att.mode is DeliveryMode.AT_MOST_ONCE}
        cfgs = {a.topic: a.config for a in atts}
        cgs: dict[str, set[str]] = {}
        for a in atts:
            cgs.setdefault(a.topic, set()).add(a.cg)
        backlog = self._backlog(cfgs, cgs)
        if any(backlog.values()):
            return False
        deadline = time.monotonic() + 2 * self.block_ms / 1000 + 1.0
        for w, started in reads.items():
            while w.alive and w.reads_done < started and time.monotonic() < deadline:
                time.sleep(0.002)
        return all(w.idle for w in workers)

    def stats(self) -> BusStats:
        """Counters of this process: events published here, events processed here (success
        or final failure), failures, entries fetched here and not yet processed, drops
        (AT_MOST_ONCE failures), topics in Redis, active subscriptions here."""
        c = self._counters
        with self._lock:
            workers = list(self._live_workers)
            subs = sum(1 for s in self._subs if s._active)
            local_topics = len(self._configs)
        try:
            topics = int(self._client.scard(_keys.TOPICS))
        except redis.RedisError:
            topics = local_topics
        with c.lock:
            return BusStats(
                events_published=c.published,
                events_processed=c.processed,
                failed_events=c.failed,
                queued_events=sum(w.queued for w in workers),
                dropped_events=c.dropped,
                active_topics=topics,
                active_subscribers=subs,
            )

    def shutdown(self, timeout: float | None = 30.0) -> ShutdownReport:
        """Stop consuming: each worker finishes the event in hand (until ``timeout``); events
        fetched and not processed stay pending in Redis (not acknowledged: the next lease
        holder takes them) and are listed in ``undelivered``; leases are released so other
        processes take over at once. A second call returns an empty report."""
        with self._lock:
            if self._closed:
                return ShutdownReport()
            self._closed = True
            workers = list(self._live_workers)
            subs = list(self._subs)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        before = self._counters.processed
        self._keeper.drain()
        for w in workers:
            w.stop(SHUTDOWN)
        for w in workers:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            w.done.wait(left)
        in_flight = sum(1 for w in workers if w.alive and w.busy)
        undelivered: list[Any] = []
        seen: set[str] = set()
        for w in workers:
            events = (
                w.left
                if not w.alive
                else [
                    ev
                    for _i, ev, _r in list(w.fetched)
                    if ev is not None and not isinstance(ev, BaseException)
                ]
            )
            if w.alive and w.busy and events:
                events = events[1:]  # the one in hand is in flight, not undelivered
            for ev in events:
                if isinstance(ev, BaseException) or ev.id in seen:
                    continue
                seen.add(ev.id)
                undelivered.append(ev)
        self._keeper.stop()
        for s in subs:
            s._active = False
        with self._lock:
            self._atts.clear()
        self._manager.stop(0)
        self._once_manager.stop(0)
        if not any(w.alive for w in workers):
            for client in (self._client, self._reader):
                try:
                    client.close()
                except Exception:  # noqa: BLE001
                    pass
        drained = self._counters.processed - before
        return ShutdownReport(drained=drained, undelivered=undelivered, in_flight=in_flight)

    def close(self, timeout: float | None = 30.0) -> ShutdownReport:
        """Same as :meth:`shutdown`."""
        return self.shutdown(timeout)


def _id_tuple(value: Any) -> tuple[int, int]:
    if value is None:
        return (0, 0)
    text = value.decode() if isinstance(value, bytes) else str(value)
    ms, _sep, seq = text.partition("-")
    try:
        return (int(ms), int(seq or 0))
    except ValueError:
        return (0, 0)


def _shutdown_at_exit(ref: weakref.ReferenceType[RedisBackend]) -> None:
    backend = ref()
    if backend is not None and not backend._closed:
        try:
            backend.shutdown(timeout=5.0)
        except Exception:  # noqa: BLE001 - the interpreter is exiting
            pass
