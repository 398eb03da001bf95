"""SPF (RFC 7208): one record, valid, within the lookup limits, not too permissive, and authorising
the mail server's own addresses.

Every problem found comes with a repaired record: the published one with the fault taken out (a
``ptr`` term, ``+all``, a term that points nowhere) and the server's unlisted addresses put in, so
what is suggested is the smallest change, not a record built from scratch. With no usable record the
suggestion is the one ``dns records`` computes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Sequence

from mailtoaster.auth.spf import LookupCount, SpfOutcome, SpfRecord, SpfResult, check_host, count_lookups
from mailtoaster.auth.spf.evaluate import MAX_DNS_MECHANISMS, MAX_VOID_LOOKUPS
from mailtoaster.auth.spf.record import Mechanism, Qualifier, SpfSyntaxError, is_spf1_record, parse_record
from mailtoaster.dns import IPAddress, RRType
from mailtoaster.doctor.context import CheckContext, dns_failure
from mailtoaster.doctor.findings import Finding, Suggestion, error, ok, printable, suggest_txt, warning
from mailtoaster.records import spf_text

PURPOSE = "SPF: hosts allowed to send (RFC 7208)"
_SPF_LIKE = ("v=spf", "spf1")
"""How TXT records that were meant to be SPF but are not ``v=spf1 `` records start (``v=spf1;``,
``v=spf1:``, ``spf1 ...``); Sender ID's ``spf2.0/`` is a record of its own and is not one of them."""


async def check_spf(ctx: CheckContext) -> list[Finding]:
    answer = await ctx.resolver.lookup(ctx.domain, RRType.TXT)
    if answer.status.is_temporary_error:
        return [dns_failure("spf", answer, "the SPF record")]
    texts = [text.decode("latin-1") for text in answer.texts()]
    records = [text for text in texts if is_spf1_record(text)]
    if not records:
        return [_missing(ctx, texts)]
    parsed: list[SpfRecord] = []
    for text in records:
        try:
            parsed.append(parse_record(text))
        except SpfSyntaxError as exc:
            return [_syntax_error(ctx, text, exc, len(records))]
    if len(parsed) > 1:
        return await _several_findings(ctx, parsed)
    return await _check_record(ctx, parsed[0])


async def _several_findings(ctx: CheckContext, parsed: list[SpfRecord]) -> list[Finding]:
    """Several records: the merged record to publish, and each ``--ip`` as receivers see it now
    (permerror, RFC 7208 §4.5), so the address check is never silently skipped."""
    several = _several(ctx, parsed)
    outcomes = await asyncio.gather(*(_authorise(ctx, ip) for ip in ctx.ips))
    return [several, *_ip_findings(ctx, outcomes, list(several.suggestions))]


def _missing(ctx: CheckContext, texts: list[str]) -> Finding:
    near_misses = [text for text in texts if text.lower().lstrip().startswith(_SPF_LIKE)]
    why = (
        f"; the TXT record '{printable(near_misses[0])}' looks like SPF but does not start with "
        "'v=spf1 ', so receivers ignore it"
        if near_misses
        else ""
    )
    return error(
        "spf.record",
        f"{ctx.domain} has no SPF record{why}: receivers cannot tell its mail from forgeries",
        [_planned(ctx)],
    )


def _syntax_error(ctx: CheckContext, text: str, exc: SpfSyntaxError, count: int) -> Finding:
    several = f" (and {count} SPF records: only one is allowed)" if count > 1 else ""
    return error(
        "spf.syntax",
        f"SPF record '{printable(text)}' is invalid: {exc}{several}; receivers return permerror "
        "(RFC 7208 §4.6)",
        [_planned(ctx)],
    )


def _several(ctx: CheckContext, parsed: list[SpfRecord]) -> Finding:
    shown = "; ".join(f"'{printable(record.text, 80)}'" for record in parsed)
    in_order = sorted(parsed, key=lambda record: record.text)  # DNS returns them in any order
    everything = SpfRecord("", tuple(d for record in in_order for d in record.directives))
    merged = _repaired(ctx, in_order, add=_unlisted(ctx.ips, everything))
    return error(
        "spf.record",
        f"{ctx.domain} has {len(parsed)} SPF records ({shown}): receivers return permerror "
        "(RFC 7208 §4.5); publish one record holding all of them",
        [_suggest(ctx, merged)],
        hint="delete the other v=spf1 records",
    )


