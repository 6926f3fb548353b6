"""Events as JSON text, for :class:`~nova.store.SqliteStore`: the names of :mod:`nova._codec`,
the one codec of events, that the store uses. A row's text is what ``encode`` gives (NaN and
the infinities refused, data at most :data:`MAX_DEPTH` levels deep), read back by ``decode``.
"""

from __future__ import annotations

from .._codec import (
    MAX_DEPTH,
    EncodeError,
    NestingError,
    decode,
    encode,
    isoformat,
    nesting,
    on_fresh_stack,
    stored_id,
    text_depth,
)

__all__ = [
    "encode",
    "decode",
    "EncodeError",
    "NestingError",
    "MAX_DEPTH",
    "nesting",
    "on_fresh_stack",
    "stored_id",
    "text_depth",
    "isoformat",
]
