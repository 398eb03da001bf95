"""What a client's rule means: the qmail-era variables as a :class:`ClientPolicy`, and the decisions they
drive (SPF behaviour levels, DKVERIFY letters, DKSIGN keys).

Variables implemented (any others are kept in ``env`` and listed in ``ignored``):

==========================  =================================================================
``RELAYCLIENT``             set (any value): the client may relay (qmail-smtpd)
``DKSIGN``                  sign its outgoing mail with this key; ``%`` is the From domain (qmail-dk)
``DKVERIFY``                refuse mail whose DomainKeys/DKIM status letter is listed (qmail-dk)
``SPFBEHAVIOR``             qmail-spf's level 0-6 (else the server's default)
``CHKUSER_RCPTLIMIT``       recipients per message (chkuser); 0 = no limit
``CHKUSER_WRONGRCPTLIMIT``  unknown recipients before the session is refused (chkuser); 0 = no limit
``BADMIMETYPE``             set: refuse forbidden attachment types (SPAMCONTROL); ``-`` = off
``BADLOADERTYPE``           letters of executable formats to refuse (SPAMCONTROL); ``-`` = off
==========================  =================================================================
"""

from __future__ import annotations

import enum
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Literal

from mailtoaster.auth.dkim import DkimResult, DkimVerdict
from mailtoaster.auth.dkim.verify import KEY_REVOKED
from mailtoaster.auth.domainkeys import DkStatus
from mailtoaster.keys import key_path, validate_domain, validate_selector
from mailtoaster.policy.content import LOADER_TYPES
from mailtoaster.policy.tcprules import IPAddress, Rule, RulesError, RuleSet

# ------------------------------------------------------------------------------------------ decisions

Action = Literal["accept", "tempfail", "reject"]

_UNSAFE_REPLY_TEXT = re.compile(r"[^\x20-\x7e]+")
MAX_REPLY_TEXT = 300
"""Reply text is capped so a hostile SPF explanation cannot make a reply line longer than 512 octets."""


@dataclass(frozen=True)
class Decision:
    """What to answer: ``accept``, ``tempfail`` (4xx) or ``reject`` (5xx), with the reply to send."""

    action: Action
    code: int
    enhanced: str
    """RFC 3463 enhanced status code, e.g. ``5.7.23`` (RFC 7372's SPF code)."""
    text: str

    @property
    def reply(self) -> str:
        """The SMTP reply line without CRLF: ``550 5.7.23 SPF fail: ...``."""
        return f"{self.code} {self.enhanced} {self.text}".rstrip()


ACCEPT = Decision("accept", 250, "2.0.0", "ok")


def _refusal(action: Action, enhanced_detail: str, text: str) -> Decision:
    """A 550/451 decision; the text is made safe for an SMTP reply (printable ASCII, capped)."""
    code, klass = (550, "5") if action == "reject" else (451, "4")
    safe = _UNSAFE_REPLY_TEXT.sub(" ", text).strip()[:MAX_REPLY_TEXT]
    return Decision(action, code, f"{klass}.{enhanced_detail}", safe)


# ------------------------------------------------------------------------------------------------ SPF


class SpfBehavior(enum.IntEnum):
    """qmail-spf's ``SPFBEHAVIOR`` (``control/spfbehavior``): which results refuse the mail.

    Levels are cumulative. ``none`` and ``permerror`` (qmail-spf's ``unknown``) refuse only at level
    6; ``temperror`` (qmail-spf's ``error``) gets a 451 from level 2 up; ``pass`` is always accepted.
    qmail-spf does not check relay clients at all (see :attr:`ClientPolicy.checks_spf`).
    """

    OFF = 0
    """No SPF check at all, no Received-SPF field."""
    HEADERS_ONLY = 1
    """Check and record the result (Received-SPF), never refuse. qmail-spf's default."""
    DEFER_TEMPERROR = 2
    """Also answer 451 when DNS trouble stops the check (temperror)."""
    REJECT_FAIL = 3
    REJECT_SOFTFAIL = 4
    REJECT_NEUTRAL = 5
    REJECT_NOT_PASS = 6
    """Refuse everything but ``pass``: also ``none`` and ``permerror``."""


SPF_RESULTS = ("pass", "fail", "softfail", "neutral", "none", "temperror", "permerror")
_SPF_ALIASES = {"unknown": "permerror", "error": "temperror"}
"""qmail-spf's and RFC 4408's older names."""
_SPF_REJECTED_FROM = {
    "fail": SpfBehavior.REJECT_FAIL,
    "softfail": SpfBehavior.REJECT_SOFTFAIL,
    "neutral": SpfBehavior.REJECT_NEUTRAL,
    "none": SpfBehavior.REJECT_NOT_PASS,
    "permerror": SpfBehavior.REJECT_NOT_PASS,
}
_SPF_TEXT = {
    "fail": "SPF fail: the sending host is not authorized to send mail for this domain",
    "softfail": "SPF softfail: the sending host is probably not authorized to send mail for this domain",
    "neutral": "SPF neutral: the domain does not say whether the sending host may send its mail",
    "none": "SPF none: the sender's domain publishes no SPF record",
    "permerror": "SPF permerror: the sender's domain has an invalid SPF record",
    "temperror": "SPF temperror: DNS lookup failed, please try again later",
}


