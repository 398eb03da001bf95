"""DMARC (RFC 9989, with RFC 7489 compatibility): policy records, policy discovery, alignment and
the disposition a failing message gets.

``check_dmarc`` is what a receiving server calls once SPF and DKIM have run; ``dmarc_result`` turns
its outcome into the Authentication-Results clause.
"""

from __future__ import annotations

from mailtoaster.auth.dmarc.discovery import (
    MAX_TREE_WALK_QUERIES,
    PolicyFinder,
    PolicyLookup,
    TreeWalk,
    psl_organizational_domain,
    tree_walk,
    tree_walk_targets,
)
from mailtoaster.auth.dmarc.evaluate import DmarcOptions, DmarcOutcome, DmarcResult, check_dmarc, dmarc_result
from mailtoaster.auth.dmarc.record import (
    AlignmentMode,
    DmarcMode,
    DmarcRecord,
    Policy,
    PolicySet,
    PsdFlag,
    is_dmarc_record,
    parse_dmarc_record,
    usable_policies,
)

__all__ = [
    "MAX_TREE_WALK_QUERIES",
    "AlignmentMode",
    "DmarcMode",
    "DmarcOptions",
    "DmarcOutcome",
    "DmarcRecord",
    "DmarcResult",
    "Policy",
    "PolicyFinder",
    "PolicyLookup",
    "PolicySet",
    "PsdFlag",
    "TreeWalk",
    "check_dmarc",
    "dmarc_result",
    "is_dmarc_record",
    "parse_dmarc_record",
    "psl_organizational_domain",
    "tree_walk",
    "tree_walk_targets",
    "usable_policies",
]
