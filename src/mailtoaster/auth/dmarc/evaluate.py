"""check_dmarc(): the Mail Receiver actions of RFC 9989 §5.3 (and RFC 7489 §6.6), as plain data.

One check, for one Author Domain:

1. *Policy discovery.* RFC 9989 §4.10.1: the record at ``_dmarc.<Author Domain>``; failing that, a
   DNS Tree Walk finds the Organizational Domain and the record there, or that of the Public Suffix
   Domain (``psd=y``). RFC 7489 §6.6.3: the Author Domain, then its Organizational Domain by the
   Public Suffix List. No record: ``none``. A temporary DNS failure: ``temperror``. Records that
   cannot be used: ``permerror`` (see :func:`~mailtoaster.auth.dmarc.record.usable_policies`).
2. *Identifier alignment* (RFC 9989 §4.4, §4.10.2; RFC 7489 §3.1) of the SPF-authenticated
   MAIL FROM domain and of every passing DKIM ``d=``: strict means equal, relaxed means the same
   Organizational Domain. One aligned identifier gives ``pass``, none ``fail``; when alignment
   cannot be decided because a Tree Walk query failed temporarily (and nothing else aligned), the
   result is ``temperror``.
3. *The policy that applies* to a ``fail``: ``p`` when the record is the Author Domain's own,
   otherwise ``sp``, or ``np`` when the Author Domain does not exist (NXDOMAIN, RFC 9989 §3.2.13),
   which costs one more query, made only when the record has an ``np`` tag. Then the disposition:
   that policy, one level lower under RFC 9989 ``t=y``, or for RFC 7489 mail outside the ``pct``
   sample.

The disposition is what the record asks for; whether to honour it (RFC 9989 §5.4 says not to reject
on ``p=reject`` alone) is the caller's decision. Nothing here raises or does I/O except through the
resolver.
"""

from __future__ import annotations

import dataclasses
import enum
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Literal

import authres.dmarc

from mailtoaster.auth.author import AuthorError, Authors, find_authors
from mailtoaster.auth.dkim.result import DkimResult, DkimVerdict
from mailtoaster.auth.dmarc.discovery import (
    PolicyFinder,
    PolicyLookup,
    TreeWalk,
    psl_organizational_domain,
    tree_walk,
)
from mailtoaster.auth.dmarc.record import (
    AlignmentMode,
    DmarcMode,
    DmarcRecord,
    Policy,
    PolicySet,
    usable_policies,
)
from mailtoaster.auth.results import comment_text
from mailtoaster.auth.spf import SpfOutcome, SpfResult
from mailtoaster.dns import DnsStatus, Resolver, RRType
from mailtoaster.message import Message

__all__ = ["DmarcOptions", "DmarcOutcome", "DmarcResult", "check_dmarc", "dmarc_result"]


class DmarcResult(enum.StrEnum):
    """The ``dmarc`` result names of RFC 9989 §9.2 (RFC 8601 registry)."""

    PASS = "pass"
    FAIL = "fail"
    NONE = "none"
    TEMPERROR = "temperror"
    PERMERROR = "permerror"


@dataclass(frozen=True)
class DmarcOptions:
    mode: DmarcMode = "dmarcbis"
    """``dmarcbis`` (RFC 9989, the default) or ``rfc7489``."""
    random: Callable[[], float] = field(default=random.random)
    """A number in [0, 1) per call: the RFC 7489 ``pct`` sample draw (inject one for determinism)."""
    multiple_authors: Literal["strictest", "permerror"] = "strictest"
    """From fields naming several domains: ``strictest`` evaluates each domain and applies the
    strictest policy among those that fail (RFC 7489 §6.6.1, RFC 9989 §11.5); ``permerror`` does not
    evaluate them (RFC 9989 §5.3.1: "DMARC validation is not possible")."""
    max_author_domains: int = 5
    """More author domains than this is a ``permerror`` (RFC 9989 §11.5: "Limiting the number of
    Author Domains processed will avoid this risk")."""
    invalid_from_disposition: Policy = Policy.NONE
    """The disposition given with the ``permerror`` of a message whose From field(s) yield no Author
    Domain DMARC can use (RFC 9989 §11.5 asks receivers to treat such messages with care)."""
    organizational_domain: Callable[[str], str] = psl_organizational_domain
    """RFC 7489 mode only: a domain's Organizational Domain (the packaged Public Suffix List)."""


