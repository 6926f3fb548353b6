"""The Rust listener tables behind nova.compat (typed in _table.pyi)."""

from nova._core import OnceCall, PyeeTable, SignalTable

__all__ = ["OnceCall", "PyeeTable", "SignalTable"]
