"""LiveResolver against the loopback test DNS server (tests/dnsserver.py): real packets, no internet."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import math
import socket
import time
from pathlib import Path

import pytest

from mailtoaster.cli.common import CliError, add_dns_options, resolver_from_args
from mailtoaster.dns import MX, DnsStatus, Resolver, RRType, StaticResolver
from mailtoaster.dns.live import (
    DEFAULT_NEGATIVE_TTL,
    MAX_NEGATIVE_TTL,
    MAX_POSITIVE_TTL,
    LiveResolver,
    ResolverConfigError,
    parse_nameserver,
)
from tests.dnsserver import DnsTestServer

ZONE = """
$TTL 300
example.com.        IN SOA   ns.example.com. hostmaster.example.com. 1 3600 600 86400 30
example.com.        IN A     192.0.2.1
example.com.        IN A     192.0.2.2
example.com.        IN AAAA  2001:db8::1
example.com.        IN MX    10 mail.example.com.
example.com.        IN MX    20 backup.example.net.
example.com.        IN TXT   "v=spf1 " "ip4:192.0.2.0/24" " -all"
example.com.        IN TXT   "second record"
mail.example.com.   IN A     192.0.2.25
null.example.com.   IN MX    0 .
www.example.com. 60 IN CNAME example.com.
chain.example.com.  IN CNAME www.example.com.
dangling.example.com. IN CNAME missing.example.com.
host.deep.example.com. IN A  192.0.2.30
xn--bcher-kva.example.com. IN A 192.0.2.40
1.2.0.192.in-addr.arpa. IN PTR example.com.
nosoa.test.         IN A     192.0.2.50
"""


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


@pytest.fixture
def server(dns_server: DnsTestServer) -> DnsTestServer:
    dns_server.load_zone(ZONE)
    return dns_server


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def resolver(server: DnsTestServer, clock: FakeClock) -> LiveResolver:
    return LiveResolver([server.address], timeout=2.0, clock=clock)


def txt_record(owner: str, strings: int, length: int = 250) -> str:
    parts = " ".join(f'"{chr(ord("a") + i % 26) * length}"' for i in range(strings))
    return f"{owner} 300 IN TXT {parts}\n"


# -- record types -------------------------------------------------------------------------------


def test_is_a_resolver(resolver: LiveResolver) -> None:
    assert isinstance(resolver, Resolver)


async def test_a(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("example.com", RRType.A)
    assert answer.status is DnsStatus.NOERROR
    assert answer.name == "example.com"
    assert sorted(answer.addresses()) == [
        ipaddress.IPv4Address("192.0.2.1"),
        ipaddress.IPv4Address("192.0.2.2"),
    ]
    assert answer.ttl == 300


async def test_aaaa(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("example.com.", RRType.AAAA)
    assert answer.records == (ipaddress.IPv6Address("2001:db8::1"),)


async def test_mx(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("example.com", RRType.MX)
    assert sorted(answer.mx_records(), key=lambda mx: mx.preference) == [
        MX(10, "mail.example.com"),
        MX(20, "backup.example.net"),
    ]


async def test_null_mx_has_empty_exchange(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("null.example.com", RRType.MX)
    assert answer.records == (MX(0, ""),)


async def test_txt_keeps_character_strings(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("example.com", RRType.TXT)
    assert set(answer.records) == {(b"v=spf1 ", b"ip4:192.0.2.0/24", b" -all"), (b"second record",)}
    assert sorted(answer.texts()) == [b"second record", b"v=spf1 ip4:192.0.2.0/24 -all"]


async def test_txt_too_big_for_udp_falls_back_to_tcp(server: DnsTestServer, resolver: LiveResolver) -> None:
    server.load_zone(ZONE + txt_record("big.example.com.", strings=8))  # ~2 KB: beyond any UDP buffer
    answer = await resolver.lookup("big.example.com", RRType.TXT)
    assert answer.ok
    assert len(answer.texts()[0]) == 8 * 250
    assert server.count("big.example.com", "TXT", transport="udp") == 1
    assert server.count("big.example.com", "TXT", transport="tcp") == 1


async def test_truncated_udp_answer_is_retried_over_tcp(
    server: DnsTestServer, resolver: LiveResolver
) -> None:
    server.load_zone(ZONE + txt_record("long.example.com.", strings=3))  # >512 bytes, fits EDNS UDP
    server.truncate("long.example.com")
    answer = await resolver.lookup("long.example.com", RRType.TXT)
    record = answer.records[0]
    assert isinstance(record, tuple)
    assert [len(s) for s in record] == [250, 250, 250]
    assert server.count(transport="tcp") == 1


async def test_ptr(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("1.2.0.192.in-addr.arpa", RRType.PTR)
    assert answer.names() == ["example.com"]


async def test_cname_followed_and_name_kept(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("chain.example.com", RRType.A)
    assert answer.name == "chain.example.com"
    assert len(answer.addresses()) == 2
    assert answer.ttl == 60  # the shortest TTL along the chain


async def test_cname_asked_for_itself(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("www.example.com", RRType.CNAME)
    assert answer.names() == ["example.com"]


async def test_cname_to_nothing_is_nxdomain(resolver: LiveResolver) -> None:
    assert (await resolver.lookup("dangling.example.com", RRType.A)).status is DnsStatus.NXDOMAIN


async def test_cname_loop_is_servfail(server: DnsTestServer, resolver: LiveResolver) -> None:
    server.load_zone("a.loop.test. 300 IN CNAME b.loop.test.\nb.loop.test. 300 IN CNAME a.loop.test.\n")
    answer = await resolver.lookup("a.loop.test", RRType.A)
    assert answer.status is DnsStatus.SERVFAIL


async def test_many_lookups_at_once(resolver: LiveResolver) -> None:
    names = ["example.com", "mail.example.com", "www.example.com", "missing.example.com"] * 5
    answers = await asyncio.gather(*(resolver.lookup(name, RRType.A) for name in names))
    assert [a.name for a in answers] == names
    assert {a.status for a in answers} == {DnsStatus.NOERROR, DnsStatus.NXDOMAIN}


# -- statuses kept apart ---------------------------------------------------------------------------


async def test_nxdomain(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("nothing.example.com", RRType.A)
    assert answer.status is DnsStatus.NXDOMAIN
    assert answer.ttl == 30  # min(SOA TTL 300, SOA MINIMUM 30)


async def test_nodata(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("mail.example.com", RRType.TXT)
    assert answer.status is DnsStatus.NODATA
    assert answer.records == ()


async def test_empty_non_terminal_is_nodata(resolver: LiveResolver) -> None:
    assert (await resolver.lookup("deep.example.com", RRType.A)).status is DnsStatus.NODATA


@pytest.mark.parametrize("fault, rcode", [("servfail", "SERVFAIL"), ("refuse", "REFUSED")])
async def test_server_failure_is_servfail_with_detail(
    server: DnsTestServer, resolver: LiveResolver, fault: str, rcode: str
) -> None:
    getattr(server, fault)("example.com")
    answer = await resolver.lookup("example.com", RRType.A)
    assert answer.status is DnsStatus.SERVFAIL
    assert rcode in answer.detail
    assert f"127.0.0.1@{server.port}" in answer.detail


async def test_timeout_returns_within_bound(server: DnsTestServer) -> None:
    server.drop("example.com")
    resolver = LiveResolver([server.address], timeout=0.5)
    started = time.monotonic()
    answer = await resolver.lookup("example.com", RRType.A)
    elapsed = time.monotonic() - started
    assert answer.status is DnsStatus.TIMEOUT
    assert "0.5 s" in answer.detail
    assert elapsed < 3  # a correctness bound (no hang), not a benchmark
    assert server.count("example.com") >= 1


async def test_fault_for_one_type_only(server: DnsTestServer) -> None:
    server.drop("example.com", "TXT")
    resolver = LiveResolver([server.address], timeout=0.3)
    assert (await resolver.lookup("example.com", RRType.A)).ok
    assert (await resolver.lookup("example.com", RRType.TXT)).status is DnsStatus.TIMEOUT


async def test_nothing_listening_is_a_temporary_error() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    answer = await LiveResolver([("127.0.0.1", port)], timeout=0.5).lookup("example.com", RRType.A)
    assert answer.status.is_temporary_error


async def test_second_nameserver_used_when_first_fails(server: DnsTestServer) -> None:
    with DnsTestServer(ZONE) as broken:
        broken.refuse("example.com")
        resolver = LiveResolver([broken.address, server.address], timeout=2)
        answer = await resolver.lookup("example.com", RRType.A)
    assert answer.ok
    assert broken.count() == 1


# -- names ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, reason",
    [
        ("a" * 64 + ".example.com", "63"),
        (".".join(["abcdefghi"] * 26) + ".com", "255"),
        ("a..example.com", "empty label"),
        (".example.com", "empty label"),
    ],
)
async def test_malformed_names_are_nxdomain_without_a_query(
    server: DnsTestServer, resolver: LiveResolver, name: str, reason: str
) -> None:
    answer = await resolver.lookup(name, RRType.TXT)
    assert answer.status is DnsStatus.NXDOMAIN
    assert reason in answer.detail
    assert answer.name == name
    assert server.count() == 0


async def test_non_ascii_name_is_idna_encoded(server: DnsTestServer, resolver: LiveResolver) -> None:
    answer = await resolver.lookup("Bücher.example.com", RRType.A)
    assert answer.addresses() == [ipaddress.IPv4Address("192.0.2.40")]
    assert server.queries[0].name == "xn--bcher-kva.example.com"


async def test_unencodable_name_is_nxdomain(resolver: LiveResolver) -> None:
    answer = await resolver.lookup("\ufffd\ud800.example.com", RRType.A)
    assert answer.status is DnsStatus.NXDOMAIN
    assert "IDNA" in answer.detail


async def test_name_is_taken_literally(server: DnsTestServer, resolver: LiveResolver) -> None:
    """A backslash is a character of the name, not a master-file escape."""
    await resolver.lookup("a\\065.example.com", RRType.A)
    assert server.queries[0].name == "a\\\\065.example.com"  # dnspython's text form escapes it


# -- cache ----------------------------------------------------------------------------------------


async def test_second_lookup_served_from_cache(server: DnsTestServer, resolver: LiveResolver) -> None:
    first = await resolver.lookup("example.com", RRType.A)
    second = await resolver.lookup("EXAMPLE.com.", RRType.A)
    assert server.count() == 1
    assert second.records == first.records
    assert second.name == "EXAMPLE.com."


async def test_cache_keys_on_type(server: DnsTestServer, resolver: LiveResolver) -> None:
    await resolver.lookup("example.com", RRType.A)
    await resolver.lookup("example.com", RRType.AAAA)
    assert server.count() == 2


async def test_cache_expires_after_ttl(
    server: DnsTestServer, resolver: LiveResolver, clock: FakeClock
) -> None:
    await resolver.lookup("example.com", RRType.A)
    clock.advance(200)
    cached = await resolver.lookup("example.com", RRType.A)
    assert cached.ttl == 100
    assert server.count() == 1
    clock.advance(101)
    fresh = await resolver.lookup("example.com", RRType.A)
    assert fresh.ttl == 300
    assert server.count() == 2


async def test_cname_chain_cached_for_shortest_ttl(
    server: DnsTestServer, resolver: LiveResolver, clock: FakeClock
) -> None:
    await resolver.lookup("www.example.com", RRType.A)
    clock.advance(61)
    await resolver.lookup("www.example.com", RRType.A)
    assert server.count() == 2


@pytest.mark.parametrize(
    "name, rrtype",
    [("nothing.example.com", RRType.A), ("mail.example.com", RRType.TXT)],
    ids=["nxdomain", "nodata"],
)
async def test_negative_answers_cached_for_soa_minimum(
    server: DnsTestServer, resolver: LiveResolver, clock: FakeClock, name: str, rrtype: RRType
) -> None:
    first = await resolver.lookup(name, rrtype)
    clock.advance(29)
    second = await resolver.lookup(name, rrtype)
    assert second.status is first.status
    assert server.count() == 1
    clock.advance(2)
    await resolver.lookup(name, rrtype)
    assert server.count() == 2


async def test_negative_answer_without_soa_gets_default_ttl(
    server: DnsTestServer, resolver: LiveResolver, clock: FakeClock
) -> None:
    answer = await resolver.lookup("missing.nosoa.test", RRType.A)
    assert answer.status is DnsStatus.NXDOMAIN
    assert answer.ttl == DEFAULT_NEGATIVE_TTL
    clock.advance(DEFAULT_NEGATIVE_TTL - 1)
    await resolver.lookup("missing.nosoa.test", RRType.A)
    assert server.count() == 1
    clock.advance(2)
    await resolver.lookup("missing.nosoa.test", RRType.A)
    assert server.count() == 2


async def test_long_ttls_are_capped(server: DnsTestServer, resolver: LiveResolver, clock: FakeClock) -> None:
    server.load_zone(
        "long.test. 604800 IN SOA ns.long.test. h.long.test. 1 3600 600 86400 604800\n"
        "long.test. 604800 IN A 192.0.2.1\n"
    )
    positive = await resolver.lookup("long.test", RRType.A)
    negative = await resolver.lookup("long.test", RRType.TXT)
    assert positive.ttl == 604800  # reported as the server said
    assert negative.ttl == MAX_NEGATIVE_TTL
    clock.advance(MAX_NEGATIVE_TTL + 1)
    await resolver.lookup("long.test", RRType.TXT)
    clock.advance(MAX_POSITIVE_TTL)
    await resolver.lookup("long.test", RRType.A)
    assert server.count() == 4


@pytest.mark.parametrize("fault", ["servfail", "refuse", "drop"])
async def test_failures_are_not_cached(server: DnsTestServer, clock: FakeClock, fault: str) -> None:
    resolver = LiveResolver([server.address], timeout=0.3, clock=clock)
    getattr(server, fault)("example.com")
    await resolver.lookup("example.com", RRType.A)
    asked = server.count()
    assert not (await resolver.lookup("example.com", RRType.A)).ok
    assert server.count() > asked
    assert len(resolver.cache) == 0
    server.clear_faults()
    assert (await resolver.lookup("example.com", RRType.A)).ok


async def test_cache_evicts_least_recently_used(server: DnsTestServer, clock: FakeClock) -> None:
    resolver = LiveResolver([server.address], timeout=2, cache_size=2, clock=clock)
    for name in ("example.com", "mail.example.com", "example.com", "www.example.com"):
        await resolver.lookup(name, RRType.A)
    assert len(resolver.cache) == 2
    assert server.count() == 3
    await resolver.lookup("example.com", RRType.A)  # used recently: kept
    assert server.count() == 3
    await resolver.lookup("mail.example.com", RRType.A)  # least recently used: evicted
    assert server.count() == 4


async def test_cache_size_zero_disables_cache(server: DnsTestServer) -> None:
    resolver = LiveResolver([server.address], timeout=2, cache_size=0)
    await resolver.lookup("example.com", RRType.A)
    await resolver.lookup("example.com", RRType.A)
    assert server.count() == 2


# -- configuration ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, expected",
    [
        ("192.0.2.53", ("192.0.2.53", 53)),
        ("127.0.0.1:5353", ("127.0.0.1", 5353)),
        (" 127.0.0.1:5353 ", ("127.0.0.1", 5353)),
        ("::1", ("::1", 53)),
        ("2001:db8::53", ("2001:db8::53", 53)),
        ("[::1]:5353", ("::1", 5353)),
        ("[2001:DB8:0::53]", ("2001:db8::53", 53)),
    ],
)
def test_parse_nameserver(text: str, expected: tuple[str, int]) -> None:
    assert parse_nameserver(text) == expected


@pytest.mark.parametrize(
    "text, message",
    [
        ("", "empty"),
        ("ns.example.com", "not a host name"),
        ("ns.example.com:53", "not a host name"),
        ("127.0.0.1:", "port"),
        ("127.0.0.1:0", "port"),
        ("127.0.0.1:65536", "port"),
        ("127.0.0.1:dns", "port"),
        ("[::1]:", "port"),
        ("[::1", "[IPV6]"),
        ("[::1]x", "[IPV6]"),
        ("[127.0.0.1]:53", "IPv6"),
        ("300.1.1.1", "not a host name"),
        ("::g", "IPv6"),
    ],
)
def test_parse_nameserver_rejects(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=r"^invalid nameserver|^empty") as info:
        parse_nameserver(text)
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_system_configuration(tmp_path: Path) -> None:
    conf = tmp_path / "resolv.conf"
    conf.write_text("nameserver 192.0.2.53\nnameserver 2001:db8::53\noptions timeout:9\n")
    resolver = LiveResolver(resolv_conf=str(conf), timeout=1)
    assert resolver.nameservers == (("192.0.2.53", 53), ("2001:db8::53", 53))


@pytest.mark.parametrize("content", [None, "# no nameserver here\n"], ids=["missing", "empty"])
def test_unusable_system_configuration(tmp_path: Path, content: str | None) -> None:
    conf = tmp_path / "resolv.conf"
    if content is not None:
        conf.write_text(content)
    with pytest.raises(ResolverConfigError, match="--nameserver") as info:
        LiveResolver(resolv_conf=str(conf))
    assert str(conf) in str(info.value)


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="no nameservers"):
        LiveResolver([])
    with pytest.raises(ValueError, match="positive"):
        LiveResolver([("127.0.0.1", 53)], timeout=0)


@pytest.mark.parametrize("timeout", [math.nan, math.inf])
def test_timeout_must_be_a_finite_bound(timeout: float) -> None:
    """NaN is no bound at all, and infinity lets a lookup of a silent server run for ever."""
    with pytest.raises(ValueError, match="positive"):
        LiveResolver([("127.0.0.1", 53)], timeout=timeout)


async def test_ipv6_server() -> None:
    try:
        server = DnsTestServer(ZONE, host="::1").start()
    except OSError:
        pytest.skip("no IPv6 loopback")
    with server:
        resolver = LiveResolver([parse_nameserver(server.nameserver_arg)], timeout=2)
        answer = await resolver.lookup("example.com", RRType.AAAA)
    assert answer.addresses() == [ipaddress.IPv6Address("2001:db8::1")]


# -- the CLI options ---------------------------------------------------------------------------------


def parse_cli(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_dns_options(parser)
    return parser.parse_args(list(argv))


async def test_cli_nameserver_option(server: DnsTestServer) -> None:
    args = parse_cli("--nameserver", f"127.0.0.1:{server.port}", "--dns-timeout", "1.5")
    resolver = resolver_from_args(args)
    assert isinstance(resolver, LiveResolver)
    assert resolver.nameservers == (server.address,)
    assert resolver.timeout == 1.5
    assert (await resolver.lookup("mail.example.com", RRType.A)).addresses() == [
        ipaddress.IPv4Address("192.0.2.25")
    ]


def test_cli_bad_nameserver() -> None:
    with pytest.raises(CliError, match="not a host name"):
        resolver_from_args(parse_cli("--nameserver", "dns.google"))


@pytest.mark.parametrize("value", ["0", "-1", "nan", "inf"])
def test_cli_bad_dns_timeout(value: str) -> None:
    with pytest.raises(CliError, match="--dns-timeout"):
        resolver_from_args(parse_cli("--nameserver", "127.0.0.1", "--dns-timeout", value))


async def test_cli_zone_option(tmp_path: Path) -> None:
    zone = tmp_path / "test.zone"
    zone.write_text(ZONE)
    resolver = resolver_from_args(parse_cli("--dns-zone", str(zone)))
    assert isinstance(resolver, StaticResolver)
    assert (await resolver.lookup("example.com", RRType.MX)).ok


# -- the test server itself ----------------------------------------------------------------------------


async def test_server_wildcards(server: DnsTestServer, resolver: LiveResolver) -> None:
    server.load_zone(
        '*.wild.test. 300 IN TXT "wild"\n'
        "exists.wild.test. 300 IN A 192.0.2.1\n"
        "x.exists.wild.test. 300 IN A 192.0.2.2\n"
    )
    assert (await resolver.lookup("a.b.wild.test", RRType.TXT)).texts() == [b"wild"]
    assert (await resolver.lookup("exists.wild.test", RRType.TXT)).status is DnsStatus.NODATA
    # below an existing name, the wildcard of its parent no longer applies (RFC 4592)
    assert (await resolver.lookup("y.exists.wild.test", RRType.TXT)).status is DnsStatus.NXDOMAIN


def test_server_query_log(server: DnsTestServer) -> None:
    import dns.message
    import dns.query

    query = dns.message.make_query("Example.COM.", "MX")
    response = dns.query.udp(query, server.host, port=server.port, timeout=2)
    assert len(response.answer[0]) == 2
    dns.query.tcp(query, server.host, port=server.port, timeout=2)
    assert server.count("example.com", "mx") == 2
    assert server.count(transport="tcp") == 1
    assert server.count("other.example") == 0
    server.clear_queries()
    assert server.queries == []