@dataclass(frozen=True)
class DmarcOutcome:
    """Everything that explains one DMARC verdict; fields that did not matter stay at their default."""

    result: DmarcResult
    reason: str
    mode: DmarcMode = "dmarcbis"
    author_domain: str = ""
    """The RFC5322.From domain the result is about (``header.from``)."""
    policy_domain: str | None = None
    """Where the record applied was found (the Author, Organizational or Public Suffix Domain)."""
    organizational_domain: str | None = None
    """The Author Domain's Organizational Domain, when it was needed (RFC 9989 §4.10.2 skips it when
    every identifier equals the Author Domain or alignment is strict)."""
    record: DmarcRecord | None = None
    policies: PolicySet | None = None
    """``p``/``sp``/``np`` after the rules for missing or invalid values."""
    policy_tag: str = ""
    """Which tag gave ``requested_policy``: ``p``, ``sp`` or ``np``."""
    requested_policy: Policy | None = None
    """The Domain Owner Assessment Policy for this Author Domain."""
    disposition: Policy = Policy.NONE
    """What the record asks to be done with this message: ``none`` unless it failed."""
    spf_domain: str | None = None
    """The SPF-authenticated identifier: the MAIL FROM domain (HELO domain for ``<>``) if SPF passed."""
    spf_aligned: bool | None = None
    """None when it could not be decided (a temporary DNS error in a Tree Walk)."""
    dkim_domains: tuple[str, ...] = ()
    """The DKIM-authenticated identifiers: ``d=`` of every passing signature."""
    dkim_aligned: bool | None = None
    dkim_signature: DkimVerdict | None = None
    """The passing signature that aligned (an exact ``d=`` match preferred)."""
    sampled: bool | None = None
    """RFC 7489 ``pct``: whether this failing message fell in the sample (None: not applicable)."""
    testing: bool = False
    """RFC 9989 ``t=y`` lowered the disposition of this failing message."""
    author_domain_exists: bool | None = None
    """Checked only to choose ``np``; None when not checked."""
    lookups: tuple[PolicyLookup, ...] = ()
    """Every ``_dmarc`` TXT query made, in order."""
    notes: tuple[str, ...] = ()
    """Record syntax problems and rules that replaced what the record said."""
    per_domain: tuple[DmarcOutcome, ...] = ()
    """With several author domains: each one's outcome (the fields above repeat the deciding one)."""

    @property
    def record_text(self) -> str | None:
        return self.record.text if self.record is not None else None


async def check_dmarc(
    message: Message,
    spf: SpfOutcome | None,
    dkim: Sequence[DkimVerdict],
    resolver: Resolver,
    options: DmarcOptions | None = None,
) -> DmarcOutcome:
    """DMARC for ``message``, given the SPF check of its MAIL FROM (or None) and its DKIM verdicts.

    ``spf`` must be the MAIL FROM check (``check_spf``): for the null reverse-path its identity is
    ``helo`` and its domain the HELO name, which RFC 9989 §3.2.4 counts as the MAIL FROM identity;
    a separate RFC 7208 §2.3 HELO check must not be passed here.
    """
    options = options or DmarcOptions()
    authors = find_authors(message)
    session = _Session(resolver, options)
    if authors.domain is not None:
        return await _Check(session, authors.domain, spf, dkim).run()
    return await _several_or_none(session, authors, spf, dkim)


