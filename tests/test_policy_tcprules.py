"""tcprules source parsing and tcpserver's lookup: every address form, the lookup order, first-line-wins,
IPv6 (ucspi-tcp6), the quoting rules, comments, and errors that name the file and line."""

from __future__ import annotations

import contextlib
import ipaddress
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.policy import Rule, RulesError, RuleSet, load_rules, lookup_keys, parse_rules

# The qmail-toaster tcp.smtp from the postmaster's notes, unchanged.
TOASTER = (
    '127.:allow,RELAYCLIENT="",DKSIGN="/var/qmail/control/domainkeys/%/default"\n'
    '69.36.226.12:allow,RELAYCLIENT="",DKSIGN="/var/qmail/control/domainkeys/%/default"\n'
    ':allow,BADMIMETYPE="",BADLOADERTYPE="M",CHKUSER_RCPTLIMIT="50",CHKUSER_WRONGRCPTLIMIT="3",'
    'QMAILQUEUE="/var/qmail/bin/simscan",DKVERIFY="DEGIJKfh",DKQUEUE="/var/qmail/bin/qmail-queue.orig",'
    'DKSIGN="/var/qmail/control/domainkeys/%/default"\n'
)


def line_of(
    rules: RuleSet,
    ip: str | ipaddress.IPv4Address | ipaddress.IPv6Address,
    hostname: str | None = None,
    info: str | None = None,
) -> int | None:
    rule = rules.match(ip, hostname, info=info)
    return None if rule is None else rule.line


def test_the_toaster_file_works_unchanged() -> None:
    rules = parse_rules(TOASTER, "tcp.smtp")
    assert len(rules) == 3
    local = rules.match("127.0.0.1")
    assert local is not None
    assert (local.key, local.allow, local.line, local.source) == ("127.", True, 1, "tcp.smtp")
    assert dict(local.env) == {"RELAYCLIENT": "", "DKSIGN": "/var/qmail/control/domainkeys/%/default"}
    assert line_of(rules, "127.255.3.4") == 1
    assert line_of(rules, "69.36.226.12") == 2
    assert line_of(rules, "69.36.226.13") == 3
    default = rules.match("203.0.113.9")
    assert default is not None
    assert list(default.env) == [
        "BADMIMETYPE", "BADLOADERTYPE", "CHKUSER_RCPTLIMIT", "CHKUSER_WRONGRCPTLIMIT", "QMAILQUEUE",
        "DKVERIFY", "DKQUEUE", "DKSIGN",
    ]  # fmt: skip
    assert default.env["DKVERIFY"] == "DEGIJKfh"
    assert default.key == ""


def test_no_rule_matched_is_none() -> None:
    rules = parse_rules("127.:allow\n")
    assert rules.match("10.0.0.1") is None
    assert parse_rules("").match("10.0.0.1") is None


# ------------------------------------------------------------------------------------- address forms


def test_exact_and_dotted_prefixes_longest_first() -> None:
    rules = parse_rules("10.:allow\n10.1.:allow\n10.1.2.:allow\n10.1.2.3:allow\n:deny\n")
    assert line_of(rules, "10.1.2.3") == 4
    assert line_of(rules, "10.1.2.4") == 3
    assert line_of(rules, "10.1.3.4") == 2
    assert line_of(rules, "10.9.9.9") == 1
    assert line_of(rules, "11.1.2.3") == 5


def test_prefix_matches_whole_octets_only() -> None:
    rules = parse_rules("1.2.3.:deny\n12.:deny\n")
    assert rules.match("1.2.30.4") is None
    assert line_of(rules, "12.0.0.1") == 2
    assert rules.match("1.20.0.1") is None


def test_last_octet_range_expands_as_tcprules_does() -> None:
    rules = parse_rules("1.2.3.37-53:deny\n")
    assert [line_of(rules, f"1.2.3.{octet}") for octet in (36, 37, 45, 53, 54)] == [None, 1, 1, 1, None]


def test_range_in_a_prefix_octet() -> None:
    """tcprules(1): ``10.2-3.:ins`` abbreviates ``10.2.:ins`` and ``10.3.:ins``."""
    rules = parse_rules("10.2-3.:deny\n")
    assert line_of(rules, "10.2.9.9") == 1
    assert line_of(rules, "10.3.0.1") == 1
    assert rules.match("10.4.0.1") is None
    assert rules.match("10.1.0.1") is None


def test_range_top_is_capped_at_255_like_tcprules() -> None:
    rules = parse_rules("1.2.3.250-999:deny\n")
    assert line_of(rules, "1.2.3.255") == 1
    assert rules.match("1.2.3.249") is None


