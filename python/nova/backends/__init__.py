"""Distributed backends for :class:`nova.Bus` (see docs/api.md, Distributed bus).

``Bus(backend=...)`` hands every topic call (create, publish, subscribe, flush, stats,
shutdown) to a backend object, so the in-process API spans processes and hosts. The interface is
:class:`BusBackend`; the in-process bus is itself one implementation of it. The one
backend shipped is :class:`nova.backends.redis.RedisBackend` (Redis Streams, extra
``nova-events[redis]``). Importing this package imports no optional dependency.
"""

from __future__ import annotations

from ._protocol import BusBackend

__all__ = ["BusBackend"]