def spf_decision(level: SpfBehavior | int, result: str, explanation: str = "") -> Decision:
    """The decision qmail-spf makes for an RFC 7208 result at a given level.

    Refusals are ``550 5.7.23`` ("SPF validation failed", RFC 7372 §3.2), ``550 5.7.24`` for
    ``permerror`` and ``451 4.7.24`` for ``temperror`` ("SPF validation error"). The domain's
    explanation (``exp=``), if any, is added to the text, made safe for a reply line. A result that is
    not an SPF keyword is a ValueError.
    """
    behavior = SpfBehavior(level)
    keyword = _spf_keyword(result)
    text = _SPF_TEXT.get(keyword, "")
    if explanation.strip():
        text = f"{text}: {explanation.strip()}"
    if keyword == "temperror":
        if behavior >= SpfBehavior.DEFER_TEMPERROR:
            return _refusal("tempfail", "7.24", text)
        return ACCEPT
    threshold = _SPF_REJECTED_FROM.get(keyword)
    if threshold is None or behavior < threshold:
        return ACCEPT
    return _refusal("reject", "7.24" if keyword == "permerror" else "7.23", text)


def _spf_keyword(result: str) -> str:
    keyword = result.strip().lower()
    keyword = _SPF_ALIASES.get(keyword, keyword)
    if keyword not in SPF_RESULTS:
        raise ValueError(f"not an SPF result: {result[:30]!r} (one of {', '.join(SPF_RESULTS)})")
    return keyword


# ------------------------------------------------------------------------------------------- DKVERIFY

DKVERIFY_LETTERS = frozenset("ABCDEFGHIJKabcdefghijk")


def dkverify_decision(letters: str | None, status: DkStatus) -> Decision:
    """qmail-dk's ``DKVERIFY``: the status's letter in upper case refuses the mail (5xx), in lower case
    defers it (4xx); absent, or no DKVERIFY at all, accepts. When both cases are listed the upper case
    wins, as qmail-dk tests it first.

    The enhanced code is RFC 7372's X.7.20 ("No passing DKIM signature found"), or X.7.21 ("No
    acceptable DKIM signature found") when a verified signature (status ``OK``) is refused.
    """
    if not letters:
        return ACCEPT
    detail = "7.21" if status is DkStatus.OK else "7.20"
    if status.letter in letters:
        return _refusal("reject", detail, f"DomainKeys/DKIM: {status.meaning}")
    if status.letter.lower() in letters:
        return _refusal("tempfail", detail, f"DomainKeys/DKIM: {status.meaning}; please try again later")
    return ACCEPT


def check_dkverify(letters: str) -> str:
    """``letters`` if every one is a DKVERIFY letter (A-K refuse, a-k defer), else a ValueError."""
    wrong = sorted(set(letters) - DKVERIFY_LETTERS)
    if wrong:
        raise ValueError(
            f'DKVERIFY="{letters[:30]}": {"".join(wrong)[:10]!r} not a status letter (A-K refuse, a-k defer)'
        )
    return letters


# The order in which DKIM verdicts' statuses are reported when no signature passed. A temporary
# failure comes first: the message may still verify on a retry, so reporting a permanent failure would
# be premature (DMARC's rule for DKIM temperror, RFC 7489 §6.6.2, is the same). Then the verdicts that
# got furthest: a signature checked against its key and found wrong, then key problems, then syntax.
_DKIM_STATUS_ORDER = (
    DkStatus.CANTVRFY,
    DkStatus.BADSIG,
    DkStatus.REVOKED,
    DkStatus.BADKEY,
    DkStatus.NOKEY,
    DkStatus.SYNTAX,
    DkStatus.NORESOURCE,
)


def dkim_status(verdicts: Sequence[DkimVerdict]) -> DkStatus:
    """The DomainKeys status that stands for a message's DKIM verdicts, so DKVERIFY applies to DKIM.

    No signature: ``NOSIG``; any signature that passed: ``OK``; otherwise the first in this order of
    the statuses the verdicts map to (:func:`verdict_status`): CANTVRFY, BADSIG, REVOKED, BADKEY,
    NOKEY, SYNTAX, NORESOURCE. A signature with an algorithm we do not implement is ignored, as RFC
    6376 §6.1.1 asks ("the Verifier MUST ignore the signature"): alone it leaves the message ``NOSIG``.
    """
    statuses = {verdict_status(verdict) for verdict in verdicts}
    if DkStatus.OK in statuses:
        return DkStatus.OK
    return next((status for status in _DKIM_STATUS_ORDER if status in statuses), DkStatus.NOSIG)


