"""The sending domain's DomainKeys policy (RFC 4870 §3.6), a TXT record at ``_domainkey.<domain>``.

``o=-`` says every message from the domain is signed, ``o=~`` (the default) that some are;
``t=y`` marks the domain as testing. A missing or unreadable record means the defaults, with the
reason kept so a report can tell "no policy" from "DNS failed".
"""

from __future__ import annotations

from mailtoaster.auth.domainkeys.result import DomainKeysPolicy
from mailtoaster.auth.tags import TagListError, parse_tag_list
from mailtoaster.dns import DnsStatus, Resolver, RRType

SIGNS_ALL = "-"
SIGNS_SOME = "~"


def policy_name(domain: str) -> str:
    return f"_domainkey.{domain}"


async def lookup_policy(domain: str, resolver: Resolver) -> DomainKeysPolicy:
    """Fetch and parse the policy; never raises."""
    answer = await resolver.lookup(policy_name(domain), RRType.TXT)
    if answer.status is not DnsStatus.NOERROR:
        error = (answer.detail or answer.status.value) if answer.status.is_temporary_error else ""
        return DomainKeysPolicy(domain, dns_status=answer.status, error=error)
    errors = []
    for text in answer.texts():
        policy = parse_policy(domain, text.decode("ascii", errors="replace"))
        if policy.found:
            return policy
        errors.append(policy.error)
    return DomainKeysPolicy(domain, dns_status=answer.status, error="; ".join(errors) or "no TXT record")


def parse_policy(domain: str, text: str) -> DomainKeysPolicy:
    """One TXT record's policy; a record that is not a tag list gives the defaults and an error."""
    try:
        tags = parse_tag_list(text)
    except TagListError as error:
        return DomainKeysPolicy(domain, record=text, dns_status=DnsStatus.NOERROR, error=f"policy: {error}")
    return DomainKeysPolicy(
        domain,
        found=True,
        signs_all=tags.get("o", SIGNS_SOME).strip() == SIGNS_ALL,
        testing=tags.get("t", "").strip().lower() == "y",
        report_to=tags.get("r", ""),
        notes=tags.get("n", ""),
        record=text,
        dns_status=DnsStatus.NOERROR,
    )
