"""Client policy: tcpserver's rules file (``tcp.smtp``) and the qmail-era variables it sets.

:func:`load_rules` / :func:`parse_rules` read the classic tcprules source format and
:meth:`RuleSet.match` finds a client's rule as tcpserver does; :func:`client_policy` (or a
:class:`PolicyTable`, which checks every rule at load time) turns it into a :class:`ClientPolicy`.
The decisions are plain functions: :func:`spf_decision` (SPFBEHAVIOR), :func:`dkverify_decision`
with :func:`dkim_status` (DKVERIFY), :func:`dksign_key` (DKSIGN), :func:`find_forbidden_attachment`
(BADMIMETYPE, BADLOADERTYPE). See ``docs/policy.md``.
"""

from mailtoaster.policy.client import (
    ACCEPT,
    DKVERIFY_LETTERS,
    SPF_RESULTS,
    ClientPolicy,
    Decision,
    PolicyTable,
    SpfBehavior,
    check_dksign,
    check_dkverify,
    client_policy,
    dkim_status,
    dksign_key,
    dkverify_decision,
    spf_decision,
    verdict_status,
)
from mailtoaster.policy.content import (
    DEFAULT_BAD_MIME_TYPES,
    LOADER_TYPES,
    find_forbidden_attachment,
    is_mime_type,
    parse_bad_mime_types,
)
from mailtoaster.policy.tcprules import (
    Rule,
    RulesError,
    RuleSet,
    client_address,
    load_rules,
    lookup_keys,
    parse_rules,
)

__all__ = [
    "ACCEPT",
    "DEFAULT_BAD_MIME_TYPES",
    "DKVERIFY_LETTERS",
    "LOADER_TYPES",
    "SPF_RESULTS",
    "ClientPolicy",
    "Decision",
    "PolicyTable",
    "Rule",
    "RuleSet",
    "RulesError",
    "SpfBehavior",
    "check_dksign",
    "check_dkverify",
    "client_address",
    "client_policy",
    "dkim_status",
    "dksign_key",
    "dkverify_decision",
    "find_forbidden_attachment",
    "is_mime_type",
    "load_rules",
    "lookup_keys",
    "parse_bad_mime_types",
    "parse_rules",
    "spf_decision",
    "verdict_status",
]
