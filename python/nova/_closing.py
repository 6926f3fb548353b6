"""``with component:`` for Nova's components that close: one definition of the context-manager
protocol instead of a copy in every class that has a ``close()`` (or ``shutdown()``...)."""

from __future__ import annotations

from types import TracebackType
from typing import Protocol, Self, cast

__all__ = ["ClosesOnExit"]


class _Closable(Protocol):
    def close(self) -> object: ...


class ClosesOnExit:
    """Context-manager use: ``with obj as same:`` gives ``obj`` back and, however the block
    ends, calls ``obj.close()`` with its defaults; exceptions from the block propagate.

    A class whose closing method has another name (``shutdown``, ``unsubscribe``) overrides
    :meth:`_close_on_exit` instead of having a ``close()`` it would not otherwise need.
    """

    __slots__ = ()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._close_on_exit()

    def _close_on_exit(self) -> object:
        # The subclasses that keep this default all define close(); the mixin cannot say so
        # to mypy without declaring a close() of its own on the others.
        return cast(_Closable, self).close()