def verdict_status(verdict: DkimVerdict) -> DkStatus:
    """One DKIM verdict as a DomainKeys status (``NOSIG`` for a signature to be ignored)."""
    result, reason = verdict.result, verdict.reason
    if result is DkimResult.PASS:
        return DkStatus.OK
    if result is DkimResult.TEMPERROR:
        return DkStatus.CANTVRFY
    if result is DkimResult.POLICY:  # verified, but rsa-sha1 or an l= that leaves content unsigned
        return DkStatus.BADSIG
    if result is DkimResult.FAIL:
        return _failed_status(reason)
    if result is DkimResult.PERMERROR:
        return DkStatus.NOKEY if reason.startswith("no key record") else DkStatus.BADKEY
    if result is DkimResult.NEUTRAL:
        return DkStatus.NORESOURCE if reason.startswith("not evaluated") else DkStatus.SYNTAX
    return DkStatus.NOSIG


def _failed_status(reason: str) -> DkStatus:
    """``fail``: a bad signature, except for the key problems and algorithms verify.py reports so."""
    if reason == KEY_REVOKED:
        return DkStatus.REVOKED
    if reason.startswith("key too small"):
        return DkStatus.BADKEY
    if reason.startswith("unsupported algorithm"):
        return DkStatus.NOSIG
    return DkStatus.BADSIG


# --------------------------------------------------------------------------------------------- DKSIGN


def dksign_key(dksign: str, from_domain: str, keys_dir: Path) -> tuple[str, Path] | None:
    """The (selector, key file) qmail-dk's ``DKSIGN`` names for mail from ``from_domain``, or None
    when the message is not to be signed.

    ``%`` is replaced by the From domain and the file's base name is the selector. A path of qmail's
    form ``.../domainkeys/<domain>/<selector>`` is looked up in our key store as
    ``<keys_dir>/<domain>/<selector>`` first, then at the path itself; any other path is used as it
    is. None when the file does not exist (qmail-dk's "no key, no signature"), when the From domain
    is not a plain domain name (it comes from the message, so it must never shape a path), or when a
    qmail-form path names another domain's key (a signature with ``d=`` the From domain could not
    verify with it).
    """
    try:
        domain = validate_domain(from_domain)
    except ValueError:
        return None
    path = PurePosixPath(dksign.replace("%", domain))
    if len(path.parts) >= 3 and path.parts[-3] == "domainkeys":
        if path.parts[-2].lower() != domain:
            return None
        stored = _stored_key(keys_dir, domain, path.name)
        if stored is not None:
            return stored.name, stored
    candidate = Path(path)
    if candidate.is_absolute() and candidate.is_file() and _is_selector(candidate.name):
        return candidate.name, candidate
    return None


def _stored_key(keys_dir: Path, domain: str, selector: str) -> Path | None:
    try:
        stored = key_path(keys_dir, domain, selector)
    except ValueError:
        return None
    return stored if stored.is_file() else None


def _is_selector(name: str) -> bool:
    try:
        validate_selector(name)
    except ValueError:
        return False
    return True


def check_dksign(dksign: str) -> str:
    """``dksign`` if it can name a key file, else a ValueError (checked when the rules load)."""
    path = PurePosixPath(dksign)
    qmail_form = len(path.parts) >= 3 and path.parts[-3] == "domainkeys"
    if not dksign or dksign.endswith("/"):
        raise ValueError(f'DKSIGN="{dksign[:60]}" names no key file')
    if not (path.is_absolute() or qmail_form):
        raise ValueError(
            f'DKSIGN="{dksign[:60]}": an absolute path, or one ending in domainkeys/%/<selector>'
        )
    if "%" not in path.name and not _is_selector(path.name):
        raise ValueError(f'DKSIGN="{dksign[:60]}": the file name {path.name[:30]!r} is not a DKIM selector')
    return dksign


# ------------------------------------------------------------------------------------- client policy


@dataclass(frozen=True)
class ClientPolicy:
    """What a client's rule allows and asks for; the default (no rule) allows and asks nothing."""

    allowed: bool = True
    relay: bool = False
    """``RELAYCLIENT`` is set. qmail-smtpd also appended a non-empty value to every recipient; that
    is not done (the variable is then listed in :attr:`ignored`)."""
    dksign: str | None = None
    dkverify: str | None = None
    rcpt_limit: int | None = None
    wrong_rcpt_limit: int | None = None
    bad_mime_types: bool = False
    bad_loader_types: str = ""
    """``BADLOADERTYPE`` letters (:data:`mailtoaster.policy.content.LOADER_TYPES`); empty: off."""
    spf_behavior: SpfBehavior = SpfBehavior.HEADERS_ONLY
    ignored: tuple[str, ...] = ()
    """Variables set by the rule that the server does not implement (QMAILQUEUE, DKQUEUE, ...)."""
    env: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}), hash=False)
    """Every variable the rule sets."""
    rule: Rule | None = None
    """The rule that matched (its ``line`` is worth logging); None: no rule matched."""

    @property
    def checks_spf(self) -> bool:
        """Whether SPF is evaluated for this client: qmail-spf skips relay clients and level 0."""
        return self.spf_behavior is not SpfBehavior.OFF and not self.relay


