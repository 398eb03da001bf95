"""The records a domain publishes, and both writers read back by independent parsers."""

from __future__ import annotations

import base64
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path

import dns.name
import dns.rdataclass
import dns.rdatatype
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mailtoaster.dns import MX, RRType, parse_zone_text
from mailtoaster.keys import KeyType, StoredKey, create_key, generate_private_key, list_keys, write_key
from mailtoaster.records import (
    DnsRecord,
    compute_records,
    dmarc_text,
    format_bind,
    format_tinydns,
    make_plan,
    sender_id_text,
    spf_text,
    tinydns_escape,
    tinydns_line,
)


@pytest.fixture(scope="module")
def big_rsa_key() -> rsa.RSAPrivateKey:
    key = generate_private_key(KeyType.RSA, 4096)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture
def store(tmp_path: Path, big_rsa_key: rsa.RSAPrivateKey) -> Path:
    """A key store with a 4096-bit RSA key (record > 255 octets) and an Ed25519 key for sample.com."""
    write_key(tmp_path, "sample.com", "big", big_rsa_key)
    create_key(tmp_path, "sample.com", "ed", key_type=KeyType.ED25519)
    return tmp_path


def all_records(store: Path, **options: object) -> list[DnsRecord]:
    plan = make_plan(
        "sample.com",
        ips=["69.36.226.12", "2001:db8::25"],
        sender_id=True,
        dmarc_rua="reports@sample.com",
        **options,  # type: ignore[arg-type]
    )
    return compute_records(plan, list_keys(store, "sample.com"))


# --- an independent tinydns-data reader ----------------------------------------------------------------


@dataclass(frozen=True)
class TinyLine:
    kind: str
    fields: list[bytes]


def tinydns_unescape(field: str) -> bytes:
    """Decode a field as tinydns-data does: ``\\`` then up to three octal digits is one octet,
    ``\\`` then any other character is that character."""
    out = bytearray()
    i = 0
    raw = field.encode("latin-1")
    while i < len(raw):
        if raw[i] == 0x5C and i + 1 < len(raw):
            digits = re.match(rb"[0-7]{1,3}", raw[i + 1 : i + 4])
            if digits:
                out.append(int(digits.group(), 8) & 0xFF)
                i += 1 + len(digits.group())
            else:
                out.append(raw[i + 1])
                i += 2
        else:
            out.append(raw[i])
            i += 1
    return bytes(out)


def read_tinydns(text: str) -> list[TinyLine]:
    lines = []
    for line in text.splitlines():
        line = line.rstrip(" \t")
        if not line or line.startswith("#"):
            continue
        assert line.isascii(), line
        lines.append(TinyLine(line[0], [tinydns_unescape(f) for f in line[1:].split(":")]))
    return lines


def tiny_to_record(line: TinyLine) -> tuple[str, RRType, int, object]:
    """(name, type, ttl, data) in the same terms as :class:`DnsRecord`."""
    name = line.fields[0].decode().rstrip(".")
    if line.kind == "'":
        _, text, ttl = line.fields
        return name, RRType.TXT, int(ttl), text.decode("utf-8")
    if line.kind == "+":
        _, ip, ttl = line.fields
        return name, RRType.A, int(ttl), ipaddress.ip_address(ip.decode())
    if line.kind == "@":
        _, ip, host, dist, ttl = line.fields
        assert ip == b"" and b"." in host  # a dotted x is the exchanger's own name
        return name, RRType.MX, int(ttl), MX(int(dist), host.decode())
    if line.kind == ":":
        _, rrtype, rdata, ttl = line.fields
        assert rrtype == b"28" and len(rdata) == 16
        return name, RRType.AAAA, int(ttl), ipaddress.IPv6Address(rdata)
    raise AssertionError(f"unexpected line type {line.kind!r}")


def as_tuple(record: DnsRecord) -> tuple[str, RRType, int, object]:
    return record.name, record.rrtype, record.ttl, record.data


# --- what is published ---------------------------------------------------------------------------------