async def _several_or_none(
    session: _Session, authors: Authors, spf: SpfOutcome | None, dkim: Sequence[DkimVerdict]
) -> DmarcOutcome:
    """Messages without exactly one Author Domain (RFC 9989 §5.3.1, §11.5; RFC 7489 §6.6.1)."""
    options = session.options
    domains = authors.domains
    several = authors.error in (None, AuthorError.MULTIPLE_FROM_FIELDS) and domains
    if not several:
        return _invalid_from(options, f"no Author Domain: {authors.reason}")
    if options.multiple_authors == "permerror":
        return _invalid_from(options, f"{_authors_note(authors)}: DMARC validation is not possible")
    if len(domains) > options.max_author_domains:
        limit = options.max_author_domains
        return _invalid_from(options, f"{_authors_note(authors)}: more than {limit} are not evaluated")
    outcomes = [await _Check(session, domain, spf, dkim).run() for domain in domains]
    return _strictest(outcomes, _authors_note(authors))


def _authors_note(authors: Authors) -> str:
    return authors.reason or f"{len(authors.domains)} author domains in the From field"


def _invalid_from(options: DmarcOptions, reason: str) -> DmarcOutcome:
    return DmarcOutcome(
        DmarcResult.PERMERROR, reason, options.mode, disposition=options.invalid_from_disposition
    )


def _strictest(outcomes: list[DmarcOutcome], note: str) -> DmarcOutcome:
    """RFC 7489 §6.6.1: "apply the most strict policy selected among the checks that fail"; else the
    first temperror, permerror, pass or none, in that order."""
    failed = [o for o in outcomes if o.result is DmarcResult.FAIL]
    if failed:
        chosen = max(failed, key=lambda o: o.disposition.severity)
    else:
        order = (DmarcResult.TEMPERROR, DmarcResult.PERMERROR, DmarcResult.PASS, DmarcResult.NONE)
        chosen = min(outcomes, key=lambda o: order.index(o.result))
    reason = f"{chosen.reason} [{chosen.author_domain} decides: {note}; each evaluated on its own]"
    return dataclasses.replace(chosen, reason=reason, per_domain=tuple(outcomes))


class _Session:
    """What the checks of one message share: the DNS answers and the Tree Walks already done."""

    def __init__(self, resolver: Resolver, options: DmarcOptions) -> None:
        self.resolver = resolver
        self.options = options
        self.finder = PolicyFinder(resolver)
        self._walks: dict[str, TreeWalk] = {}

    async def walk(self, start: str) -> TreeWalk:
        if start not in self._walks:
            self._walks[start] = await tree_walk(self.finder, start)
        return self._walks[start]

    async def organizational_domain(self, domain: str) -> str | None:
        """The domain's Organizational Domain for the mode, or None if DNS failed temporarily."""
        if self.options.mode == "rfc7489":
            return self.options.organizational_domain(domain)
        walk = await self.walk(domain)
        return None if walk.error else walk.organizational_domain


@dataclass(frozen=True)
class _Discovered:
    domain: str
    record: DmarcRecord
    organizational_domain: str | None


class _Stop(Exception):
    """Ends a check early with its outcome (no record, a DNS error, an unusable record)."""

    def __init__(self, result: DmarcResult, reason: str) -> None:
        super().__init__(reason)
        self.result = result
        self.reason = reason


