"""The domain's signing and authentication policies: the DomainKeys policy (``_domainkey``, RFC 4870
``o=``), ADSP (RFC 5617) and DMARC (RFC 7489, RFC 9989), with DMARC's report destinations.

A policy that claims every message is signed while the key store holds no key is an error: receivers
would distrust all of the domain's mail. The two historic policies are optional; their absence is
fine.
"""

from __future__ import annotations

import asyncio
import urllib.parse

from mailtoaster.auth.adsp import ADSP_PREFIX, AdspPolicy, parse_adsp_record
from mailtoaster.auth.dmarc import DmarcRecord, Policy, is_dmarc_record, parse_dmarc_record, usable_policies
from mailtoaster.auth.dmarc.discovery import psl_organizational_domain
from mailtoaster.auth.domainkeys import parse_policy
from mailtoaster.dns import DnsStatus, RRType
from mailtoaster.doctor.context import CheckContext, dns_failure
from mailtoaster.doctor.findings import Finding, Suggestion, error, ok, printable, suggest_txt, warning
from mailtoaster.records import dmarc_text

DMARC_PURPOSE = "DMARC policy (RFC 7489)"
REPORT_AUTHORISATION = "v=DMARC1"
"""RFC 7489 §7.1: a TXT record starting ``v=DMARC1`` at ``<domain>._report._dmarc.<target>``."""


async def check_policies(ctx: CheckContext) -> list[Finding]:
    parts = await asyncio.gather(check_domainkeys_policy(ctx), check_adsp(ctx), check_dmarc(ctx))
    return [finding for part in parts for finding in part]


# --- DomainKeys ---------------------------------------------------------------------------------


async def check_domainkeys_policy(ctx: CheckContext) -> list[Finding]:
    name = f"_domainkey.{ctx.domain}"
    answer = await ctx.resolver.lookup(name, RRType.TXT)
    if answer.status.is_temporary_error:
        return [dns_failure("domainkeys.policy", answer, "the DomainKeys policy")]
    expected = ctx.planned_records(name, RRType.TXT)
    texts = [text.decode("latin-1") for text in answer.texts()]
    if not texts:
        return [ok("domainkeys.policy", f"no DomainKeys policy at {name}: receivers assume o=~ (optional)")]
    policies = [parse_policy(ctx.domain, text) for text in texts]
    policy = next((p for p in policies if p.found), None)
    if policy is None:
        return [
            warning(
                "domainkeys.policy",
                f"the DomainKeys policy at {name} ('{printable(texts[0], 60)}') is unreadable "
                f"({policies[0].error}): receivers use the defaults",
                expected,
                hint="" if expected else f"delete the TXT record at {name}",
            )
        ]
    if policy.signs_all and not ctx.keys:
        return [_claims_signing("domainkeys.policy", name, "o=-", ctx)]
    if policy.testing:
        return [warning("domainkeys.policy", f"{name}: t=y (testing) is still on", expected)]
    what = "all mail is signed" if policy.signs_all else "some mail is signed"
    return [ok("domainkeys.policy", f"DomainKeys policy '{printable(policy.record, 60)}': {what}")]


def _claims_signing(check: str, name: str, claim: str, ctx: CheckContext) -> Finding:
    return error(
        check,
        f"{name} says every message is signed ({claim}), but {ctx.keys_dir} holds no key for {ctx.domain}: "
        "receivers distrust its unsigned mail",
        hint=f"delete the record at {name}, or make a key: mailtoaster keygen {ctx.domain} --selector NAME",
    )


# --- ADSP ---------------------------------------------------------------------------------------