def test_range_with_leading_zeros_expands_to_plain_decimal() -> None:
    rules = parse_rules("1.2.3.007-009:deny\n")
    assert line_of(rules, "1.2.3.8") == 1


def test_hostname_forms_match_only_when_a_name_is_given() -> None:
    rules = parse_rules("=mail.example.com:allow\n=.example.net:allow\n=:allow\n:deny\n")
    assert line_of(rules, "192.0.2.1", "mail.example.com") == 1
    assert line_of(rules, "192.0.2.1", "mx.mail.example.com") == 3
    assert line_of(rules, "192.0.2.1", "a.b.example.net") == 2
    assert line_of(rules, "192.0.2.1", "example.net") == 3  # ".example.net" needs a label before it
    assert line_of(rules, "192.0.2.1", "other.org") == 3
    assert line_of(rules, "192.0.2.1") == 4
    assert line_of(rules, "192.0.2.1", "") == 4


def test_hostnames_compare_without_case_or_root_dot() -> None:
    rules = parse_rules("=Mail.Example.COM:deny\n=.Example.NET.:deny\n")
    assert line_of(rules, "192.0.2.1", "MAIL.example.com.") == 1
    assert line_of(rules, "192.0.2.1", "x.EXAMPLE.net") == 2


def test_suffixes_longest_first() -> None:
    rules = parse_rules("=.com:allow\n=.example.com:allow\n")
    assert line_of(rules, "192.0.2.1", "a.example.com") == 2
    assert line_of(rules, "192.0.2.1", "a.other.com") == 1


def test_ident_forms_match_only_with_an_ident_answer() -> None:
    rules = parse_rules('joe@127.0.0.1:allow,WHO="joe"\njoe@=box.example.com:allow\n127.:deny\n')
    assert line_of(rules, "127.0.0.1") == 3
    assert line_of(rules, "127.0.0.1", info="bill") == 3
    assert line_of(rules, "127.0.0.1", info="joe") == 1
    assert line_of(rules, "127.0.0.2", "box.example.com", info="joe") == 2
    assert line_of(rules, "127.0.0.2", "box.example.com") == 3


def test_the_man_page_example() -> None:
    """tcprules(1): joe@127.0.0.1:first, 18.23.0.32:second, :third, 127.:fourth."""
    rules = parse_rules('joe@127.0.0.1:allow,N="1"\n18.23.0.32:allow,N="2"\n:allow,N="3"\n127.:allow,N="4"\n')

    def chosen(ip: str, info: str | None = None) -> str:
        rule = rules.match(ip, info=info)
        assert rule is not None
        return rule.env["N"]

    assert chosen("10.119.75.38") == "3"
    assert chosen("18.23.0.32") == "2"
    assert chosen("127.0.0.1", "bill") == "4"
    assert chosen("127.0.0.1", "joe") == "1"


def test_ipv4_cidr_longest_prefix_first() -> None:
    rules = parse_rules("10.0.0.0/8:allow\n10.1.0.0/16:deny\n10.1.2.3/32:allow\n")
    assert line_of(rules, "10.1.2.3") == 3
    assert line_of(rules, "10.1.2.4") == 2
    assert line_of(rules, "10.200.0.1") == 1
    assert rules.match("11.0.0.1") is None


def test_ipv4_cidr_short_forms_and_host_bits_as_ucspi_tcp6() -> None:
    rules = parse_rules("10/8:deny\n192.168.1.77/24:deny\n")
    assert line_of(rules, "10.9.8.7") == 1
    assert line_of(rules, "192.168.1.1") == 2
    assert rules.match("192.168.2.1") is None


def test_dotted_prefix_is_tried_before_any_cidr_as_in_ucspi_tcp6() -> None:
    """rules.c looks up IPv4 dotted prefixes (step 5) before CIDR networks (step 6)."""
    rules = parse_rules("10.1.2.0/24:deny\n10.:allow\n")
    assert line_of(rules, "10.1.2.3") == 2


def test_ipv6_exact_in_any_spelling() -> None:
    rules = parse_rules('2001:db8:0:0:0:0:0:1:allow\n::1:allow,RELAYCLIENT=""\n')
    assert line_of(rules, "2001:db8::1") == 1
    assert line_of(rules, "2001:DB8:0000::0001") == 1
    assert line_of(rules, ipaddress.IPv6Address("2001:db8::1")) == 1
    assert line_of(rules, "::1") == 2
    assert rules.match("2001:db8::2") is None