class _Check:
    """One Author Domain's evaluation."""

    def __init__(
        self, session: _Session, author: str, spf: SpfOutcome | None, dkim: Sequence[DkimVerdict]
    ) -> None:
        self.session = session
        self.mode = session.options.mode
        self.author = author
        self.spf = spf
        self.dkim = dkim
        self.base = DmarcOutcome(DmarcResult.NONE, "", self.mode, author)

    async def run(self) -> DmarcOutcome:
        try:
            return await self._evaluate()
        except _Stop as stop:
            return self._finish(self.base, stop.result, stop.reason)

    def _finish(self, outcome: DmarcOutcome, result: DmarcResult, reason: str) -> DmarcOutcome:
        lookups = self.session.finder.lookups
        return dataclasses.replace(outcome, result=result, reason=reason, lookups=lookups)

    async def _evaluate(self) -> DmarcOutcome:
        found = await (self._discover_7489() if self.mode == "rfc7489" else self._discover_dmarcbis())
        policies = usable_policies(found.record, self.mode)
        notes = found.record.problems + ((policies.note,) if policies and policies.note else ())
        self.base = dataclasses.replace(
            self.base,
            policy_domain=found.domain,
            organizational_domain=found.organizational_domain,
            record=found.record,
            policies=policies,
            notes=notes,
        )
        if policies is None:
            reason = f"the DMARC record at _dmarc.{found.domain} has no usable policy and no valid rua="
            raise _Stop(DmarcResult.PERMERROR, f"{reason}: no DMARC processing (RFC 9989 §4.10.1)")
        aligned = await self._align(found.record)
        return await self._apply(aligned, found, policies)

    # --- 1. policy discovery ---------------------------------------------------------------------

    async def _discover_dmarcbis(self) -> _Discovered:
        """RFC 9989 §4.10.1: the Author Domain's record, else the Organizational Domain's, else the
        Public Suffix Domain's."""
        own = await self._lookup(self.author)
        if own.record is not None:
            return _Discovered(self.author, own.record, None)
        walk = await self.session.walk(self.author)
        if walk.error:
            raise _Stop(DmarcResult.TEMPERROR, walk.error)
        org = walk.organizational_domain
        if org != self.author:
            org_lookup = walk.lookup_for(org) or await self._lookup(org)
            if org_lookup.record is not None:
                return _Discovered(org, org_lookup.record, org)
        psd = walk.public_suffix
        if psd is not None and psd.record is not None and psd.domain != self.author:
            return _Discovered(psd.domain, psd.record, org)
        raise self._no_record(walk.lookups)

    async def _discover_7489(self) -> _Discovered:
        """RFC 7489 §6.6.3: the Author Domain's record, else the Organizational Domain's (PSL); several
        records at a name end discovery."""
        org = self.session.options.organizational_domain(self.author)
        for domain in dict.fromkeys((self.author, org)):
            lookup = await self._lookup(domain)
            if lookup.discarded:
                raise _Stop(DmarcResult.PERMERROR, f"{lookup.describe()} (RFC 7489 §6.6.3 step 5)")
            if lookup.record is not None:
                return _Discovered(domain, lookup.record, org)
        raise self._no_record(self.session.finder.lookups)

    async def _lookup(self, domain: str) -> PolicyLookup:
        lookup = await self.session.finder.lookup(domain)
        if lookup.temporary_error:
            raise _Stop(DmarcResult.TEMPERROR, lookup.describe())
        return lookup

    def _no_record(self, lookups: Sequence[PolicyLookup]) -> _Stop:
        discarded = [lookup for lookup in lookups if lookup.discarded]
        if discarded:
            return _Stop(DmarcResult.PERMERROR, f"no usable DMARC record: {discarded[0].describe()}")
        names = ", ".join(f"_dmarc.{lookup.domain}" for lookup in lookups)
        return _Stop(DmarcResult.NONE, f"no DMARC record for {self.author} (looked up {names})")

    # --- 2. identifier alignment -----------------------------------------------------------------

    async def _align(self, record: DmarcRecord) -> _Alignment:
        dkim_domains = tuple(dict.fromkeys(d for d in (_dkim_identifier(v) for v in self.dkim) if d))
        signature, dkim_aligned = await self._dkim_alignment(record.adkim)
        spf_domain = _spf_identifier(self.spf)
        spf_aligned = await self._aligned(spf_domain, record.aspf) if spf_domain else False
        return _Alignment(spf_domain, spf_aligned, dkim_domains, dkim_aligned, signature)

    async def _dkim_alignment(self, mode: AlignmentMode) -> tuple[DkimVerdict | None, bool | None]:
        """RFC 9989 §4.4.1: "it is considered to produce a DMARC "pass" result if any
        DKIM-Authenticated Identifier aligns with the Author Domain"."""
        passing = [v for v in self.dkim if _dkim_identifier(v)]
        exact = next((v for v in passing if _dkim_identifier(v) == self.author), None)
        if exact is not None:
            return exact, True
        undecided = False
        for verdict in passing:
            aligned = await self._aligned(_dkim_identifier(verdict), mode)
            if aligned:
                return verdict, True
            undecided = undecided or aligned is None
        return None, None if undecided else False

    async def _aligned(self, identifier: str, mode: AlignmentMode) -> bool | None:
        """Strict: the same name. Relaxed: the same Organizational Domain (None: DNS failed)."""
        if identifier == self.author:
            return True
        if mode is AlignmentMode.STRICT:
            return False
        author_org = await self.session.organizational_domain(self.author)
        if author_org is None:
            return None
        self.base = dataclasses.replace(self.base, organizational_domain=author_org)
        if identifier != author_org and not identifier.endswith("." + author_org):
            return False  # an Organizational Domain is the name itself or one of its parents
        identifier_org = await self.session.organizational_domain(identifier)
        return None if identifier_org is None else identifier_org == author_org

    # --- 3. result, policy and disposition -------------------------------------------------------

    async def _apply(self, aligned: _Alignment, found: _Discovered, policies: PolicySet) -> DmarcOutcome:
        outcome = dataclasses.replace(
            self.base,
            spf_domain=aligned.spf_domain,
            spf_aligned=aligned.spf_aligned,
            dkim_domains=aligned.dkim_domains,
            dkim_aligned=aligned.dkim_aligned,
            dkim_signature=aligned.signature,
        )
        tag, requested = _subdomain_policy(policies) if found.domain != self.author else ("p", policies.p)
        outcome = dataclasses.replace(outcome, policy_tag=tag, requested_policy=requested)
        if aligned.spf_aligned or aligned.dkim_aligned:
            return self._finish(outcome, DmarcResult.PASS, aligned.describe(self.author))
        if aligned.spf_aligned is None or aligned.dkim_aligned is None:
            reason = f"alignment undecided: {self._walk_errors()}"
            return self._finish(outcome, DmarcResult.TEMPERROR, reason)
        return await self._fail(outcome, found, policies)

    async def _fail(self, outcome: DmarcOutcome, found: _Discovered, policies: PolicySet) -> DmarcOutcome:
        """A failing message: ``np`` if the Author Domain does not exist, then the disposition."""
        if found.domain != self.author and policies.np is not None:
            exists = await self._author_exists()
            if exists is None:
                reason = f"DNS error checking whether {self.author} exists (for np=)"
                return self._finish(outcome, DmarcResult.TEMPERROR, reason)
            outcome = dataclasses.replace(outcome, author_domain_exists=exists)
            if not exists:
                np = policies.for_nonexistent_subdomain()
                outcome = dataclasses.replace(outcome, policy_tag="np", requested_policy=np)
        failed = self._disposition(outcome, found.record)
        return self._finish(failed, DmarcResult.FAIL, failed.reason)

    async def _author_exists(self) -> bool | None:
        """RFC 9989 §3.2.13 and Appendix A.4: a name exists unless a query for it gets NXDOMAIN (any
        type will do; MX as for ADSP). None when the query failed temporarily."""
        answer = await self.session.resolver.lookup(self.author, RRType.MX)
        if answer.status.is_temporary_error:
            return None
        return answer.status is not DnsStatus.NXDOMAIN

    def _disposition(self, outcome: DmarcOutcome, record: DmarcRecord) -> DmarcOutcome:
        """The requested policy, lowered one level for RFC 9989 ``t=y`` or outside the RFC 7489 sample."""
        requested = outcome.requested_policy or Policy.NONE
        reason = f"no aligned identifier ({_identifiers(outcome)}); {outcome.policy_tag}={requested}"
        if requested is Policy.NONE:
            return dataclasses.replace(outcome, disposition=requested, reason=reason)
        if self.mode == "rfc7489":
            sampled = self._in_sample(record.pct)
            disposition = requested if sampled else requested.lowered()
            if record.pct < 100:
                reason += f", pct={record.pct}: {'in' if sampled else 'outside'} the sample"
            return dataclasses.replace(outcome, disposition=disposition, sampled=sampled, reason=reason)
        if record.testing:
            reason += ", t=y: one level lower"
            return dataclasses.replace(outcome, disposition=requested.lowered(), testing=True, reason=reason)
        return dataclasses.replace(outcome, disposition=requested, reason=reason)

    def _in_sample(self, pct: int) -> bool:
        """RFC 7489 §6.6.4: enact the policy on no more than ``pct`` percent of failing mail."""
        return pct >= 100 or (pct > 0 and self.session.options.random() * 100 < pct)

    def _walk_errors(self) -> str:
        failed = [lookup for lookup in self.session.finder.lookups if lookup.temporary_error]
        return "; ".join(lookup.describe() for lookup in failed) or "temporary DNS error"


