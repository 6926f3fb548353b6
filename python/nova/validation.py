"""Ready-made event validators for ``Emitter(validator=...)`` and ``Bus(validator=...)``."""

from __future__ import annotations

import re

from ._core import Event
from .errors import ValidationError

__all__ = ["strict_type_names"]

# Two or more dot-separated segments of lower-case letters, digits and "_", each starting
# with a letter: inventory.stock.depleted, order.created.v2.
_DOMAIN_ACTION = re.compile(r"[a-z][a-z0-9_]*(\.[a-z][a-z0-9_]*)+")


def strict_type_names(event: Event) -> None:
    """Reject event types that are not ``domain.action`` names."""
    if _DOMAIN_ACTION.fullmatch(event.type) is None:
        raise ValidationError(
            f"event type {event.type!r} is not a domain.action name: use two or more "
            "dot-separated lower-case segments such as 'order.created' or 'inventory.stock.depleted'"
        )