def test_ipv6_networks_longest_first() -> None:
    rules = parse_rules('2001:db8::/32:allow\n2001:db8:1::/48:deny\n:allow,DEFAULT=""\n')
    assert line_of(rules, "2001:db8:1::9") == 2
    assert line_of(rules, "2001:db8:2::9") == 1
    assert line_of(rules, "2001:db9::1") == 3
    assert line_of(rules, "192.0.2.1") == 3


def test_ipv6_client_never_matches_ipv4_forms() -> None:
    rules = parse_rules("1.:deny\n0.0.0.0/1:deny\n")
    assert rules.match("::1") is None
    assert rules.match("100::1") is None


def test_ipv4_mapped_client_matches_ipv4_rules() -> None:
    rules = parse_rules("127.:allow\n192.0.2.7:deny\n198.51.100.0/24:deny\n")
    assert line_of(rules, "::ffff:127.0.0.1") == 1
    assert line_of(rules, ipaddress.IPv6Address("::ffff:192.0.2.7")) == 2
    assert line_of(rules, "::ffff:c633:6401") == 3


def test_ipv4_mapped_rule_is_an_ipv4_rule() -> None:
    rules = parse_rules("::ffff:192.0.2.7:deny\n::ffff:198.51.100.0/120:deny\n")
    assert line_of(rules, "192.0.2.7") == 1
    assert line_of(rules, "198.51.100.200") == 2


def test_scope_id_is_ignored() -> None:
    rules = parse_rules("fe80::1:allow\n")
    assert line_of(rules, "fe80::1%eth0") == 1
    assert line_of(rules, ipaddress.IPv6Address("fe80::1%2")) == 1


def test_bad_client_address_is_a_value_error() -> None:
    with pytest.raises(ValueError, match="not an IP address"):
        parse_rules(":allow\n").match("not-an-ip")


# ------------------------------------------------------------------------------------------ ordering


def test_lookup_order_is_tcpservers() -> None:
    assert lookup_keys("1.2.3.4", "Mail.Example.com.", info="joe", v4_prefixes=(24, 8)) == (
        "joe@1.2.3.4",
        "joe@=mail.example.com",
        "1.2.3.4",
        "=mail.example.com",
        "1.2.3.",
        "1.2.",
        "1.",
        "1.2.3.0/24",
        "1.0.0.0/8",
        "=.example.com",
        "=.com",
        "=",
        "",
    )
    assert lookup_keys("2001:db8::1", v6_prefixes=(64,)) == ("2001:db8::1", "2001:db8::/64", "")


@pytest.mark.parametrize(
    ("present", "expected"),
    [
        (["9.9.9.9", "=mx.example.com", "9.9.9.", "9.9.9.0/24", "=.example.com", "=", ""], "9.9.9.9"),
        (["=mx.example.com", "9.9.9.", "9.9.9.0/24", "=.example.com", "=", ""], "=mx.example.com"),
        (["9.9.9.", "9.9.9.0/24", "=.example.com", "=", ""], "9.9.9."),
        (["9.9.9.0/24", "=.example.com", "=", ""], "9.9.9.0/24"),
        (["=.example.com", "=", ""], "=.example.com"),
        (["=", ""], "="),
        ([""], ""),
    ],
)
def test_each_form_beats_the_less_specific_ones(present: list[str], expected: str) -> None:
    text = "".join(f"{address}:allow\n" for address in reversed(present))  # least specific first in file
    rule = parse_rules(text).match("9.9.9.9", "mx.example.com")
    assert rule is not None
    assert rule.key == expected


def test_first_line_wins_for_the_same_key() -> None:
    rules = parse_rules('127.:allow,N="first"\n127.:deny,N="second"\n')
    rule = rules.match("127.0.0.1")
    assert rule is not None
    assert (rule.allow, rule.env["N"], rule.line) == (True, "first", 1)
    assert rules.shadowed == (rules.rules[1],)


def test_first_wins_across_spellings_and_ranges() -> None:
    rules = parse_rules(
        "1.2.3.5:allow\n1.2.3.1-9:deny\n2001:db8::1:allow\n2001:DB8:0::1:deny\n"
        "10.0.0.0/8:allow\n10.9.9.9/8:deny\n"
    )
    assert line_of(rules, "1.2.3.5") == 1
    assert line_of(rules, "1.2.3.6") == 2
    assert line_of(rules, "2001:db8::1") == 3
    assert line_of(rules, "10.1.1.1") == 5
    assert [rule.line for rule in rules.shadowed] == [4, 6]