_IMPLEMENTED = frozenset(
    {
        "RELAYCLIENT",
        "DKSIGN",
        "DKVERIFY",
        "SPFBEHAVIOR",
        "CHKUSER_RCPTLIMIT",
        "CHKUSER_WRONGRCPTLIMIT",
        "BADMIMETYPE",
        "BADLOADERTYPE",
    }
)


def client_policy(rule: Rule | None, *, default_spf: SpfBehavior = SpfBehavior.HEADERS_ONLY) -> ClientPolicy:
    """The policy of the rule that matched a client (None: no rule, tcpserver's allow-all).

    An invalid value (a limit that is not a number, an unknown DKVERIFY letter, ...) is a
    :class:`RulesError` naming the rules file and line; :class:`PolicyTable` raises it at load time.
    """
    if rule is None:
        return ClientPolicy(spf_behavior=default_spf)
    env = rule.env
    try:
        return ClientPolicy(
            allowed=rule.allow,
            relay="RELAYCLIENT" in env,
            dksign=_optional(env, "DKSIGN", check_dksign),
            dkverify=_optional(env, "DKVERIFY", check_dkverify),
            rcpt_limit=_limit(env, "CHKUSER_RCPTLIMIT"),
            wrong_rcpt_limit=_limit(env, "CHKUSER_WRONGRCPTLIMIT"),
            bad_mime_types=env.get("BADMIMETYPE", "-") != "-",
            bad_loader_types=_loader_types(env.get("BADLOADERTYPE", "")),
            spf_behavior=_spf_behavior(env.get("SPFBEHAVIOR"), default_spf),
            ignored=_ignored(env),
            env=env,
            rule=rule,
        )
    except ValueError as error:
        raise RulesError(f"{rule.source} line {rule.line}: {error}") from None


def _optional(env: Mapping[str, str], name: str, check: Callable[[str], str]) -> str | None:
    value = env.get(name)
    return None if value is None else check(value)


def _limit(env: Mapping[str, str], name: str) -> int | None:
    value = env.get(name)
    if value is None:
        return None
    if not re.fullmatch(r"[0-9]{1,9}", value, re.ASCII):
        raise ValueError(f'{name}="{value[:30]}" is not a whole number (0 means no limit)')
    return int(value) or None


def _loader_types(value: str) -> str:
    if value == "-":  # SPAMCONTROL's "off"
        return ""
    unknown = sorted(set(value) - set(LOADER_TYPES))
    if unknown:
        known = ", ".join(f"{letter} ({description})" for letter, (description, _) in LOADER_TYPES.items())
        raise ValueError(f'BADLOADERTYPE="{value[:20]}": unknown letter {unknown[0]!r}; known: {known}')
    return "".join(dict.fromkeys(value))


def _spf_behavior(value: str | None, default: SpfBehavior) -> SpfBehavior:
    if value is None:
        return default
    if not re.fullmatch(r"[0-6]", value):
        raise ValueError(f'SPFBEHAVIOR="{value[:20]}" is not a level from 0 to 6')
    return SpfBehavior(int(value))


def _ignored(env: Mapping[str, str]) -> tuple[str, ...]:
    ignored = [name for name in env if name not in _IMPLEMENTED]
    if env.get("RELAYCLIENT"):
        ignored.insert(0, "RELAYCLIENT")  # its value, the recipient suffix, is not applied
    return tuple(ignored)


class PolicyTable:
    """A rule set with every rule's policy built (and so checked) once, at load time."""

    def __init__(self, rules: RuleSet, *, default_spf: SpfBehavior = SpfBehavior.HEADERS_ONLY) -> None:
        self.rules = rules
        self.default_spf = default_spf
        self._default = client_policy(None, default_spf=default_spf)
        self._policies = {id(rule): client_policy(rule, default_spf=default_spf) for rule in rules.rules}

    def policy_for(
        self, ip: str | IPAddress, hostname: str | None = None, *, info: str | None = None
    ) -> ClientPolicy:
        """The policy for a client; see :meth:`RuleSet.match` for the arguments."""
        rule = self.rules.match(ip, hostname, info=info)
        return self._default if rule is None else self._policies[id(rule)]
