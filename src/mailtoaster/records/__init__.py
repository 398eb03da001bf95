"""The DNS records a mail domain should publish (MX and addresses, SPF, Sender ID, DomainKeys and
ADSP policies, DKIM keys, DMARC), computed as data and written for BIND or tinydns."""

from mailtoaster.records.bind import bind_line, format_bind
from mailtoaster.records.model import (
    DEFAULT_TTL,
    DmarcPolicy,
    DnsRecord,
    DomainPlan,
    SpfAll,
    compute_records,
    dmarc_text,
    make_plan,
    sender_id_text,
    spf_text,
)
from mailtoaster.records.tinydns import format_tinydns, tinydns_escape, tinydns_line

__all__ = [
    "DEFAULT_TTL",
    "DmarcPolicy",
    "DnsRecord",
    "DomainPlan",
    "SpfAll",
    "bind_line",
    "compute_records",
    "dmarc_text",
    "format_bind",
    "format_tinydns",
    "make_plan",
    "sender_id_text",
    "spf_text",
    "tinydns_escape",
    "tinydns_line",
]
