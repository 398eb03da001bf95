"""ARC, the Authenticated Received Chain (RFC 8617): validate a message's chain, and seal it.

* :func:`validate_arc` returns an :class:`ArcOutcome`: ``none``/``pass``/``fail``, why, the oldest
  AMS that still verifies, and what each set says (for reports).
* :func:`sign_arc` returns the next set's three fields for a message whose chain is known;
  :func:`seal_arc` validates first; :func:`add_arc_set` prepends a set.
* :func:`arc_result` is the ``arc=`` clause for Authentication-Results.
"""

from __future__ import annotations

from mailtoaster.auth.arc.headers import ArcHeaderError
from mailtoaster.auth.arc.report import arc_result
from mailtoaster.auth.arc.result import ArcOptions, ArcOutcome, ArcResult, ArcSetDetails
from mailtoaster.auth.arc.seal import ArcSigningError, add_arc_set, seal_arc, sign_arc
from mailtoaster.auth.arc.validate import validate_arc

__all__ = [
    "ArcHeaderError",
    "ArcOptions",
    "ArcOutcome",
    "ArcResult",
    "ArcSetDetails",
    "ArcSigningError",
    "add_arc_set",
    "arc_result",
    "seal_arc",
    "sign_arc",
    "validate_arc",
]