def test_spf_lists_addresses_without_mx_by_default() -> None:
    plan = make_plan("sample.com", ips=["69.36.226.12", "2001:DB8::25", "69.36.226.12"])
    assert spf_text(plan) == "v=spf1 ip4:69.36.226.12 ip6:2001:db8::25 ~all"


def test_spf_lists_ip4_before_ip6_whatever_the_order_given() -> None:
    """docs/keys-and-records.md: the order is mx, ip4:, ip6:, include:, then all."""
    plan = make_plan("sample.com", ips=["2001:db8::25", "192.0.2.25", "2001:db8::26", "192.0.2.26"])
    assert spf_text(plan) == "v=spf1 ip4:192.0.2.25 ip4:192.0.2.26 ip6:2001:db8::25 ip6:2001:db8::26 ~all"


def test_spf_uses_mx_when_no_address_is_known() -> None:
    assert spf_text(make_plan("sample.com")) == "v=spf1 mx ~all"
    assert spf_text(make_plan("sample.com", ips=["192.0.2.1"], spf_mx=True)) == "v=spf1 mx ip4:192.0.2.1 ~all"
    assert spf_text(make_plan("sample.com", spf_mx=False, includes=["x.net"])) == "v=spf1 include:x.net ~all"


def test_spf_includes_and_fail() -> None:
    plan = make_plan(
        "sample.com", ips=["192.0.2.1"], includes=["_spf.Google.com", "relay.example.net"], spf_all="fail"
    )
    assert spf_text(plan) == "v=spf1 ip4:192.0.2.1 include:_spf.google.com include:relay.example.net -all"
    assert sender_id_text(plan) == (
        "spf2.0/mfrom,pra ip4:192.0.2.1 include:_spf.google.com include:relay.example.net -all"
    )


def test_spf_lookup_limit_is_enforced() -> None:
    make_plan("sample.com", includes=[f"i{n}.example.net" for n in range(9)])  # 9 + mx = 10
    with pytest.raises(ValueError, match="RFC 7208"):
        make_plan("sample.com", includes=[f"i{n}.example.net" for n in range(10)])


def test_dmarc_policy_and_reports() -> None:
    assert dmarc_text(make_plan("sample.com")) == "v=DMARC1; p=quarantine"
    plan = make_plan("sample.com", dmarc_policy="reject", dmarc_rua="Dmarc+x@Reports.Example.net")
    assert dmarc_text(plan) == "v=DMARC1; p=reject; rua=mailto:Dmarc+x@reports.example.net"