def test_exact_beats_an_earlier_prefix() -> None:
    rules = parse_rules("127.:deny\n127.0.0.1:allow\n")
    assert line_of(rules, "127.0.0.1") == 2
    assert rules.shadowed == ()


# ------------------------------------------------------------------------------- instructions, quoting


def test_allow_and_deny_with_and_without_settings() -> None:
    rules = parse_rules('1.1.1.1:allow\n2.2.2.2:deny\n3.3.3.3:deny,WHY="blocked"\n')
    assert [(rule.allow, dict(rule.env)) for rule in rules.rules] == [
        (True, {}),
        (False, {}),
        (False, {"WHY": "blocked"}),
    ]


@pytest.mark.parametrize(
    ("setting", "value"),
    [
        ('X=""', ""),
        ('X="a b, c: d=e"', "a b, c: d=e"),
        ("X='single'", "single"),
        ("X=/@fix.me/", "@fix.me"),  # tcprules(1): "The quotes may be replaced by any repeated character"
        ('X="it\'s"', "it's"),
        ("X=:colon:", "colon"),
        ('X="/var/qmail/control/domainkeys/%/default"', "/var/qmail/control/domainkeys/%/default"),
    ],
)
def test_any_repeated_character_quotes_a_value(setting: str, value: str) -> None:
    rule = parse_rules(f"1.2.3.4:allow,{setting}\n").rules[0]
    assert dict(rule.env) == {"X": value}


def test_value_may_hold_allow_after_a_colon() -> None:
    rule = parse_rules('1.2.3.4:allow,MSG="go:allow"\n').rules[0]
    assert (rule.key, rule.env["MSG"]) == ("1.2.3.4", "go:allow")


def test_a_variable_set_twice_keeps_the_last_value() -> None:
    rule = parse_rules('1.2.3.4:allow,A="1",B="2",A="3"\n').rules[0]
    assert dict(rule.env) == {"A": "3", "B": "2"}


def test_env_is_read_only_and_rules_are_hashable() -> None:
    rule = parse_rules('1.2.3.4:allow,A="1"\n').rules[0]
    with pytest.raises(TypeError):
        rule.env["A"] = "2"  # type: ignore[index]
    assert rule == Rule("1.2.3.4", True, {"A": "1"}, 1)
    assert len({rule, Rule("1.2.3.4", True, {"A": "1"}, 1)}) == 1


def test_comments_blank_lines_and_trailing_white_space() -> None:
    text = (
        "# tcp.smtp\n"
        "\n"
        "   \n"
        "\t# indented comment\n"
        '127.:allow,RELAYCLIENT=""  \t \n'
        "#10.:deny\n"
        ":deny"  # the last line has no newline
    )
    rules = parse_rules(text)
    assert [(rule.key, rule.line) for rule in rules.rules] == [("127.", 5), ("", 7)]
    assert line_of(rules, "10.0.0.1") == 7


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("127.0.0.1", "no ':'"),
        ("127.0.0.1:alow", "must start with allow or deny"),
        ("127.0.0.1: allow", "must start with allow or deny"),
        ("127.0.0.1:allowed", "unexpected 'ed'"),
        ('127.0.0.1:allow, X=""', "' X' is not a variable name"),
        ("127.0.0.1:allow,X", "has no ="),
        ("127.0.0.1:allow,", "has no ="),
        ("127.0.0.1:allow,X=", "has no value"),
        ('127.0.0.1:allow,X="abc', 'no closing "'),
        ("127.0.0.1:allow,X=abc", "must be quoted"),
        ("127.0.0.1:allow,X=1", "must be quoted"),
        ('127.0.0.1:allow,MY VAR="x"', "not a variable name"),
        ('127.0.0.1:allow,1X="x"', "not a variable name"),
        ('127.0.0.1:allow,="x"', "not a variable name"),
        ("127.0.0.1:allow\r", "carriage return"),
        (" 127.:allow", "white space"),
        ("127.0.0.01:allow", "leading zero"),
        ("127.0.0.256:allow", "larger than 255"),
        ("127.0.0:allow", "four octets"),
        ("127.0.0.1.:allow", "1 to 3 octets"),
        ("1.2.3.4.5:allow", "four octets"),
        ("localhost:allow", "not an address tcpserver can match"),
        ("1.2.3.4 :allow", "white space"),
        ("1.2.3.9-5:allow", "is empty"),
        ("1.2.3.-5:allow", "low-high"),
        ("1.2.3.300-310:allow", "larger than 255"),
        ("1-2.3-4.:allow", "only one octet"),
        ("10.0.0.0/33:allow", "not an IPv4 network"),
        ("10.0.0.0/0:allow", "empty address"),
        ("10/16:allow", "longer than the octets"),
        ("10.0.0.0/x:allow", "not an IPv4 network"),
        ("2001:db8::/129:allow", "not an IPv6"),
        ("2001:db8::/0:allow", "empty address"),
        ("2001:db8::allow", "written as networks"),
        ("2001:db8:1:allow", "not an IPv6"),
        ("2001:db8::g:allow", "not an IPv6"),
        ("fe80::1%eth0:allow", "not an IPv6"),
        ("::ffff:0:0/96:allow", "longer than /96"),
        ('=:deny,X="1",', "has no ="),
        ("=bad host:allow", "white space"),
        ("=host/name:allow", "not =host.name"),
        ("=..example.com:allow", "not =host.name"),
        ("@127.0.0.1:allow", "nothing before @"),
        ("joe@127.:allow", "only an exact address"),
        ("joe@10.0.0.0/8:allow", "only an exact address"),
        ("joe@=.example.com:allow", "only an exact =host.name"),
        ('127.0.0.1:allow,X="\0"', "NUL"),
    ],
)
def test_bad_lines_are_errors_naming_source_and_line(line: str, message: str) -> None:
    text = f"# first\n127.:allow\n{line}\n:deny\n"
    with pytest.raises(RulesError, match=r"^tcp\.smtp line 3: ") as error:
        parse_rules(text, "tcp.smtp")
    assert message in str(error.value)
    assert "\n" not in str(error.value)


