"""The DNS doctor (``mailtoaster.doctor``) against the loopback test DNS server (tests/dnsserver.py).

Each test publishes a zone made by the project's own key and records code (what ``dns records``
prints), breaks one thing, and asserts the finding, its severity and the record it suggests. The
resolver is the real one (:class:`LiveResolver`), so every answer crosses a socket.
"""

from __future__ import annotations

import ipaddress
import re
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

from mailtoaster.auth.spf import count_lookups
from mailtoaster.dns import RRType
from mailtoaster.dns.live import LiveResolver
from mailtoaster.doctor import DoctorReport, Finding, Severity, check_domain, render_json, render_text
from mailtoaster.keys import KeyType, StoredKey, create_key, list_keys
from mailtoaster.records import (
    DnsRecord,
    bind_line,
    compute_records,
    format_bind,
    make_plan,
    tinydns_line,
)
from tests.dnsserver import DnsTestServer

DOMAIN = "example.com"
SERVER_IP = "192.0.2.25"
SERVER_IP6 = "2001:db8::25"
MAIL_HOST = f"mail.{DOMAIN}"
TIMEOUT = 0.5
SOA = f"{DOMAIN}. 3600 IN SOA ns.{DOMAIN}. hostmaster.{DOMAIN}. 1 3600 600 86400 60\n"
PTR = f"25.2.0.192.in-addr.arpa. 3600 IN PTR {MAIL_HOST}.\n"
PTR6 = f"{ipaddress.ip_address(SERVER_IP6).reverse_pointer}. 3600 IN PTR {MAIL_HOST}.\n"

RSA_512_PKCS1 = b"""\
-----BEGIN RSA PRIVATE KEY-----
MIIBOgIBAAJBAMMVhTMx5FrWg03B6PgUdttiCmW0+EPMJrPOp13gf36RDgcjZhOg
dB11Yb65kW0KgwkX/C9W5QLCndtat22wrWkCAwEAAQJBAKi4LAMi20RU0iql0j78
M+9401UzNqQsJCzORaHDT4C9oBqjCzPZsjJVVmSsU3buaJPodVzLo7vEgodMC6B5
PiECIQDss9WbdipffWh2fupdEI+2TCxsduHQrgQl9z8DOh40LwIhANL9E7xrgPcf
a5VREYsjIPCktOMODRZSLXCAtrMrWRnnAiBgDd5aFwq882RH6drrZ0QagzDn1xpu
F5/hVENC6PvGywIgJOxPIOE7X4PrIuVeCZhrMlHQqg+ScL6O3ypXTsGeRS8CIDxh
iGq2wO2u0xQvOEBhjCCEhh4bj15tR0gTomLw3WxI
-----END RSA PRIVATE KEY-----
"""
"""A 512-bit key in the PKCS#1 form ``openssl genrsa`` wrote for qmail's dknewkey (cryptography will
not generate one)."""


# --- the zone and the key store ------------------------------------------------------------------


