"""The SMTP server's pure parts: the DATA sink, enhanced status codes, envelope addresses, trace fields
and the configuration file."""

from __future__ import annotations

import asyncio
import io
import warnings
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.config import Config, ConfigError, config_from_mapping, load_config, parse_duration
from mailtoaster.message import Message
from mailtoaster.pipeline.headers import fold, kept_header_section
from mailtoaster.smtp.address import AddressError, parse_mailbox
from mailtoaster.smtp.data import DataProblem, DataSink, SpoolBuffer
from mailtoaster.smtp.replies import with_enhanced_code


def feed(
    lines: list[bytes], *, max_size: int = 10_000, max_line: int = 998, piece: int = 0
) -> tuple[DataSink, bytes]:
    """The lines as one stream, fed whole (``piece`` 0) or in pieces of ``piece`` octets."""
    out = io.BytesIO()
    sink = DataSink(out, max_size=max_size, max_line_length=max_line)
    stream = b"".join(lines)
    size = piece or max(len(stream), 1)
    for start in range(0, len(stream), size):
        if sink.feed(stream[start : start + size]) is not None:
            break
    return sink, out.getvalue()


def reference_data(stream: bytes, max_line: int = 998) -> tuple[str, bytes, bytes]:
    """What DATA means, line by line, the slow obvious way: (problem, message, what follows the
    end-of-data line). The problem is "none" or "refused"; which refusal wins when a message has
    several faults is the sink's business."""
    lines = stream.split(b"\r\n")
    message: list[bytes] = []
    faults = False
    for index, line in enumerate(lines[:-1]):
        if line == b".":
            kept = b"".join(part + b"\r\n" for part in message)
            return ("refused" if faults else "none"), kept, b"\r\n".join(lines[index + 1 :])
        line = line.removeprefix(b".")
        faults = faults or b"\r" in line or b"\n" in line or len(line) > max_line
        message.append(line)
    raise AssertionError("no end-of-data line")


@settings(max_examples=400, deadline=None)
@given(
    st.lists(
        st.one_of(
            st.sampled_from([b".", b"..", b".x", b"x", b"", b"\r", b"\n", b"a\rb", b"a\nb"]),
            st.binary(max_size=30),
            st.integers(0, 30).map(lambda n: b"y" * n),
        ),
        max_size=25,
    ),
    st.binary(max_size=20),
    st.integers(1, 40),
)
def test_any_split_of_the_stream_gives_the_reference_meaning(
    lines: list[bytes], after: bytes, piece: int
) -> None:
    stream = b"".join(line + b"\r\n" for line in lines) + b".\r\n" + after
    expected_problem, expected_message, expected_after = reference_data(stream, max_line=20)
    out = io.BytesIO()
    sink = DataSink(out, max_size=10**6, max_line_length=20)
    rest = None
    for start in range(0, len(stream), piece):
        rest = sink.feed(stream[start : start + piece])
        if rest is not None:
            rest += stream[start + piece :]
            break
    assert rest == expected_after
    assert ("none" if sink.problem is DataProblem.NONE else "refused") == expected_problem
    if expected_problem == "none":
        assert out.getvalue() == expected_message and sink.written == len(expected_message)


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
    assert len(written) <= 100  # never more than the limit on disk


@pytest.mark.parametrize("piece", [7, 1000, 70_000])
def test_an_overlong_line_is_counted_not_kept(piece: int) -> None:
    sink, written = feed([b"a\r\n", b"z" * 50_000 + b"\r\n", b"b\r\n", b".\r\n"], max_size=10**6, piece=piece)
    assert sink.problem is DataProblem.LINE_TOO_LONG and written in (b"", b"a\r\n")
    assert sink.received == 50_008 and len(sink._pending) <= 1001


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
    assert sink.feed(b"Subject: x\r\n") is None and sink.feed(b"body\r\n") is None
    assert sink.feed(b".\r\nQUIT\r\n") == b"QUIT\r\n"
    assert sink.problem is DataProblem.WRITE_FAILED
    assert sink.refusal is not None and sink.refusal.reply.startswith("451 4.3.0")


