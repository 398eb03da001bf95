"""The offline resolvers: StaticResolver and the BIND zone-file reader built on it."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import pytest

from mailtoaster.dns import (
    MX,
    DnsStatus,
    Resolver,
    RRType,
    StaticResolver,
    ZoneFileError,
    load_zone_file,
    parse_zone_text,
)
from mailtoaster.dns.static import MAX_CNAME_CHAIN

ZONE = """
; several unrelated domains in one file, absolute names
example.com.            3600 IN SOA  ns.example.com. hostmaster.example.com. 1 3600 600 86400 300
example.com.            300  IN A    192.0.2.1
example.com.            300  IN AAAA 2001:db8::1
example.com.            300  IN MX   10 mail.example.com.
example.com.            300  IN TXT  "v=spf1 " "ip4:192.0.2.0/24" " -all"
example.com.            300  IN TXT  "other"
mail.example.com.       300  IN A    192.0.2.25
www.example.com.        300  IN CNAME example.com.
alias.example.com.      300  IN CNAME www.example.com.
dangling.example.com.   300  IN CNAME missing.example.com.
a.b.c.example.com.      300  IN A    192.0.2.99
example.org.            3600 IN SOA  ns.example.org. hostmaster.example.org. 1 3600 600 86400 300
example.org.            300  IN MX   0 .
example.org.            300  IN SPF  "v=spf1 -all"
1.2.0.192.in-addr.arpa. 300  IN PTR  example.com.

$ORIGIN example.net.
$TTL 600
@                       IN A     198.51.100.1
host                    IN A     198.51.100.2
                        IN TXT   "same owner as the line above"