async def _check_record(ctx: CheckContext, record: SpfRecord) -> list[Finding]:
    count, outcomes = await asyncio.gather(
        count_lookups(ctx.resolver, ctx.domain),
        asyncio.gather(*(_authorise(ctx, ip) for ip in ctx.ips)),
    )
    fixes = _fixes(ctx, record, _fixed_record(ctx, record, count, outcomes))
    findings = [ok("spf.record", f"SPF record: {printable(record.text)}")]
    findings.extend(_lookup_findings(ctx, count, fixes))
    findings.extend(_void_findings(count, fixes))
    findings.extend(_all_findings(ctx, record, count, fixes))
    findings.extend(_ptr_findings(record, fixes))
    findings.extend(_ip_findings(ctx, outcomes, fixes))
    return findings


async def _authorise(ctx: CheckContext, ip: IPAddress) -> SpfOutcome:
    """check_host() for the server address with a ``postmaster@<domain>`` sender, as receivers run it."""
    return await check_host(ctx.resolver, ip, ctx.domain, f"postmaster@{ctx.domain}", ctx.plan.mail_host)


def _fixed_record(
    ctx: CheckContext, record: SpfRecord, count: LookupCount, outcomes: Sequence[SpfOutcome]
) -> str:
    """The one record every SPF finding suggests, so the fixes never contradict each other: the
    published record without ``ptr``, without its own terms that point nowhere, and (over the lookup
    limit) without the terms that cost lookups; with every server address it does not authorise."""
    ptr_terms = {d.text for d in record.directives if d.mechanism is Mechanism.PTR}
    prefix = f"{ctx.domain}: "
    drop = {term.removeprefix(prefix) for term in count.void_terms if term.startswith(prefix)}
    missing = [
        outcome.ip
        for outcome in outcomes
        if outcome.result is not SpfResult.PASS or outcome.mechanism in ptr_terms
    ]
    if count.dns_terms <= MAX_DNS_MECHANISMS:
        return _repaired(ctx, [record], add=missing, drop=drop)
    kept = {Mechanism.ALL, Mechanism.IP4, Mechanism.IP6} | (set() if ctx.ips else {Mechanism.A, Mechanism.MX})
    drop |= {d.text for d in record.directives if d.mechanism not in kept}
    without_redirect = SpfRecord(record.text, record.directives, explanation=record.explanation)
    return _repaired(ctx, [without_redirect], add=_unlisted(ctx.ips, record), drop=drop)


def _fixes(ctx: CheckContext, record: SpfRecord, fixed: str) -> list[Suggestion]:
    return [_suggest(ctx, fixed)] if fixed != record.text else []


def _lookup_findings(ctx: CheckContext, count: LookupCount, fixes: list[Suggestion]) -> list[Finding]:
    findings = [
        error("spf.include", f"SPF record tree of {ctx.domain}: {problem}; receivers that reach it fail")
        for problem in count.problems
    ]
    macros = f" ({len(count.unexpanded)} with macros counted, not followed)" if count.unexpanded else ""
    counted = f"{count.dns_terms} DNS-querying terms after expanding includes{macros}"
    if count.dns_terms <= MAX_DNS_MECHANISMS:
        return [*findings, ok("spf.lookups", f"{counted} (at most {MAX_DNS_MECHANISMS})")]
    findings.append(
        error(
            "spf.lookups",
            f"{counted}: RFC 7208 §4.6.4 allows {MAX_DNS_MECHANISMS}, so receivers return permerror for "
            "senders matched late or not at all",
            fixes,
            hint="the suggestion has no include: put back only the services you really send through, "
            "as the ip4:/ip6: ranges they publish",
        )
    )
    return findings


def _void_findings(count: LookupCount, fixes: list[Suggestion]) -> list[Finding]:
    if not count.void_terms:
        return []
    listed = ", ".join(count.void_terms)
    if len(count.void_terms) > MAX_VOID_LOOKUPS:
        return [
            error(
                "spf.void",
                f"{len(count.void_terms)} terms look up names that do not exist or have no records "
                f"({listed}): more than {MAX_VOID_LOOKUPS} void lookups is a permerror (RFC 7208 §4.6.4)",
                fixes,
            )
        ]
    return [
        warning(
            "spf.void",
            f"{listed}: looks up a name with no records (a void lookup; more than {MAX_VOID_LOOKUPS} make "
            "the record fail, RFC 7208 §4.6.4)",
            fixes,
        )
    ]


def _all_findings(
    ctx: CheckContext, record: SpfRecord, count: LookupCount, fixes: list[Suggestion]
) -> list[Finding]:
    top = _top_all_finding(ctx, record, fixes)
    findings = [top] if top is not None else []
    for domain, text in count.records[1:]:
        if _passes_everything(text):
            findings.append(
                warning(
                    "spf.all",
                    f"the SPF record of {domain}, which {ctx.domain} includes or redirects to, has +all: "
                    "every host passes through it",
                    hint=f"remove the term naming {domain}, or ask its owner to fix the record",
                )
            )
    return findings