def test_replies_carry_only_printable_ascii() -> None:
    from mailtoaster.smtp.replies import printable_reply

    assert printable_reply('500 Error: command "X\x00Y\r\n" not recognized') == (
        '500 Error: command "X?Y??" not recognized'
    )


class _Hooks:
    async def handle_EHLO(self, server: object, session: object, envelope: object, name: str, r: list[str]):
        return r

    async def handle_RCPT(self, server: object, session: object, envelope: object, address: str, o: object):
        return "250 OK"


def _comparable(value: object, owner: object) -> object:
    """Bound methods by function and whose (the connection's own or not), readers by type: those are
    fresh objects per connection."""
    if hasattr(value, "__self__") and hasattr(value, "__func__"):
        return (value.__func__, value.__self__ is owner)
    if isinstance(value, dict):
        return {key: _comparable(item, owner) for key, item in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return tuple(_comparable(item, owner) for item in value)
    if isinstance(value, asyncio.StreamReader):
        return (type(value), value._limit)  # type: ignore[attr-defined]
    return value


@pytest.mark.parametrize("implicit_tls", [False, True])
async def test_the_fast_constructor_builds_what_aiosmtpd_builds(implicit_tls: bool, tmp_path: Path) -> None:
    from mailtoaster.server.tls import ensure_self_signed, server_context
    from mailtoaster.smtp import protocol

    context = server_context(*ensure_self_signed(tmp_path, "mx.example"))
    arguments = dict(
        spool_dir=tmp_path, password_check=None, data_size_limit=1000, enable_SMTPUTF8=True,
        hostname="mx.example", ident="mailtoaster", tls_context=None if implicit_tls else context,
        timeout=30, auth_required=True, auth_require_tls=not implicit_tls,
        loop=asyncio.get_running_loop(),
    )  # fmt: skip
    protocol._introspected.clear()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        hooks = _Hooks()
        built = [protocol.MailtoasterSMTP(hooks, **arguments) for _ in range(2)]  # type: ignore[arg-type]
    assert (protocol.MailtoasterSMTP, _Hooks) in protocol._introspected
    slow, fast = ({name: _comparable(value, smtp) for name, value in vars(smtp).items()} for smtp in built)
    assert slow.keys() == fast.keys()
    for name in slow:
        if name not in ("_stream_reader_wr", "_strong_reader", "_stream_reader", "_closed"):
            assert slow[name] == fast[name], name
    assert "PLAIN" in built[1]._auth_methods and "EHLO" in built[1]._handle_hooks


@settings(max_examples=500, deadline=None)
@given(
    st.one_of(
        st.from_regex(r"\A<[a-z0-9.!#_-]{0,12}@[a-z0-9.-]{0,12}>( [A-Z]+=[a-z0-9]+| \(c\)|  |\t)?\Z"),
        st.text(alphabet='<>@.a( )"\\', max_size=20),
    )
)
def test_the_fast_address_path_agrees_with_aiosmtpd(argument: str) -> None:
    from aiosmtpd.smtp import SMTP

    from mailtoaster.smtp.protocol import MailtoasterSMTP

    smtp = MailtoasterSMTP.__new__(MailtoasterSMTP)
    try:
        expected = SMTP._getaddr(smtp, argument)
    except IndexError:  # the email package's parser on "<" and the like: malformed, for us
        expected = (None, None)
    assert smtp._getaddr(argument) == expected


@pytest.mark.parametrize("pieces", [[b"x" * 10] * 3, [b"a" * 60, b"b" * 60, b"c" * 5]])
def test_a_small_message_stays_in_memory_a_large_one_spills_to_a_spool_file(
    tmp_path: Path, pieces: list[bytes]
) -> None:
    spool = SpoolBuffer(tmp_path / "spool", limit=100)
    for piece in pieces:
        assert spool.write(piece) == len(piece)
    spool.close()
    contents = spool.contents()
    if sum(map(len, pieces)) <= 100:
        assert contents == b"".join(pieces) and not (tmp_path / "spool").exists()
    else:
        assert isinstance(contents, Path) and contents.read_bytes() == b"".join(pieces)
        assert contents.name.startswith("in.") and contents.stat().st_mode & 0o777 == 0o600
    spool.discard()
    assert not list((tmp_path / "spool").glob("*"))  # discarded (a missing directory globs nothing)