def test_load_rules_reads_a_file(tmp_path: Path) -> None:
    path = tmp_path / "tcp.smtp"
    path.write_text(TOASTER)
    rules = load_rules(path)
    assert rules.source == str(path)
    rule = rules.match("127.0.0.1")
    assert rule is not None
    assert rule.source == str(path)


def test_load_rules_errors_name_the_file(tmp_path: Path) -> None:
    path = tmp_path / "tcp.smtp"
    path.write_bytes(b'127.:allow\n10.:deny,X="caf\xe9"\n')
    with pytest.raises(RulesError, match=rf"^{path} line 2: not UTF-8"):
        load_rules(path)
    path.write_text("127.:allow\r\n")
    with pytest.raises(RulesError, match="line 1: carriage return"):
        load_rules(path)
    with pytest.raises(RulesError, match=r"cannot read rules .*missing"):
        load_rules(tmp_path / "missing")
    with pytest.raises(RulesError, match="cannot read rules"):
        load_rules(tmp_path)


# ------------------------------------------------------------------------------------------ properties

_RULE_TOKENS = st.sampled_from(
    [*"0123456789.:-/=@,\"'ADEFabcdflnowxyz_ #\t\r\0é%٣", "allow", "deny", "::", "255", "999", "ffff"]
)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.lists(_RULE_TOKENS, max_size=25).map("".join), max_size=6))
def test_parser_raises_nothing_but_rules_error(lines: list[str]) -> None:
    try:
        rules = parse_rules("\n".join(lines))
    except RulesError as error:
        assert "\n" not in str(error)
        return
    for ip in ("127.0.0.1", "::1", "10.0.0.1"):
        rules.match(ip, "host.example.com", info="joe")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parser_never_crashes_on_arbitrary_text(text: str) -> None:
    with contextlib.suppress(RulesError):
        parse_rules(text)


_OCTET = st.integers(0, 255).map(str)
_ADDRESS = st.lists(_OCTET, min_size=4, max_size=4).map(".".join)
_PREFIX = st.lists(_OCTET, min_size=1, max_size=3).map(lambda octets: ".".join(octets) + ".")


@settings(max_examples=200, deadline=None)
@given(st.lists(st.one_of(_ADDRESS, _PREFIX), min_size=1, max_size=12), _ADDRESS)
def test_matches_the_exact_address_else_the_longest_prefix_first_line_first(
    addresses: list[str], client: str
) -> None:
    """An independent statement of tcpserver's IPv4 rule: exact address, else the longest dotted
    prefix of the client's address; among equal keys the first line."""
    rules = parse_rules("".join(f"{address}:allow\n" for address in addresses))
    containing = [
        (line, address)
        for line, address in enumerate(addresses, start=1)
        if address == client or (address.endswith(".") and client.startswith(address))
    ]
    expected = min(containing, key=lambda item: (item[1] != client, -len(item[1]), item[0]), default=None)
    assert line_of(rules, client) == (None if expected is None else expected[0])