def _top_all_finding(ctx: CheckContext, record: SpfRecord, fixes: list[Suggestion]) -> Finding | None:
    """``+all`` lets everyone pass; ``?all`` (or no ``all`` and no ``redirect``) says nothing."""
    final = next((d for d in record.directives if d.mechanism is Mechanism.ALL), None)
    if final is None:
        if record.redirect is not None:
            return None
        return warning(
            "spf.all",
            "the SPF record has no 'all' term: hosts it does not list get 'neutral', which receivers "
            "treat like no SPF at all",
            fixes,
        )
    if final.qualifier is Qualifier.PASS:
        return warning(
            "spf.all",
            f"the SPF record ends in {final.text}: every host on the internet passes SPF for "
            f"{ctx.domain}, so SPF (and DMARC through it) protects nothing",
            fixes,
        )
    if final.qualifier is Qualifier.NEUTRAL:
        return warning(
            "spf.all",
            f"the SPF record ends in {final.text}: hosts it does not list get 'neutral', which receivers "
            "treat like no SPF at all",
            fixes,
        )
    return ok("spf.all", f"the SPF record ends in {final.text}")


def _passes_everything(text: str) -> bool:
    try:
        parsed = parse_record(text)
    except SpfSyntaxError:
        return False
    return any(d.mechanism is Mechanism.ALL and d.qualifier is Qualifier.PASS for d in parsed.directives)


def _ptr_findings(record: SpfRecord, fixes: list[Suggestion]) -> list[Finding]:
    terms = [d.text for d in record.directives if d.mechanism is Mechanism.PTR]
    if not terms:
        return []
    return [
        warning(
            "spf.ptr",
            f"the SPF record uses {', '.join(terms)}: slow, unreliable, and RFC 7208 §5.5 says it SHOULD "
            "NOT be used; list the server addresses instead",
            fixes,
        )
    ]


def _ip_findings(ctx: CheckContext, outcomes: Sequence[SpfOutcome], fixes: list[Suggestion]) -> list[Finding]:
    findings = []
    for outcome in outcomes:
        if outcome.result is SpfResult.PASS:
            findings.append(ok("spf.ip", f"{outcome.ip} is authorised: SPF pass ({outcome.reason})"))
            continue
        findings.append(
            error(
                "spf.ip",
                f"{outcome.ip} is not authorised to send for {ctx.domain}: SPF gives {outcome.result} "
                f"({outcome.reason}); receivers treat its mail as suspect or forged",
                fixes,
            )
        )
    return findings


def _repaired(
    ctx: CheckContext,
    records: Sequence[SpfRecord],
    *,
    add: Sequence[IPAddress] = (),
    drop: Collection[str] = (),
) -> str:
    """The published record(s) as one record, minus ``ptr`` and the ``drop`` terms, plus ``ip4:``/
    ``ip6:`` for the ``add`` addresses, ending in ``-all`` if it already did and ``~all`` otherwise
    (or in its ``redirect=``, when it had one and no ``all``)."""
    terms = [f"ip{ip.version}:{ip}" for ip in sorted(add, key=lambda ip: ip.version)]
    for record in records:
        for directive in record.directives:
            if directive.mechanism not in (Mechanism.ALL, Mechanism.PTR) and directive.text not in drop:
                terms.append(directive.text)
    first = records[0]
    has_all = any(d.mechanism is Mechanism.ALL for r in records for d in r.directives)
    if first.redirect is not None and not has_all:
        ending = [f"redirect={first.redirect}"]
    else:
        strict = any(
            d.mechanism is Mechanism.ALL and d.qualifier is Qualifier.FAIL
            for r in records
            for d in r.directives
        )
        ending = ["-all" if strict else ctx.plan.spf_all.mechanism]
    if first.explanation is not None:
        ending.append(f"exp={first.explanation}")
    return " ".join(["v=spf1", *dict.fromkeys(terms), *ending])


def _unlisted(ips: Sequence[IPAddress], record: SpfRecord) -> list[IPAddress]:
    """The addresses no ``ip4:``/``ip6:`` term of ``record`` passes."""
    return [
        ip
        for ip in ips
        if not any(
            d.network is not None
            and d.qualifier is Qualifier.PASS
            and d.network.version == ip.version
            and ip in d.network
            for d in record.directives
        )
    ]


def _planned(ctx: CheckContext) -> Suggestion:
    return _suggest(ctx, spf_text(ctx.plan))


def _suggest(ctx: CheckContext, text: str) -> Suggestion:
    return suggest_txt(ctx.domain, text, PURPOSE, ctx.plan.ttl)