def make_key_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A key store with a 2048-bit RSA key and an Ed25519 key for example.com (the doctor tests' keys)."""
    keys_dir = tmp_path_factory.mktemp("keys")
    create_key(keys_dir, DOMAIN, "s2024")
    create_key(keys_dir, DOMAIN, "ed2024", key_type=KeyType.ED25519)
    return keys_dir


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """:func:`make_key_store`, made once per module."""
    return make_key_store(tmp_path_factory)


def keys_of(keys_dir: Path) -> list[StoredKey]:
    return list_keys(keys_dir, DOMAIN)


def planned(
    keys_dir: Path, ips: Sequence[str] = (SERVER_IP,), dmarc_rua: str | None = None
) -> list[DnsRecord]:
    """What ``dns records example.com --ip 192.0.2.25`` prints for the store."""
    return compute_records(make_plan(DOMAIN, ips=ips, dmarc_rua=dmarc_rua), keys_of(keys_dir))


def good_zone(keys_dir: Path, dmarc_rua: str | None = None) -> str:
    """The correct zone: the planned records, an SOA, and the server's reverse DNS."""
    return SOA + format_bind(planned(keys_dir, dmarc_rua=dmarc_rua)) + PTR


def without(zone: str, name: str, rrtype: str = "TXT") -> str:
    """``zone`` minus the records of ``rrtype`` owned by ``name``."""
    kept = [
        line for line in zone.splitlines() if not line.startswith(f"{name}. ") or f" IN {rrtype} " not in line
    ]
    return "\n".join(kept) + "\n"


def replace_txt(zone: str, name: str, *texts: str) -> str:
    """``zone`` with the TXT records at ``name`` replaced by ``texts`` (none: just removed)."""
    lines = [bind_line(DnsRecord(name, RRType.TXT, 3600, text)) + "\n" for text in texts]
    return without(zone, name) + "".join(lines)


async def doctor(
    server: DnsTestServer, zone: str, keys_dir: Path, ips: Sequence[str] = (SERVER_IP,)
) -> DoctorReport:
    server.load_zone(zone)
    resolver = LiveResolver([server.address], timeout=TIMEOUT)
    return await check_domain(DOMAIN, resolver, ips=ips, keys_dir=keys_dir)


def of(report: DoctorReport, check: str) -> list[Finding]:
    return [finding for finding in report.findings if finding.check == check]


def one(report: DoctorReport, check: str, severity: Severity) -> Finding:
    """The single finding ``check`` with ``severity`` (fails with the whole report otherwise)."""
    matching = [f for f in of(report, check) if f.severity is severity]
    assert len(matching) == 1, render_text(report)
    return matching[0]


def problems(report: DoctorReport) -> list[tuple[str, Severity]]:
    return [(f.check, f.severity) for f in report.findings if f.severity is not Severity.OK]


# --- the correct zone ----------------------------------------------------------------------------


CORRECT_ZONE_CHECKS = frozenset(
    {
        "mx",
        "mx.address",
        "ptr",
        "spf.record",
        "spf.lookups",
        "spf.all",
        "spf.ip",
        "dkim.record",
        "domainkeys.policy",
        "adsp",
        "dmarc.record",
        "dmarc.policy",
    }
)
"""The checks every run over the correct zone reports on (each ``ok`` there)."""


async def test_correct_zone_is_all_ok(dns_server: DnsTestServer, store: Path) -> None:
    report = await doctor(dns_server, good_zone(store), store)
    assert problems(report) == [], render_text(report)
    assert report.exit_code == 0
    checks = {f.check for f in report.findings}
    assert checks >= CORRECT_ZONE_CHECKS
    assert len(of(report, "dkim.record")) == 2
    assert all(not f.suggestions for f in report.findings)
    assert "192.0.2.25 -> mail.example.com -> 192.0.2.25" in one(report, "ptr", Severity.OK).message


async def test_correct_zone_with_ipv6_server(dns_server: DnsTestServer, store: Path) -> None:
    zone = SOA + format_bind(planned(store, ips=[SERVER_IP, SERVER_IP6])) + PTR + PTR6
    report = await doctor(dns_server, zone, store, ips=[SERVER_IP, SERVER_IP6])
    assert problems(report) == [], render_text(report)
    assert len(of(report, "ptr")) == 2
    assert len(of(report, "spf.ip")) == 2


# --- DKIM and DomainKeys keys --------------------------------------------------------------------


async def test_missing_dkim_record_is_an_error_with_the_record_to_publish(
    dns_server: DnsTestServer, store: Path
) -> None:
    name = f"s2024._domainkey.{DOMAIN}"
    report = await doctor(dns_server, replace_txt(good_zone(store), name), store)
    finding = one(report, "dkim.record", Severity.ERROR)
    assert "s2024" in finding.message and "no key record" in finding.message
    (expected,) = [record for record in planned(store) if record.name == name]
    (suggestion,) = finding.suggestions
    assert suggestion.bind == bind_line(expected)
    assert suggestion.tinydns == tinydns_line(expected)
    assert suggestion.data == expected.data
    assert report.exit_code == 2
    assert one(report, "dkim.record", Severity.OK).message.startswith("selector ed2024")


async def test_key_that_does_not_match_the_private_key(
    dns_server: DnsTestServer, store: Path, tmp_path: Path
) -> None:
    other = create_key(tmp_path, DOMAIN, "s2024", key_type=KeyType.ED25519)
    name = f"s2024._domainkey.{DOMAIN}"
    report = await doctor(dns_server, replace_txt(good_zone(store), name, other.dkim_record), store)
    finding = one(report, "dkim.match", Severity.ERROR)
    assert re.search(r"published key \(sha256:[0-9a-f]{16}\) is not the private key", finding.message)
    (suggestion,) = finding.suggestions
    (key,) = [k for k in keys_of(store) if k.selector == "s2024"]
    assert suggestion.data == key.dkim_record != other.dkim_record
    assert report.exit_code == 2


async def test_512_bit_dknewkey_key_is_named_broken(dns_server: DnsTestServer, tmp_path: Path) -> None:
    domain_dir = tmp_path / DOMAIN
    domain_dir.mkdir()
    (domain_dir / "private").write_bytes(RSA_512_PKCS1)  # where dknewkey put it
    report = await doctor(dns_server, good_zone(tmp_path), tmp_path)
    size = one(report, "dkim.size", Severity.ERROR)
    assert "512-bit" in size.message and "dknewkey" in size.message and "broken" in size.message
    assert "mailtoaster keygen example.com --selector NEW" in size.hint
    assert one(report, "dkim.record", Severity.OK)  # published and matching: only the size is wrong
    assert report.exit_code == 2


async def test_1024_bit_key_is_a_warning(dns_server: DnsTestServer, tmp_path: Path) -> None:
    create_key(tmp_path, DOMAIN, "old", bits=1024)
    report = await doctor(dns_server, good_zone(tmp_path), tmp_path)
    assert problems(report) == [("dkim.size", Severity.WARNING)], render_text(report)
    assert report.exit_code == 1


async def test_testing_flag_and_revoked_key(dns_server: DnsTestServer, store: Path) -> None:
    (rsa_key,) = [k for k in keys_of(store) if k.selector == "s2024"]
    testing = rsa_key.dkim_record.replace("v=DKIM1; ", "v=DKIM1; t=y; ")
    zone = replace_txt(good_zone(store), rsa_key.record_name, testing)
    zone = replace_txt(zone, f"ed2024._domainkey.{DOMAIN}", "v=DKIM1; k=ed25519; p=")
    report = await doctor(dns_server, zone, store)
    flagged = one(report, "dkim.testing", Severity.WARNING)
    assert flagged.suggestions[0].data == rsa_key.dkim_record
    revoked = one(report, "dkim.revoked", Severity.ERROR)
    assert "ed2024" in revoked.message and "empty p=" in revoked.message
    assert report.exit_code == 2


async def test_domainkeys_unusable_key_record(dns_server: DnsTestServer, store: Path) -> None:
    (rsa_key,) = [k for k in keys_of(store) if k.selector == "s2024"]
    sha256_only = rsa_key.dkim_record.replace("k=rsa; ", "k=rsa; h=sha256; ")
    report = await doctor(dns_server, replace_txt(good_zone(store), rsa_key.record_name, sha256_only), store)
    assert problems(report) == [("domainkeys.key", Severity.WARNING)], render_text(report)


async def test_garbage_key_record(dns_server: DnsTestServer, store: Path) -> None:
    name = f"s2024._domainkey.{DOMAIN}"
    zone = good_zone(store).replace(f"{name}. 3600 IN TXT", f'{name}. 3600 IN TXT "\\000\\255;;p=!!" ;')
    report = await doctor(dns_server, zone, store)
    finding = one(report, "dkim.record", Severity.ERROR)
    assert "unusable" in finding.message and "\\x00" in finding.message
    assert "\x00" not in render_text(report)


async def test_no_keys_is_a_warning_and_signing_claims_become_errors(
    dns_server: DnsTestServer, store: Path, tmp_path: Path
) -> None:
    report = await doctor(dns_server, good_zone(store), tmp_path / "empty")
    assert one(report, "dkim.keys", Severity.WARNING).hint.startswith("mailtoaster keygen example.com")
    assert "o=-" in one(report, "domainkeys.policy", Severity.ERROR).message
    assert "dkim=all" in one(report, "adsp", Severity.ERROR).message


async def test_unreadable_key_store_is_a_finding(
    dns_server: DnsTestServer, store: Path, tmp_path: Path
) -> None:
    shutil.copytree(store, tmp_path, dirs_exist_ok=True)
    (tmp_path / DOMAIN / "broken").write_text("-----BEGIN PRIVATE KEY-----\nnot a key\n")
    report = await doctor(dns_server, good_zone(store), tmp_path)
    assert "cannot read the key store" in one(report, "dkim.keys", Severity.ERROR).message


async def test_ed25519_only_store_warns(dns_server: DnsTestServer, tmp_path: Path) -> None:
    create_key(tmp_path, DOMAIN, "ed", key_type=KeyType.ED25519)
    report = await doctor(dns_server, good_zone(tmp_path), tmp_path)
    assert problems(report) == [("dkim.keys", Severity.WARNING)], render_text(report)


# --- SPF -----------------------------------------------------------------------------------------


def include_chain(count: int) -> str:
    """``_spf.example.net`` including ``count`` more records (one include more for the term naming it)."""
    names = [f"s{i}.example.net" for i in range(1, count + 1)]
    lines = [f'_spf.example.net. 3600 IN TXT "v=spf1 {" ".join(f"include:{n}" for n in names)} -all"']
    lines.extend(f'{name}. 3600 IN TXT "v=spf1 ip4:198.51.100.{i} -all"' for i, name in enumerate(names, 1))
    return "\n".join(lines) + "\n"


async def test_spf_with_eleven_lookups_through_includes(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), DOMAIN, f"v=spf1 ip4:{SERVER_IP} include:_spf.example.net ~all")
    report = await doctor(dns_server, zone + include_chain(10), store)
    finding = one(report, "spf.lookups", Severity.ERROR)
    assert finding.message.startswith("11 DNS-querying terms after expanding includes")
    assert finding.suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} ~all"
    assert finding.suggestions[0].bind == f'{DOMAIN}. 3600 IN TXT "v=spf1 ip4:{SERVER_IP} ~all"'
    assert finding.suggestions[0].tinydns == f"'{DOMAIN}:v=spf1 ip4\\072{SERVER_IP} ~all:3600"
    assert one(report, "spf.ip", Severity.OK)  # the server matches before the limit is reached
    assert report.exit_code == 2