async def check_adsp(ctx: CheckContext) -> list[Finding]:
    name = ADSP_PREFIX + ctx.domain
    answer = await ctx.resolver.lookup(name, RRType.TXT)
    if answer.status.is_temporary_error:
        return [dns_failure("adsp", answer, "the ADSP record")]
    expected = ctx.planned_records(name, RRType.TXT)
    texts = [text.decode("latin-1") for text in answer.texts()]
    if not texts:
        return [ok("adsp", f"no ADSP record at {name} (RFC 5617 is historic; optional)")]
    if len(texts) > 1:
        return [
            warning("adsp", f"{len(texts)} TXT records at {name}: the ADSP result is undefined", expected)
        ]
    record = parse_adsp_record(texts[0])
    if record.policy is None:
        return [
            warning(
                "adsp",
                f"the ADSP record '{printable(record.text, 60)}' is ignored as if absent: {record.problem}",
                expected,
                hint="" if expected else f"delete the TXT record at {name}",
            )
        ]
    if record.policy is not AdspPolicy.UNKNOWN and not ctx.keys:
        return [_claims_signing("adsp", name, f"dkim={record.policy}", ctx)]
    return [ok("adsp", f"ADSP record dkim={record.practice}")]


# --- DMARC --------------------------------------------------------------------------------------


async def check_dmarc(ctx: CheckContext) -> list[Finding]:
    name = f"_dmarc.{ctx.domain}"
    answer = await ctx.resolver.lookup(name, RRType.TXT)
    if answer.status.is_temporary_error:
        return [dns_failure("dmarc", answer, "the DMARC record")]
    texts = [text.decode("latin-1") for text in answer.texts()]
    records = [text for text in texts if is_dmarc_record(text)]
    if not records:
        return [await _no_dmarc(ctx, texts)]
    if len(records) > 1:
        return [
            error(
                "dmarc.record",
                f"{len(records)} DMARC records at {name}: receivers discard them all",
                [_suggest(ctx, _repaired(ctx, parse_dmarc_record(min(records))))],
                hint="keep one record",
            )
        ]
    record = parse_dmarc_record(records[0])
    assert record is not None  # is_dmarc_record said so
    findings = _record_findings(ctx, record)
    findings.extend(await _report_findings(ctx, record))
    return findings


async def _no_dmarc(ctx: CheckContext, texts: list[str]) -> Finding:
    name = f"_dmarc.{ctx.domain}"
    planned = ctx.planned_records(name, RRType.TXT)
    if texts:
        return error(
            "dmarc.syntax",
            f"the TXT record at {name} ('{printable(texts[0], 60)}') is not a DMARC record (it must start "
            "with v=DMARC1): receivers ignore it",
            planned,
        )
    organizational = psl_organizational_domain(ctx.domain)
    if organizational != ctx.domain:
        answer = await ctx.resolver.lookup(f"_dmarc.{organizational}", RRType.TXT)
        if answer.status is DnsStatus.NOERROR and any(
            is_dmarc_record(t.decode("latin-1")) for t in answer.texts()
        ):
            return ok("dmarc.record", f"no record at {name}; the policy of {organizational} applies")
    return warning(
        "dmarc.record",
        f"no DMARC record at {name}: receivers apply no policy to mail failing SPF and DKIM, and large "
        "mailbox providers expect one",
        planned,
    )


def _record_findings(ctx: CheckContext, record: DmarcRecord) -> list[Finding]:
    shown = printable(record.text, 100)
    if usable_policies(record, "rfc7489") is None or usable_policies(record, "dmarcbis") is None:
        return [
            error(
                "dmarc.syntax",
                f"DMARC record '{shown}' has no valid p= ({'; '.join(record.problems) or 'p= missing'}): "
                "receivers apply no DMARC policy",
                [_suggest(ctx, _repaired(ctx, record))],
            )
        ]
    findings = [ok("dmarc.record", f"DMARC record: {shown}")]
    if record.problems:
        findings.append(
            warning(
                "dmarc.syntax",
                f"DMARC record has errors receivers skip over: {'; '.join(record.problems)}",
                [_suggest(ctx, _repaired(ctx, record))],
            )
        )
    findings.append(_strength(ctx, record))
    return findings


