"""Shared fixtures of the whole suite.

pytest runs in its default "prepend" import mode and tests/ has no ``__init__.py``: this file's
folder (tests/) is put on ``sys.path``, so test modules import helpers as ``support.<module>``.

The fixtures of Nova's own pytest plugin (``emitter``, ``bus``, ``store``, ``recorder``,
``manual_clock``; python/nova/testing/plugin.py) are available everywhere too: no test module
defines a fixture with one of those names.
"""

from __future__ import annotations

from support.redis_server import _redis_module_server, redis_server, redis_url

__all__ = ["_redis_module_server", "redis_server", "redis_url"]