async def test_all_spf_findings_suggest_one_record(dns_server: DnsTestServer, store: Path) -> None:
    """Over the limit, with +all and a ptr term: every SPF finding suggests the same repaired record, so
    following one suggestion never undoes another."""
    record = "v=spf1 ptr include:_spf.example.net +all"
    report = await doctor(
        dns_server, replace_txt(good_zone(store), DOMAIN, record) + include_chain(10), store
    )
    spf_problems = [
        f for f in report.findings if f.check.startswith("spf.") and f.severity is not Severity.OK
    ]
    assert [f.check for f in spf_problems] == ["spf.lookups", "spf.all", "spf.ptr"], render_text(report)
    assert {f.suggestions[0].data for f in spf_problems} == {f"v=spf1 ip4:{SERVER_IP} ~all"}


async def test_spf_with_ten_lookups_is_fine(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), DOMAIN, f"v=spf1 ip4:{SERVER_IP} include:_spf.example.net ~all")
    report = await doctor(dns_server, zone + include_chain(9), store)
    assert one(report, "spf.lookups", Severity.OK).message.startswith("10 DNS-querying terms")
    assert report.exit_code == 0, render_text(report)


async def test_two_spf_records(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), DOMAIN, f"v=spf1 ip4:{SERVER_IP} -all", "v=spf1 mx ~all")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "spf.record", Severity.ERROR)
    assert "2 SPF records" in finding.message and "permerror" in finding.message
    assert finding.suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} mx -all"
    assert finding.hint == "delete the other v=spf1 records"
    address = one(report, "spf.ip", Severity.ERROR)  # receivers get permerror for the server too
    assert "permerror" in address.message and address.suggestions == finding.suggestions


