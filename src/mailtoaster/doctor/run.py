"""One run of the doctor: read the key store, ask DNS about the domain, and collect every finding.

The checks are independent, so they run concurrently; a name that does not answer then costs one
timeout for the whole run instead of one per check (see :class:`OnceResolver`).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

from mailtoaster.dns import Answer, DnsStatus, IPAddress, Resolver, RRType
from mailtoaster.doctor.context import CheckContext, OnceResolver
from mailtoaster.doctor.dkim import check_keys
from mailtoaster.doctor.findings import DoctorReport, Finding, error, suggest
from mailtoaster.doctor.mx import check_mx, check_reverse_dns
from mailtoaster.doctor.policies import check_policies
from mailtoaster.doctor.spf import check_spf
from mailtoaster.keys import DEFAULT_KEYS_DIR, KeyStoreError, StoredKey, list_keys
from mailtoaster.records import DomainPlan, compute_records, make_plan


async def check_domain(
    domain: str,
    resolver: Resolver,
    *,
    ips: Iterable[str | IPAddress] = (),
    keys_dir: str | Path = DEFAULT_KEYS_DIR,
) -> DoctorReport:
    """Check everything ``domain`` publishes for mail. ValueError (one line) for a domain or address
    that is not valid input; anything DNS, the records or the key store hold becomes a finding."""
    plan = make_plan(domain, ips=ips)
    keys, store_findings = read_keys(keys_dir, plan.domain)
    once = OnceResolver(resolver)
    mx_answer, txt_answer = await asyncio.gather(
        once.lookup(plan.domain, RRType.MX), once.lookup(plan.domain, RRType.TXT)
    )
    if mx_answer.status is DnsStatus.NXDOMAIN:
        return DoctorReport(plan.domain, (*store_findings, _nonexistent(plan, keys, mx_answer)))
    if mx_answer.status.is_temporary_error and txt_answer.status.is_temporary_error:
        return DoctorReport(plan.domain, (*store_findings, _unreachable(plan.domain, mx_answer)))
    plan = _with_mail_host(plan, mx_answer)
    ctx = CheckContext(
        plan.domain, once, plan, tuple(compute_records(plan, keys)), plan.ips, tuple(keys), Path(keys_dir)
    )
    parts = await asyncio.gather(_mail(ctx, mx_answer), check_spf(ctx), check_keys(ctx), check_policies(ctx))
    return DoctorReport(plan.domain, (*store_findings, *(finding for part in parts for finding in part)))


def read_keys(keys_dir: str | Path, domain: str) -> tuple[list[StoredKey], list[Finding]]:
    """The domain's keys; a store that cannot be read is a finding, not a crash (its keys then go
    unchecked, and the signer would fail on the same file)."""
    try:
        return list_keys(keys_dir, domain), []
    except KeyStoreError as exc:
        return [], [
            error(
                "dkim.keys",
                f"cannot read the key store: {exc}",
                hint="check --keys-dir, and fix or remove a key file that does not load",
            )
        ]


async def _mail(ctx: CheckContext, mx_answer: Answer) -> list[Finding]:
    findings, hosts = await check_mx(ctx, mx_answer)
    return findings + await check_reverse_dns(ctx, hosts)


def _with_mail_host(plan: DomainPlan, mx_answer: Answer) -> DomainPlan:
    """The plan with the domain's real primary exchanger, so suggested addresses go where mail goes."""
    exchanges = sorted((mx for mx in mx_answer.mx_records() if mx.exchange), key=lambda mx: mx.preference)
    if not exchanges:
        return plan
    try:
        return make_plan(plan.domain, ips=plan.ips, mx_host=exchanges[0].exchange)
    except ValueError:  # an exchanger name records cannot hold; the default mail.<domain> stays
        return plan


def _nonexistent(plan: DomainPlan, keys: list[StoredKey], answer: Answer) -> Finding:
    detail = f" ({answer.detail})" if answer.detail else ""
    return error(
        "domain",
        f"{plan.domain} does not exist in DNS (NXDOMAIN{detail}): nobody can send mail to it, and "
        "receivers reject mail from it",
        [suggest(record) for record in compute_records(plan, keys)],
        hint="register or delegate the domain, then publish these records",
    )


def _unreachable(domain: str, answer: Answer) -> Finding:
    detail = f" ({answer.detail})" if answer.detail else ""
    return error(
        "dns",
        f"cannot check {domain}: DNS {answer.status.value} for its MX and TXT records{detail}; nothing "
        "else was checked",
        hint="check that the domain's name servers (or --nameserver) answer, then run the check again",
    )
