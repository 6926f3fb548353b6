"""Drop-in replacements for pure-Python event libraries, dispatching through Nova's Rust core.

- :mod:`nova.compat.pyee` behaves like pyee 13 (``EventEmitter``, ``AsyncIOEventEmitter``,
  ``ExecutorEventEmitter``, ``PyeeError``).
- :mod:`nova.compat.blinker` behaves like blinker 1.9 (``Signal``, ``NamedSignal``,
  ``Namespace``, ``signal``, ``ANY``, ``default_namespace``).

Switching is one import line; see docs/migration.md for the few documented differences.
"""

__all__ = ["blinker", "pyee"]
