"""ARC, the Authenticated Received Chain (RFC 8617): validate a message's chain, and seal it."""

from __future__ import annotations

from mailtoaster.auth.arc.headers import ArcHeaderError
from mailtoaster.auth.arc.result import ArcOptions, ArcOutcome, ArcResult, ArcSetDetails
from mailtoaster.auth.arc.validate import validate_arc

__all__ = [
    "ArcHeaderError",
    "ArcOptions",
    "ArcOutcome",
    "ArcResult",
    "ArcSetDetails",
    "validate_arc",
]