async def test_plus_all_is_a_warning_with_the_fixed_record(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), DOMAIN, f"v=spf1 ip4:{SERVER_IP} +all")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "spf.all", Severity.WARNING)
    assert "+all" in finding.message and "every host" in finding.message
    assert finding.suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} ~all"
    assert problems(report) == [("spf.all", Severity.WARNING)]
    assert report.exit_code == 1


@pytest.mark.parametrize("ending", ["?all", ""])
async def test_neutral_or_missing_all_is_a_warning(
    dns_server: DnsTestServer, store: Path, ending: str
) -> None:
    zone = replace_txt(good_zone(store), DOMAIN, f"v=spf1 ip4:{SERVER_IP} {ending}".strip())
    report = await doctor(dns_server, zone, store)
    finding = one(report, "spf.all", Severity.WARNING)
    assert "neutral" in finding.message
    assert finding.suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} ~all"


async def test_ptr_term_is_a_warning(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), DOMAIN, "v=spf1 ptr -all")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "spf.ptr", Severity.WARNING)
    assert "RFC 7208 §5.5" in finding.message
    assert finding.suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} -all"
    assert one(report, "spf.ip", Severity.OK)  # ptr does authorise it; the record just should not rely on it


async def test_server_address_not_authorised(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), DOMAIN, "v=spf1 ip4:198.51.100.1 include:_spf.example.net -all")
    zone += '_spf.example.net. 3600 IN TXT "v=spf1 ip4:198.51.100.2 -all"\n'
    report = await doctor(dns_server, zone, store)
    finding = one(report, "spf.ip", Severity.ERROR)
    assert finding.message.startswith(f"{SERVER_IP} is not authorised to send for {DOMAIN}: SPF gives fail")
    assert (
        finding.suggestions[0].data
        == f"v=spf1 ip4:{SERVER_IP} ip4:198.51.100.1 include:_spf.example.net -all"
    )