def test_dmarc_report_address_is_percent_encoded_in_the_uri() -> None:
    """RFC 6068 §2: a "%" of the address must be written %25 in a mailto: URI."""
    plan = make_plan("sample.com", dmarc_rua="ops%dept@reports.example.net")
    assert plan.dmarc_rua == "ops%dept@reports.example.net"
    assert dmarc_text(plan) == "v=DMARC1; p=quarantine; rua=mailto:ops%25dept@reports.example.net"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"ips": ["192.0.2.300"]}, "invalid IP address"),
        ({"ips": ["192.0.2.0/24"]}, "invalid IP address"),
        ({"ips": ["fe80::25%eth0"]}, "invalid IP address"),
        ({"includes": ["bad..name"]}, "invalid include domain"),
        ({"dmarc_rua": "no-at-sign"}, "invalid report address"),
        ({"dmarc_rua": "a,b@example.com"}, "invalid report address"),
        ({"dmarc_rua": "a\n@example.com"}, "invalid report address"),
        ({"includes": ["_spf\n.example.net"]}, "invalid include domain"),
        ({"mx_host": "mail"}, "invalid mail host"),
        ({"ttl": -1}, "invalid TTL"),
        ({"ttl": 2**31}, "invalid TTL"),
        ({"spf_all": "neutral"}, "choose one of softfail, fail"),
        ({"dmarc_policy": "monitor"}, "invalid DMARC policy"),
    ],
)
def test_bad_plan_inputs(options: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        make_plan("sample.com", **options)  # type: ignore[arg-type]


def test_every_record_is_computed(store: Path) -> None:
    records = all_records(store, mx_host="mx1.sample.net", ttl=600)
    keys = {k.selector: k for k in list_keys(store, "sample.com")}
    assert [as_tuple(r) for r in records] == [
        ("sample.com", RRType.MX, 600, MX(10, "mx1.sample.net")),
        ("mx1.sample.net", RRType.A, 600, ipaddress.ip_address("69.36.226.12")),
        ("mx1.sample.net", RRType.AAAA, 600, ipaddress.ip_address("2001:db8::25")),
        ("sample.com", RRType.TXT, 600, "v=spf1 ip4:69.36.226.12 ip6:2001:db8::25 ~all"),
        ("sample.com", RRType.TXT, 600, "spf2.0/mfrom,pra ip4:69.36.226.12 ip6:2001:db8::25 ~all"),
        ("_domainkey.sample.com", RRType.TXT, 600, "o=-;"),
        ("big._domainkey.sample.com", RRType.TXT, 600, keys["big"].dkim_record),
        ("ed._domainkey.sample.com", RRType.TXT, 600, keys["ed"].dkim_record),
        ("_adsp._domainkey.sample.com", RRType.TXT, 600, "dkim=all"),
        ("_dmarc.sample.com", RRType.TXT, 600, "v=DMARC1; p=quarantine; rua=mailto:reports@sample.com"),
    ]
    assert all(r.purpose for r in records)


def test_signing_policies_need_a_key(tmp_path: Path) -> None:
    records = compute_records(make_plan("sample.com", ips=["192.0.2.1"]), list_keys(tmp_path, "sample.com"))
    names = [r.name for r in records]
    assert "_domainkey.sample.com" not in names
    assert "_adsp._domainkey.sample.com" not in names
    assert "_dmarc.sample.com" in names
    assert [r.name for r in records if r.rrtype is RRType.MX] == ["sample.com"]
    assert records[0].data == MX(10, "mail.sample.com")


def test_keys_of_other_domains_are_ignored(store: Path) -> None:
    other = create_key(store, "other.org", "s1", key_type=KeyType.ED25519)
    records = compute_records(make_plan("sample.com"), [other])
    assert not any("_domainkey" in r.name for r in records)


# --- tinydns -------------------------------------------------------------------------------------------


def test_classic_spf_line_is_reproduced_exactly() -> None:
    plan = make_plan("sample.com", ips=["69.36.226.12"])
    lines = format_tinydns(compute_records(plan)).splitlines()
    assert "'sample.com:v=spf1 ip4\\07269.36.226.12 ~all:3600" in lines


def test_tinydns_escaping() -> None:
    assert tinydns_escape(b'a:b\\c d"e\x00\n\x7f\xff') == 'a\\072b\\134c d"e\\000\\012\\177\\377'
    assert tinydns_escape(b"AB", escape_all=True) == "\\101\\102"
    line = tinydns_line(DnsRecord("x.sample.com", RRType.TXT, 60, "a:b\\c\u00e9\n"))
    assert line == "'x.sample.com:a\\072b\\134c\\303\\251\\012:60"
    assert tiny_to_record(read_tinydns(line)[0]) == ("x.sample.com", RRType.TXT, 60, "a:b\\c\u00e9\n")


def test_tinydns_lines_read_back_to_the_records(store: Path) -> None:
    records = all_records(store)
    text = format_tinydns(records, "title")
    parsed = read_tinydns(text)
    assert [tiny_to_record(line) for line in parsed] == [as_tuple(r) for r in records]
    for line in text.splitlines():  # one record a line, all printable ASCII, nothing to trip a parser
        assert line.isascii() and line.isprintable()
    aaaa = [line for line in text.splitlines() if line.startswith(":")]
    assert aaaa == [":mail.sample.com:28:\\040\\001\\015\\270" + "\\000" * 11 + "\\045:3600"]
    assert "@sample.com::mail.sample.com:10:3600" in text.splitlines()
    assert "+mail.sample.com:69.36.226.12:3600" in text.splitlines()


# --- BIND ----------------------------------------------------------------------------------------------


def load_bind(text: str) -> dns.zone.Zone:
    return dns.zone.from_text(text, origin=dns.name.root, relativize=False, check_origin=False)


def bind_data(rrtype: RRType, rdata: object) -> object:
    if rrtype is RRType.TXT:
        return b"".join(rdata.strings).decode("utf-8")  # type: ignore[attr-defined]
    if rrtype is RRType.MX:
        return MX(rdata.preference, rdata.exchange.to_text(omit_final_dot=True))  # type: ignore[attr-defined]
    return ipaddress.ip_address(rdata.address)  # type: ignore[attr-defined]


def test_bind_output_round_trips_through_dnspython(store: Path) -> None:
    records = all_records(store)
    text = format_bind(records, "title")
    zone = load_bind(text)
    found = []
    for name, node in zone.nodes.items():
        for rdataset in node.rdatasets:
            assert rdataset.rdclass == dns.rdataclass.IN
            rrtype = RRType(dns.rdatatype.to_text(rdataset.rdtype))
            for rdata in rdataset:
                owner = name.to_text(omit_final_dot=True)
                found.append((owner, rrtype, rdataset.ttl, bind_data(rrtype, rdata)))
    assert sorted(map(repr, found)) == sorted(repr(as_tuple(r)) for r in records)
    assert len(found) == len(records)


def test_long_key_is_split_into_strings_of_at_most_255(store: Path, big_rsa_key: rsa.RSAPrivateKey) -> None:
    zone = load_bind(format_bind(all_records(store)))
    rdataset = zone.find_rdataset("big._domainkey.sample.com.", "TXT")
    (rdata,) = list(rdataset)
    strings = rdata.strings
    assert len(strings) >= 3  # a 4096-bit key's record is about 750 octets
    assert all(len(s) <= 255 for s in strings)
    p = b"".join(strings).decode().split("p=", 1)[1]
    public = serialization.load_der_public_key(base64.b64decode(p))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == big_rsa_key.public_key().public_numbers()


@pytest.mark.parametrize(
    "text", ['say "hi" \\ there', "caf\u00e9 \t\x01", "", "x" * 255, "y" * 256, "z" * 1000]
)
def test_bind_txt_escaping_round_trips(text: str) -> None:
    record = DnsRecord("t.sample.com", RRType.TXT, 300, text)
    zone = load_bind(format_bind([record]))
    (rdata,) = list(zone.find_rdataset("t.sample.com.", "TXT"))
    assert b"".join(rdata.strings) == text.encode("utf-8")
    assert all(len(s) <= 255 for s in rdata.strings)


async def test_zone_resolver_finds_the_key_on_disk(store: Path) -> None:
    """What ``verify`` will do: read the published zone, look the selector up, get the stored key."""
    resolver = parse_zone_text(format_bind(all_records(store)))
    for stored in list_keys(store, "sample.com"):
        answer = await resolver.lookup(f"{stored.selector}._domainkey.sample.com", RRType.TXT)
        assert answer.ok
        (text,) = answer.texts()
        p = dict(part.strip().split("=", 1) for part in text.decode().split(";") if part.strip())["p"]
        assert base64.b64decode(p) == expected_p(stored)
    spf = await resolver.lookup("sample.com", RRType.TXT)
    assert b"v=spf1 ip4:69.36.226.12 ip6:2001:db8::25 ~all" in spf.texts()
    mx = await resolver.lookup("sample.com", RRType.MX)
    assert mx.mx_records() == [MX(10, "mail.sample.com")]
    address = await resolver.lookup("mail.sample.com", RRType.AAAA)
    assert address.addresses() == [ipaddress.ip_address("2001:db8::25")]


def expected_p(stored: StoredKey) -> bytes:
    public = stored.private_key.public_key()
    if isinstance(public, rsa.RSAPublicKey):
        spki = serialization.PublicFormat.SubjectPublicKeyInfo
        return public.public_bytes(serialization.Encoding.DER, spki)
    return public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