@dataclass(frozen=True)
class _Alignment:
    spf_domain: str | None
    spf_aligned: bool | None
    dkim_domains: tuple[str, ...]
    dkim_aligned: bool | None
    signature: DkimVerdict | None

    def describe(self, author: str) -> str:
        parts = []
        if self.signature is not None:
            parts.append(f"DKIM d={self.signature.domain} aligned with {author}")
        if self.spf_aligned:
            parts.append(f"SPF {self.spf_domain} aligned with {author}")
        return "; ".join(parts)


def _subdomain_policy(policies: PolicySet) -> tuple[str, Policy]:
    return ("sp", policies.sp) if policies.sp is not None else ("p", policies.p)


def _identifiers(outcome: DmarcOutcome) -> str:
    spf = f"SPF {outcome.spf_domain}" if outcome.spf_domain else "no SPF pass"
    dkim = f"DKIM {', '.join(outcome.dkim_domains)}" if outcome.dkim_domains else "no DKIM pass"
    return f"{spf}, {dkim}"


def _normalise(domain: str) -> str:
    return domain.strip().rstrip(".").lower()


def _spf_identifier(spf: SpfOutcome | None) -> str | None:
    """RFC 9989 §3.2.4: the SPF-validated MAIL FROM identity (the HELO name for ``<>``, RFC 7208 §2.4)."""
    if spf is None or spf.result is not SpfResult.PASS or spf.identity not in ("mailfrom", "helo"):
        return None
    return _normalise(spf.domain) or None


