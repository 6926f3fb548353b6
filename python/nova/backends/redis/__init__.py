"""``nova.backends.redis``: the Bus across processes and hosts on Redis Streams (see
docs/api.md, Distributed bus). Needs redis-py (``pip install 'nova-events[redis]'``).

    from nova import Bus
    from nova.backends.redis import RedisBackend

    bus = Bus(backend=RedisBackend("redis://localhost:6379/0", group="billing"))

Modules: :mod:`._backend` (RedisBackend, RedisSubscription), :mod:`._conn` (URL handling and
redaction, connecting), :mod:`._leases` (partition leases), :mod:`._consumer` (the consumer
loop), :mod:`._serializer`, :mod:`._dlq` (dead-letter entries), :mod:`._topics` (topic configs
in Redis), :mod:`._keys` (key names), :mod:`._scripts` (Lua). See docs/distributed.md.
"""

from __future__ import annotations

from ._backend import RedisBackend, RedisSubscription
from ._conn import redact_url
from ._serializer import JsonSerializer, Serializer

__all__ = ["RedisBackend", "RedisSubscription", "Serializer", "JsonSerializer", "redact_url"]