async def test_spf_syntax_error_and_missing_record(dns_server: DnsTestServer, store: Path) -> None:
    report = await doctor(
        dns_server, replace_txt(good_zone(store), DOMAIN, "v=spf1 ip4:999.1.1.1 -all"), store
    )
    finding = one(report, "spf.syntax", Severity.ERROR)
    assert "999.1.1.1" in finding.message
    assert finding.suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} ~all"  # what dns records computes

    report = await doctor(dns_server, replace_txt(good_zone(store), DOMAIN, "v=spf1;ip4:192.0.2.25"), store)
    finding = one(report, "spf.record", Severity.ERROR)
    assert "looks like SPF but does not start with 'v=spf1 '" in finding.message
    assert finding.suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} ~all"


async def test_void_lookups(dns_server: DnsTestServer, store: Path) -> None:
    three = f"v=spf1 ip4:{SERVER_IP} a:gone1.{DOMAIN} mx:gone2.{DOMAIN} exists:gone3.{DOMAIN} ~all"
    report = await doctor(dns_server, replace_txt(good_zone(store), DOMAIN, three), store)
    finding = one(report, "spf.void", Severity.ERROR)
    assert "3 terms" in finding.message and "more than 2 void lookups" in finding.message
    assert finding.suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} ~all"

    one_void = f"v=spf1 ip4:{SERVER_IP} a:gone1.{DOMAIN} ~all"
    report = await doctor(dns_server, replace_txt(good_zone(store), DOMAIN, one_void), store)
    assert one(report, "spf.void", Severity.WARNING).message.startswith(f"{DOMAIN}: a:gone1.{DOMAIN}")


