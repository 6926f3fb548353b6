"""Time helpers of the stores: argument checks for time ranges and the microsecond clock
that :class:`~nova.store.SqliteStore` keeps timestamps in.

Naive datetimes mean UTC. A range is ``[start, end)``: start inclusive, end exclusive; ``None``
leaves that side open.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from ..errors import ValidationError

UTC = timezone.utc
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)

# Bounds of a 64-bit SQLite integer, used for an open side of a range.
MIN_MICROS = -(2**63)
MAX_MICROS = 2**63 - 1


def aware(value: Any, field: str) -> datetime | None:
    """``value`` as a timezone-aware datetime (naive means UTC), or ``None`` for ``None``."""
    if value is None:
        return None
    if not isinstance(value, datetime):
        raise ValidationError(f"{field} must be a datetime or None, got {type(value).__name__}")
    if value.tzinfo is None or value.tzinfo.utcoffset(value) is None:
        return value.replace(tzinfo=UTC)
    return value


def time_range(start: Any, end: Any) -> tuple[datetime | None, datetime | None]:
    """Check a ``[start, end)`` pair of datetimes; either side may be ``None`` (open)."""
    return aware(start, "start"), aware(end, "end")


def to_micros(value: datetime) -> int:
    """Microseconds since the Unix epoch of an aware datetime (exact)."""
    return (value - EPOCH) // ONE_MICROSECOND


def from_micros(micros: int) -> datetime:
    """The aware UTC datetime ``micros`` microseconds after the Unix epoch."""
    return EPOCH + timedelta(microseconds=micros)


def in_range(ts: datetime, start: datetime | None, end: datetime | None) -> bool:
    """Whether ``start <= ts < end`` (open sides always match)."""
    return (start is None or ts >= start) and (end is None or ts < end)


def utc(value: datetime | None) -> datetime | None:
    """The same instant in UTC (``None`` stays ``None``)."""
    return None if value is None else value.astimezone(UTC)