def _dkim_identifier(verdict: DkimVerdict) -> str:
    """The DKIM Signing Domain of a passing signature (RFC 9989 §3.2.3), or "" for any other verdict."""
    return _normalise(verdict.domain) if verdict.result is DkimResult.PASS else ""


# --- Authentication-Results ------------------------------------------------------------------------


def dmarc_result(outcome: DmarcOutcome) -> authres.dmarc.DMARCAuthenticationResult:
    """``dmarc=<result> (<why>) header.from=<domain> policy.dmarc=<disposition>`` (RFC 9989 §9.1).

    ``policy.dmarc`` is "the evaluated DMARC policy applied/to be applied after policy options have
    been processed", so it is the disposition, given whenever a record was evaluated; the comment
    shows the published policies and, for the other results, the reason.
    """
    policies = outcome.policies if outcome.result in (DmarcResult.PASS, DmarcResult.FAIL) else None
    return authres.dmarc.DMARCAuthenticationResult(
        result=outcome.result.value,
        result_comment=comment_text(
            outcome.reason if policies is None else _summary(policies, outcome.disposition)
        ),
        header_from=outcome.author_domain or None,
        policy=None if policies is None else outcome.disposition.value,
    )


def _summary(policies: PolicySet, disposition: Policy) -> str:
    """The published policies and the disposition, as receivers commonly show them."""
    parts = [f"p={policies.p}", f"sp={policies.for_subdomain()}"]
    if policies.np is not None:
        parts.append(f"np={policies.np}")
    parts.append(f"dis={disposition}")
    return " ".join(parts)