async def test_include_without_record_and_included_plus_all(dns_server: DnsTestServer, store: Path) -> None:
    record = f"v=spf1 ip4:{SERVER_IP} include:nothing.example.net include:open.example.net -all"
    zone = replace_txt(good_zone(store), DOMAIN, record) + 'open.example.net. 3600 IN TXT "v=spf1 +all"\n'
    report = await doctor(dns_server, zone, store)
    assert "nothing.example.net: no SPF record" in one(report, "spf.include", Severity.ERROR).message
    assert "open.example.net" in one(report, "spf.all", Severity.WARNING).message


# --- MX and reverse DNS --------------------------------------------------------------------------


async def test_missing_ptr_for_the_server(dns_server: DnsTestServer, store: Path) -> None:
    report = await doctor(dns_server, good_zone(store).replace(PTR, ""), store)
    finding = one(report, "ptr", Severity.ERROR)
    assert finding.message.startswith(f"{SERVER_IP} (sending address) has no reverse DNS")
    (suggestion,) = finding.suggestions
    assert suggestion.bind == f"25.2.0.192.in-addr.arpa. 3600 IN PTR {MAIL_HOST}."
    assert suggestion.tinydns == f"^25.2.0.192.in-addr.arpa:{MAIL_HOST}:3600"
    assert report.exit_code == 2


async def test_reverse_dns_not_forward_confirmed(dns_server: DnsTestServer, store: Path) -> None:
    zone = good_zone(store).replace(PTR, "25.2.0.192.in-addr.arpa. 3600 IN PTR host-25.isp.example.net.\n")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "ptr", Severity.ERROR)
    assert "host-25.isp.example.net, which does not resolve back" in finding.message
    assert [s.rrtype for s in finding.suggestions] == ["PTR"]  # mail.example.com already has the address


async def test_mx_host_without_address(dns_server: DnsTestServer, store: Path) -> None:
    zone = without(good_zone(store), MAIL_HOST, "A")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "mx.address", Severity.ERROR)
    assert f"MX host {MAIL_HOST} has no A or AAAA record" in finding.message
    assert [s.bind for s in finding.suggestions] == [f"{MAIL_HOST}. 3600 IN A {SERVER_IP}"]


async def test_mx_address_without_ptr_is_only_a_warning(dns_server: DnsTestServer, store: Path) -> None:
    zone = good_zone(store).replace(PTR, "") + f"{MAIL_HOST}. 3600 IN A 192.0.2.26\n"
    zone += f"26.2.0.192.in-addr.arpa. 3600 IN PTR {MAIL_HOST}.\n"
    report = await doctor(dns_server, zone, store, ips=["192.0.2.26"])
    finding = one(report, "ptr", Severity.WARNING)
    assert finding.message.startswith(f"{SERVER_IP} (address of MX host {MAIL_HOST}) has no reverse DNS")


async def test_no_mx_uses_the_planned_one(dns_server: DnsTestServer, store: Path) -> None:
    zone = without(good_zone(store), DOMAIN, "MX") + f"{DOMAIN}. 3600 IN A {SERVER_IP}\n"
    report = await doctor(dns_server, zone, store)
    finding = one(report, "mx", Severity.WARNING)
    assert "implicit MX" in finding.message
    assert [s.bind for s in finding.suggestions] == [
        f"{DOMAIN}. 3600 IN MX 10 {MAIL_HOST}.",
        f"{MAIL_HOST}. 3600 IN A {SERVER_IP}",
    ]
    assert finding.suggestions[0].tinydns == f"@{DOMAIN}::{MAIL_HOST}:10:3600"


# --- DomainKeys policy, ADSP, DMARC --------------------------------------------------------------