loop1                   IN CNAME loop2
loop2                   IN CNAME loop1
"""


@pytest.fixture
def zone() -> StaticResolver:
    return parse_zone_text(ZONE, "test.zone")


def test_is_a_resolver(zone: StaticResolver) -> None:
    assert isinstance(zone, Resolver)


@pytest.mark.parametrize(
    "name, rrtype, expected",
    [
        ("example.com", RRType.A, (ipaddress.IPv4Address("192.0.2.1"),)),
        ("example.com", RRType.AAAA, (ipaddress.IPv6Address("2001:db8::1"),)),
        ("example.com", RRType.MX, (MX(10, "mail.example.com"),)),
        ("example.org", RRType.MX, (MX(0, ""),)),
        ("example.org", RRType.SPF, ((b"v=spf1 -all",),)),
        ("1.2.0.192.in-addr.arpa", RRType.PTR, ("example.com",)),
        ("www.example.com", RRType.CNAME, ("example.com",)),
        ("example.net", RRType.A, (ipaddress.IPv4Address("198.51.100.1"),)),
        ("host.example.net", RRType.TXT, ((b"same owner as the line above",),)),
        ("EXAMPLE.COM.", RRType.A, (ipaddress.IPv4Address("192.0.2.1"),)),
    ],
)
async def test_records(zone: StaticResolver, name: str, rrtype: RRType, expected: tuple[object, ...]) -> None:
    answer = await zone.lookup(name, rrtype)
    assert answer.status is DnsStatus.NOERROR
    assert answer.name == name
    assert answer.records == expected


async def test_multi_string_txt(zone: StaticResolver) -> None:
    answer = await zone.lookup("example.com", RRType.TXT)
    assert set(answer.records) == {(b"v=spf1 ", b"ip4:192.0.2.0/24", b" -all"), (b"other",)}
    assert sorted(answer.texts()) == [b"other", b"v=spf1 ip4:192.0.2.0/24 -all"]


async def test_cname_followed(zone: StaticResolver) -> None:
    answer = await zone.lookup("alias.example.com", RRType.A)
    assert answer.name == "alias.example.com"
    assert answer.addresses() == [ipaddress.IPv4Address("192.0.2.1")]


async def test_cname_to_missing_name_is_nxdomain(zone: StaticResolver) -> None:
    assert (await zone.lookup("dangling.example.com", RRType.A)).status is DnsStatus.NXDOMAIN


async def test_cname_loop_is_servfail(zone: StaticResolver) -> None:
    answer = await zone.lookup("loop1.example.net", RRType.A)
    assert answer.status is DnsStatus.SERVFAIL
    assert "loop1.example.net" in answer.detail


async def test_cname_chain_too_long_is_servfail() -> None:
    resolver = StaticResolver()
    for i in range(MAX_CNAME_CHAIN + 1):
        resolver.add(f"n{i}.test", RRType.CNAME, f"n{i + 1}.test")
    resolver.add(f"n{MAX_CNAME_CHAIN + 1}.test", RRType.A, ipaddress.IPv4Address("192.0.2.1"))
    assert (await resolver.lookup("n0.test", RRType.A)).status is DnsStatus.SERVFAIL
    assert (await resolver.lookup("n1.test", RRType.A)).ok


@pytest.mark.parametrize(
    "name, rrtype, status",
    [
        ("mail.example.com", RRType.TXT, DnsStatus.NODATA),
        ("b.c.example.com", RRType.A, DnsStatus.NODATA),  # empty non-terminal
        ("c.example.com", RRType.TXT, DnsStatus.NODATA),
        ("nothing.example.com", RRType.A, DnsStatus.NXDOMAIN),
        ("x.a.b.c.example.com", RRType.A, DnsStatus.NXDOMAIN),
        ("example.invalid", RRType.A, DnsStatus.NXDOMAIN),
    ],
)
async def test_negative_answers(zone: StaticResolver, name: str, rrtype: RRType, status: DnsStatus) -> None:
    answer = await zone.lookup(name, rrtype)
    assert answer.status is status
    assert answer.records == ()


async def test_empty_non_terminals_can_be_switched_off() -> None:
    records = {("a.b.test", RRType.A): [ipaddress.IPv4Address("192.0.2.1")]}
    resolver = StaticResolver(records, empty_non_terminals=False)
    assert (await resolver.lookup("b.test", RRType.A)).status is DnsStatus.NXDOMAIN


async def test_soa_records_at_several_apexes_are_accepted() -> None:
    """A real zone file starts with an SOA at its origin; dnspython alone would refuse one not at '.'."""
    resolver = parse_zone_text(
        "$ORIGIN example.com.\n@ 3600 IN SOA ns hostmaster 1 3600 600 86400 300\n@ 3600 IN A 192.0.2.1\n"
    )
    assert (await resolver.lookup("example.com", RRType.A)).ok


# -- StaticResolver timeouts -------------------------------------------------------------------------


async def test_static_timeouts() -> None:
    resolver = StaticResolver(
        {("slow.test", RRType.A): [ipaddress.IPv4Address("192.0.2.1")]},
        timeouts={"slow.test": [RRType.A], "dead.test": []},
    )
    assert (await resolver.lookup("slow.test", RRType.A)).ok
    answer = await resolver.lookup("SLOW.test.", RRType.TXT)
    assert answer.status is DnsStatus.TIMEOUT
    assert answer.status.is_temporary_error
    assert "slow.test" in answer.detail
    assert (await resolver.lookup("dead.test", RRType.MX)).status is DnsStatus.TIMEOUT
    assert (await resolver.lookup("sub.dead.test", RRType.MX)).status is DnsStatus.NXDOMAIN


async def test_timeout_reached_through_cname() -> None:
    resolver = StaticResolver({("alias.test", RRType.CNAME): ["slow.test"]})
    resolver.add_timeout("slow.test")
    assert (await resolver.lookup("alias.test", RRType.A)).status is DnsStatus.TIMEOUT


# -- files and errors -----------------------------------------------------------------------------


async def test_load_zone_file(tmp_path: Path) -> None:
    path = tmp_path / "records.zone"
    path.write_text(ZONE, encoding="utf-8")
    resolver = load_zone_file(path)
    assert (await resolver.lookup("mail.example.com", RRType.A)).ok
    assert (await load_zone_file(str(path)).lookup("mail.example.com", RRType.A)).ok


@pytest.mark.parametrize(
    "text, problem",
    [
        ("example.com. 300 IN A 999.1.1.1\n", "malformed"),
        ("example.com. 300 IN BOGUS 1\n", "BOGUS"),
        ("\nexample.com. 300 IN A\n", "identifier"),
        ("example.com. IN A 192.0.2.1\n", "TTL"),
        ("a..example.com. 300 IN A 192.0.2.1\n", "empty"),
        ("$INCLUDE /etc/passwd\n", "$INCLUDE"),
        ("x.test. 300 IN CNAME y.test.\nx.test. 300 IN A 192.0.2.1\n", "CNAME"),
    ],
)
def test_syntax_errors_name_the_file(tmp_path: Path, text: str, problem: str) -> None:
    path = tmp_path / "broken.zone"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ZoneFileError) as info:
        load_zone_file(path)
    message = str(info.value)
    assert message.startswith(f"{path}:")
    assert message.count(str(path)) == 1
    assert problem in message
    assert "\n" not in message


def test_parse_zone_text_names_its_source() -> None:
    # (dnspython counts the line after reading its end, so the number can be one past the culprit.)
    with pytest.raises(ZoneFileError, match=r"^records\.txt:\d+: "):
        parse_zone_text("x. 300 IN A nonsense\n", "records.txt")


@pytest.mark.parametrize("kind", ["missing", "directory", "not utf-8"])
def test_unreadable_file(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "zone"
    if kind == "directory":
        path.mkdir()
    elif kind == "not utf-8":
        path.write_bytes(b'x. 300 IN TXT "\xff"\n')
    with pytest.raises(ZoneFileError, match=r"^cannot read zone file") as info:
        load_zone_file(path)
    assert str(path) in str(info.value)


def test_zone_file_error_is_a_value_error() -> None:
    assert issubclass(ZoneFileError, ValueError)
