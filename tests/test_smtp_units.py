"""The SMTP server's pure parts: the DATA sink, enhanced status codes, envelope addresses, trace fields
and the configuration file."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.config import Config, ConfigError, config_from_mapping, load_config, parse_duration
from mailtoaster.message import Message
from mailtoaster.pipeline.headers import fold, kept_header_section
from mailtoaster.smtp.address import AddressError, parse_mailbox
from mailtoaster.smtp.data import DataProblem, DataSink
from mailtoaster.smtp.replies import with_enhanced_code


def feed(lines: list[bytes], *, max_size: int = 10_000, max_line: int = 998) -> tuple[DataSink, bytes]:
    out = io.BytesIO()
    sink = DataSink(out, max_size=max_size, max_line_length=max_line)
    for line in lines:
        if sink.line(line):
            break
    return sink, out.getvalue()


def test_data_is_unstuffed_and_ends_at_the_lone_dot() -> None:
    sink, written = feed([b"Subject: x\r\n", b"\r\n", b"..leading dot\r\n", b".\r\n", b"after\r\n"])
    assert written == b"Subject: x\r\n\r\n.leading dot\r\n"
    assert sink.problem is DataProblem.NONE and sink.written == len(written)


@pytest.mark.parametrize(
    "line",
    [b"a\n.\nb\r\n", b"a\r.\rb\r\n", b"a\n.\r\n", b"x\r\r\n", b"\n\r\n", b"a\rb\r\n"],
    ids=["LF.LF", "CR.CR", "LF.CRLF", "CR-before-CRLF", "bare-LF", "bare-CR"],
)
def test_bare_cr_or_lf_refuses_the_whole_message(line: bytes) -> None:
    sink, written = feed([b"Subject: x\r\n", line, b"more\r\n", b".\r\n"])
    assert sink.problem is DataProblem.BARE_NEWLINE
    assert sink.refusal is not None and sink.refusal.reply.startswith("550 5.5.2")
    assert b"more" not in written  # nothing after the problem is kept


def test_998_octets_pass_999_do_not() -> None:
    sink, _ = feed([b"x" * 998 + b"\r\n", b".\r\n"])
    assert sink.problem is DataProblem.NONE
    sink, _ = feed([b"." + b"x" * 998 + b"\r\n", b".\r\n"])  # the transparency dot does not count
    assert sink.problem is DataProblem.NONE
    sink, _ = feed([b"x" * 999 + b"\r\n", b".\r\n"])
    assert sink.problem is DataProblem.LINE_TOO_LONG


def test_size_limit_counts_the_wire_and_stops_writing() -> None:
    sink, written = feed([b"a" * 60 + b"\r\n", b"b" * 60 + b"\r\n", b".\r\n"], max_size=100)
    assert sink.problem is DataProblem.TOO_BIG
    assert sink.refusal is not None and sink.refusal.reply.startswith("552 5.3.4")
    assert written == b"a" * 60 + b"\r\n"


def test_overlong_pieces_are_counted_not_kept() -> None:
    out = io.BytesIO()
    sink = DataSink(out, max_size=1000)
    sink.overlong(b"z" * 5000)
    assert sink.problem is DataProblem.LINE_TOO_LONG and sink.received == 5000 and out.getvalue() == b""


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=40).map(lambda b: b + b"\r\n"), max_size=30))
def test_sink_never_writes_a_bare_newline(lines: list[bytes]) -> None:
    sink, written = feed([*lines, b".\r\n"])
    if sink.problem is DataProblem.NONE:
        assert written.count(b"\n") == written.count(b"\r\n") == written.count(b"\r")


@pytest.mark.parametrize(
    ("reply", "expected"),
    [
        ("250 OK", "250 2.0.0 OK"),
        ("503 Error: need MAIL command", "503 5.5.1 Error: need MAIL command"),
        ("550 5.1.1 no such user", "550 5.1.1 no such user"),
        ("354 End data with <CR><LF>.<CR><LF>", "354 End data with <CR><LF>.<CR><LF>"),
        ("250-SIZE 100", "250-2.0.0 SIZE 100"),
        ("599 odd", "599 5.0.0 odd"),
    ],
)
def test_enhanced_codes_are_added_where_missing(reply: str, expected: str) -> None:
    assert with_enhanced_code(reply) == expected


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("User@Example.COM", ("User", "example.com")),
        ('"user@remote.example"@local.example', ('"user@remote.example"', "local.example")),
        ("user%remote.example@local.example", ("user%remote.example", "local.example")),
        ("remote.example!user@local.example", ("remote.example!user", "local.example")),
        ("a@[127.0.0.1]", ("a", "[127.0.0.1]")),
        ("a@[IPv6:::1]", ("a", "[IPv6:::1]")),
        ("jörg@bücher.example", ("jörg", "xn--bcher-kva.example")),
    ],
)
def test_mailboxes_split_at_the_last_at(address: str, expected: tuple[str, str]) -> None:
    assert parse_mailbox(address) == expected


@pytest.mark.parametrize(
    "address",
    ["nodomain", "@example.com", "a@", "a b@example.com", "a@exa mple.com", "a@[1.2.3]", "a@-x.example",
     "a\r\n@example.com", "x" * 65 + "@example.com", "a@[IPv6:1.2.3.4]", "a..b@example.com"],
)  # fmt: skip
def test_bad_mailboxes(address: str) -> None:
    with pytest.raises(AddressError):
        parse_mailbox(address)


def test_fold_round_trips_and_keeps_lines_short() -> None:
    text = "Authentication-Results: mx.example; " + "; ".join(
        f"dkim=pass header.d=d{n}.example" for n in range(40)
    )
    folded = fold(text)
    assert all(len(line) <= 78 for line in folded.split(b"\r\n"))
    assert folded.replace(b"\r\n ", b" ").rstrip(b"\r\n") == text.encode()
    assert Message.parse(folded + b"\r\n").headers[0].value == text.split(": ", 1)[1]


def test_forged_results_with_our_authserv_id_are_removed() -> None:
    raw = (
        b"Authentication-Results: MX.example; dkim=pass\r\n"
        b"Authentication-Results: other.example; spf=pass\r\n"
        b"Authentication-Results: (comment) mx.example;\r\n dmarc=pass\r\n"
        b"Subject: hi\r\n\r\nbody\r\n"
    )
    kept = kept_header_section(Message.parse(raw), "mx.example")
    assert kept == b"Authentication-Results: other.example; spf=pass\r\nSubject: hi\r\n"


def test_config_defaults_and_overrides(tmp_path: Path) -> None:
    assert load_config(None) == Config()
    path = tmp_path / "mailtoaster.toml"
    path.write_text('[server]\nsmtp_port = 2626\nbind = "0.0.0.0"\n[queue]\nlifetime = "2d"\n')
    config = load_config(path)
    assert (config.server.smtp_port, config.server.bind, config.queue.lifetime) == (
        2626,
        ("0.0.0.0",),
        172800.0,
    )
    assert config.server.submission_port == Config().server.submission_port


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"sever": {}}, "unknown table [sever]"),
        ({"server": {"smtp_prot": 1}}, "unknown setting 'smtp_prot'"),
        ({"server": {"smtp_port": "25"}}, "expected a whole number"),
        ({"policy": {"dmarc_reject": 1}}, "expected true or false"),
        ({"queue": {"lifetime": "soon"}}, "expected a duration"),
        ({"server": {"bind": [1]}}, "expected a list of strings"),
    ],
)
def test_config_errors_name_the_setting(document: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("[", r"\[")):
        config_from_mapping(document)


def test_config_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(tmp_path / "missing.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[server\n")
    with pytest.raises(ConfigError, match=r"bad\.toml"):
        load_config(bad)


def test_durations() -> None:
    assert (
        parse_duration("90s", "x") == 90
        and parse_duration("30m", "x") == 1800
        and parse_duration(2, "x") == 2
    )
    with pytest.raises(ConfigError):
        parse_duration(0, "x")


def test_every_setting_is_documented() -> None:
    import dataclasses

    text = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for table in dataclasses.fields(Config):
        assert f"## `[{table.name}]`" in text, table.name
        settings_type = table.default_factory
        assert isinstance(settings_type, type)
        for setting in dataclasses.fields(settings_type):
            assert f"| `{setting.name}` |" in text, f"[{table.name}] {setting.name}"


def test_a_write_failure_is_read_to_the_end_then_temporary() -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: object) -> int:
            raise OSError(28, "No space left on device")

    sink = DataSink(FullDisk(), max_size=10_000)
    assert not sink.line(b"Subject: x\r\n") and not sink.line(b"body\r\n")
    assert sink.line(b".\r\n")
    assert sink.problem is DataProblem.WRITE_FAILED
    assert sink.refusal is not None and sink.refusal.reply.startswith("451 4.3.0")


def test_replies_carry_only_printable_ascii() -> None:
    from mailtoaster.smtp.replies import printable_reply

    assert printable_reply('500 Error: command "X\x00Y\r\n" not recognized') == (
        '500 Error: command "X?Y??" not recognized'
    )