async def test_dmarc_syntax_error_without_valid_policy(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), f"_dmarc.{DOMAIN}", "v=DMARC1; p=rejekt; adkim=s")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "dmarc.syntax", Severity.ERROR)
    assert "p=" in finding.message and "receivers apply no DMARC policy" in finding.message
    assert finding.suggestions[0].data == "v=DMARC1; p=quarantine; adkim=s"
    assert finding.suggestions[0].bind == f'_dmarc.{DOMAIN}. 3600 IN TXT "v=DMARC1; p=quarantine; adkim=s"'


async def test_dmarc_syntax_error_in_other_tags_is_a_warning(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), f"_dmarc.{DOMAIN}", "v=DMARC1; p=reject; fo=7; x")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "dmarc.syntax", Severity.WARNING)
    assert "fo=" in finding.message
    assert finding.suggestions[0].data == "v=DMARC1; p=reject"
    assert one(report, "dmarc.policy", Severity.OK).message == "p=reject"


async def test_txt_at_dmarc_that_is_not_dmarc(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), f"_dmarc.{DOMAIN}", "v=DMARC 1; p=reject")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "dmarc.syntax", Severity.ERROR)
    assert "not a DMARC record" in finding.message
    assert finding.suggestions[0].data == "v=DMARC1; p=quarantine"


async def test_dmarc_policy_none_and_missing_record(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), f"_dmarc.{DOMAIN}", "v=DMARC1; p=none; rua=mailto:d@example.com")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "dmarc.policy", Severity.WARNING)
    assert finding.suggestions[0].data == "v=DMARC1; p=quarantine; rua=mailto:d@example.com"
    assert one(report, "dmarc.report", Severity.OK)  # same domain: no authorisation needed

    report = await doctor(dns_server, replace_txt(good_zone(store), f"_dmarc.{DOMAIN}"), store)
    finding = one(report, "dmarc.record", Severity.WARNING)
    assert finding.suggestions[0].data == "v=DMARC1; p=quarantine"


async def test_external_report_destination_needs_authorisation(
    dns_server: DnsTestServer, store: Path
) -> None:
    zone = good_zone(store, dmarc_rua="agg@reports.example.net")
    report = await doctor(dns_server, zone, store)
    finding = one(report, "dmarc.report", Severity.WARNING)
    (suggestion,) = finding.suggestions
    assert suggestion.bind == f'{DOMAIN}._report._dmarc.reports.example.net. 3600 IN TXT "v=DMARC1"'
    assert suggestion.tinydns == f"'{DOMAIN}._report._dmarc.reports.example.net:v=DMARC1:3600"

    zone += f'{DOMAIN}._report._dmarc.reports.example.net. 3600 IN TXT "v=DMARC1"\n'
    report = await doctor(dns_server, zone, store)
    assert "authorises reports" in one(report, "dmarc.report", Severity.OK).message
    assert report.exit_code == 0


async def test_testing_and_garbage_policies(dns_server: DnsTestServer, store: Path) -> None:
    zone = replace_txt(good_zone(store), f"_domainkey.{DOMAIN}", "o=-; t=y")
    zone = replace_txt(zone, f"_adsp._domainkey.{DOMAIN}", "dkim=maybe!")
    report = await doctor(dns_server, zone, store)
    assert one(report, "domainkeys.policy", Severity.WARNING).suggestions[0].data == "o=-;"
    assert one(report, "adsp", Severity.WARNING).suggestions[0].data == "dkim=all"


# --- bad DNS -------------------------------------------------------------------------------------


async def test_domain_without_any_records(dns_server: DnsTestServer, store: Path) -> None:
    report = await doctor(dns_server, SOA, store)
    assert report.exit_code == 2
    assert one(report, "mx", Severity.ERROR).message == (
        f"{DOMAIN} has no MX record and no address: nobody can send mail to it"
    )
    assert one(report, "spf.record", Severity.ERROR).suggestions[0].data == f"v=spf1 ip4:{SERVER_IP} ~all"
    assert len([f for f in of(report, "dkim.record") if f.severity is Severity.ERROR]) == 2
    assert one(report, "dmarc.record", Severity.WARNING)
    assert one(report, "ptr", Severity.ERROR)