def _strength(ctx: CheckContext, record: DmarcRecord) -> Finding:
    policy = record.p or Policy.NONE
    repair = [_suggest(ctx, _repaired(ctx, record))]
    if policy is Policy.NONE:
        return warning(
            "dmarc.policy",
            "p=none: receivers only report, and mail failing SPF and DKIM is delivered as usual; move to "
            "quarantine once the reports show all your mail passes",
            repair,
        )
    if record.testing:
        return warning("dmarc.policy", f"p={policy} but t=y: receivers apply one level less", repair)
    if record.pct < 100:
        return warning(
            "dmarc.policy", f"p={policy} but pct={record.pct}: the rest gets one level less", repair
        )
    return ok("dmarc.policy", f"p={policy}")


def _repaired(ctx: CheckContext, record: DmarcRecord | None) -> str:
    """The record with a usable, enforcing ``p=``, only valid tags and URIs, and without ``pct``/``t``
    (which weaken it); the one ``dns records`` computes when there is no record to start from."""
    if record is None:
        return dmarc_text(ctx.plan)
    policy = record.p if record.p in (Policy.QUARANTINE, Policy.REJECT) else Policy(ctx.plan.dmarc_policy)
    tags = ["v=DMARC1", f"p={policy}"]
    for name, value in record.tags:
        if name in ("v", "p", "pct", "t") or name in record.invalid:
            continue
        if name in ("rua", "ruf"):
            value = ",".join(record.rua if name == "rua" else record.ruf)
        tags.append(f"{name}={value}")
    return "; ".join(tags)


def _suggest(ctx: CheckContext, text: str) -> Suggestion:
    return suggest_txt(f"_dmarc.{ctx.domain}", text, DMARC_PURPOSE, ctx.plan.ttl)


# --- report destinations ------------------------------------------------------------------------


async def _report_findings(ctx: CheckContext, record: DmarcRecord) -> list[Finding]:
    findings: list[Finding] = []
    targets: dict[str, str] = {}
    for tag, uris in (("rua", record.rua), ("ruf", record.ruf)):
        for uri in uris:
            target = _mailto_domain(uri)
            if target is None:
                findings.append(
                    warning(
                        "dmarc.report", f"{tag}={printable(uri, 60)}: receivers send reports by mail only"
                    )
                )
            else:
                targets.setdefault(target, f"{tag}={printable(uri, 60)}")
    checks = await asyncio.gather(*(_authorised(ctx, target, uri) for target, uri in targets.items()))
    return findings + list(checks)


def _mailto_domain(uri: str) -> str | None:
    """The domain of a ``mailto:`` report URI (size limit ``!10m`` and %-escapes removed)."""
    scheme, _, rest = uri.partition(":")
    if scheme.lower() != "mailto":
        return None
    address = urllib.parse.unquote(rest.split("!", 1)[0])
    local, at, domain = address.rpartition("@")
    return domain.rstrip(".").lower() if at and local and domain else None


async def _authorised(ctx: CheckContext, target: str, uri: str) -> Finding:
    """RFC 7489 §7.1: a destination outside the domain's Organizational Domain must publish
    ``<domain>._report._dmarc.<target>``, or receivers will not send it reports."""
    if psl_organizational_domain(target) == psl_organizational_domain(ctx.domain):
        return ok("dmarc.report", f"{uri}: reports stay within {psl_organizational_domain(ctx.domain)}")
    name = f"{ctx.domain}._report._dmarc.{target}"
    answer = await ctx.resolver.lookup(name, RRType.TXT)
    if answer.status.is_temporary_error:
        return dns_failure("dmarc.report", answer, f"the report authorisation of {target}")
    if any(is_dmarc_record(text.decode("latin-1")) for text in answer.texts()):
        return ok("dmarc.report", f"{uri}: {target} authorises reports for {ctx.domain} ({name})")
    return warning(
        "dmarc.report",
        f"{uri}: {target} is another domain and publishes no {name} record, so receivers will not send it "
        "reports (RFC 7489 §7.1)",
        [
            suggest_txt(
                name,
                REPORT_AUTHORISATION,
                f"{target} accepts DMARC reports for {ctx.domain} (RFC 7489 §7.1)",
                ctx.plan.ttl,
            )
        ],
        hint=f"the owner of {target} publishes this record",
    )