async def test_nonexistent_domain(dns_server: DnsTestServer, store: Path) -> None:
    report = await doctor(dns_server, "other.example. 3600 IN A 192.0.2.1\n", store)
    (finding,) = report.findings
    assert finding.check == "domain" and finding.severity is Severity.ERROR
    assert "does not exist" in finding.message
    assert [s.bind for s in finding.suggestions] == [bind_line(r) for r in planned(store)]


async def test_dns_timeout_for_the_whole_domain(dns_server: DnsTestServer, store: Path) -> None:
    dns_server.drop(DOMAIN)
    report = await doctor(dns_server, good_zone(store), store)
    (finding,) = report.findings
    assert finding.check == "dns" and "timeout" in finding.message
    assert report.exit_code == 2


async def test_dns_timeout_for_one_record(dns_server: DnsTestServer, store: Path) -> None:
    dns_server.drop(f"_dmarc.{DOMAIN}")
    dns_server.servfail(f"ed2024._domainkey.{DOMAIN}")
    report = await doctor(dns_server, good_zone(store), store)
    assert problems(report) == [("dkim.record", Severity.ERROR), ("dmarc", Severity.ERROR)]
    assert "DNS timeout looking up _dmarc.example.com TXT" in one(report, "dmarc", Severity.ERROR).message
    assert "DNS servfail" in one(report, "dkim.record", Severity.ERROR).message


async def test_a_name_that_times_out_is_asked_once_per_run(dns_server: DnsTestServer, store: Path) -> None:
    """The domain's TXT records are wanted by the first probe, the SPF check and check_host(): one
    query, one timeout, for all of them."""
    dns_server.drop(DOMAIN, "TXT")
    report = await doctor(dns_server, good_zone(store), store)
    assert problems(report) == [("spf", Severity.ERROR)], render_text(report)
    assert dns_server.count(DOMAIN, "TXT") == 1


async def test_garbage_txt_everywhere_never_raises(dns_server: DnsTestServer, store: Path) -> None:
    garbage = '"\\000\\001\\255\\"; v=spf1 =; v=DMARC1 p"'
    zone = SOA + "".join(
        f"{name}. 3600 IN TXT {garbage}\n"
        for name in (
            DOMAIN,
            f"_dmarc.{DOMAIN}",
            f"_domainkey.{DOMAIN}",
            f"_adsp._domainkey.{DOMAIN}",
            f"s2024._domainkey.{DOMAIN}",
            f"ed2024._domainkey.{DOMAIN}",
        )
    )
    zone += f"{DOMAIN}. 3600 IN MX 10 {MAIL_HOST}.\n{MAIL_HOST}. 3600 IN A {SERVER_IP}\n{PTR}"
    report = await doctor(dns_server, zone, store)
    assert report.exit_code == 2
    text = render_text(report)
    assert "\x00" not in text and "\\x00" in text
    assert render_json(report)


# --- count_lookups -------------------------------------------------------------------------------


async def test_count_lookups_follows_includes_and_redirects(dns_server: DnsTestServer) -> None:
    dns_server.load_zone(
        'a.example. 3600 IN TXT "v=spf1 mx a:%{d}.x.example include:b.example redirect=c.example"\n'
        'b.example. 3600 IN TXT "v=spf1 exists:b.example ptr include:a.example ?all"\n'
        'c.example. 3600 IN TXT "v=spf1 -all"\n'
        "a.example. 3600 IN MX 10 mx.a.example.\n"
    )
    count = await count_lookups(LiveResolver([dns_server.address], timeout=TIMEOUT), "a.example")
    assert count.dns_terms == 7  # mx, a, include, exists, ptr, include (loop), redirect
    assert [domain for domain, _ in count.records] == ["a.example", "b.example", "c.example"]
    assert count.unexpanded == ("a.example: a:%{d}.x.example",)
    assert count.void_terms == ("b.example: exists:b.example",)
    assert count.problems == ("include loop through a.example",)
