"""IMAP command reading (literals and limits), the command grammar, and sequence sets."""

from __future__ import annotations

import asyncio
import contextlib
import io
from datetime import datetime, timedelta, timezone

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailtoaster.imap.fetch import BodySection, Section
from mailtoaster.imap.parser import (
    Append,
    Authenticate,
    BadCharsetError,
    Capability,
    Check,
    Close,
    Command,
    Copy,
    Create,
    Delete,
    Enable,
    Examine,
    Expunge,
    Fetch,
    Id,
    Idle,
    List,
    Login,
    Logout,
    Lsub,
    MailboxNameError,
    Move,
    Namespace,
    Noop,
    ParseError,
    Rename,
    Search,
    Select,
    StartTls,
    Status,
    Store,
    StoreMode,
    Subscribe,
    UidExpunge,
    Unselect,
    Unsubscribe,
    is_idle_done,
    parse_command,
)
from mailtoaster.imap.reader import (
    DEFAULT_LIMITS,
    ClientGone,
    CommandRejected,
    MustDisconnect,
    RawCommand,
    ReadLimits,
    SpooledLiteral,
    read_command,
    read_line,
)
from mailtoaster.imap.search import All, And, HasFlag, HeaderContains, HeaderMatch, Not, TextContains
from mailtoaster.imap.sequence import (
    MAX_NUMBER,
    NumberSet,
    SequenceSet,
    SequenceSetError,
    format_sequence_set,
)

# -- reading commands off the wire ---------------------------------------------------------------------


class Wire:
    """A client connection for :func:`read_command`: an asyncio.StreamReader holding ``data`` (and EOF
    when ``close``), which records the continuations sent and the largest single read."""

    def __init__(self, data: bytes, *, close: bool = True, limit: int = 64 * 1024) -> None:
        self.reader = asyncio.StreamReader(limit=limit)
        self.reader.feed_data(data)
        if close:
            self.reader.feed_eof()
        self.continuations = 0
        self.largest_read = 0
        self.octets_read = 0

    async def readuntil(self, separator: bytes = b"\n", /) -> bytes:
        line = await self.reader.readuntil(separator)
        self.octets_read += len(line)
        return line

    async def readexactly(self, n: int, /) -> bytes:
        self.largest_read = max(self.largest_read, n)
        data = await self.reader.readexactly(n)
        self.octets_read += len(data)
        return data

    async def send_continuation(self) -> None:
        self.continuations += 1

    async def read(
        self, limits: ReadLimits = DEFAULT_LIMITS, spool: list[io.BytesIO] | None = None
    ) -> RawCommand:
        def open_spool(size: int) -> io.BytesIO:
            assert spool is not None
            spool.append(io.BytesIO())
            return spool[-1]

        return await read_command(
            self, self.send_continuation, limits, open_spool if spool is not None else None
        )


SMALL = ReadLimits(
    max_line=200, max_literal=100, max_command=1000, append_limit=5000, max_discard=20000, chunk_size=64
)


async def test_a_plain_line_is_one_command_without_literals() -> None:
    wire = Wire(b"a1 NOOP\r\nb2 LOGOUT\r\n")
    assert await wire.read() == RawCommand((b"a1 NOOP",))
    assert await wire.read() == RawCommand((b"b2 LOGOUT",))
    assert wire.continuations == 0


async def test_synchronizing_literals_get_a_continuation_each_before_their_data_is_read() -> None:
    reader = asyncio.StreamReader()
    reader.feed_data(b"a LOGIN {3}\r\n")
    sent: list[int] = []

    async def continuation() -> None:
        sent.append(1)
        reader.feed_data(b"bob {2}\r\n" if len(sent) == 1 else b"pw\r\n")

    command = await asyncio.wait_for(read_command(reader, continuation), timeout=5)
    assert command == RawCommand((b"a LOGIN {3}", b" {2}", b""), (b"bob", b"pw"))
    assert len(sent) == 2


async def test_non_synchronizing_literals_are_read_without_continuation() -> None:
    wire = Wire(b"a LOGIN {3+}\r\nbob {2+}\r\npw\r\n")
    assert await wire.read() == RawCommand((b"a LOGIN {3+}", b" {2+}", b""), (b"bob", b"pw"))
    assert wire.continuations == 0


async def test_an_oversized_synchronizing_literal_is_refused_without_continuation_and_reading_goes_on() -> (
    None
):
    wire = Wire(b"a SELECT {101}\r\nb NOOP\r\n")
    with pytest.raises(CommandRejected) as refused:
        await wire.read(SMALL)
    assert refused.value.response == b"a BAD [TOOBIG] Literal larger than 100 octets\r\n"
    assert wire.continuations == 0
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_an_oversized_literal_plus_is_discarded_in_pieces_with_the_rest_of_its_command() -> None:
    literal = b"x" * 3000
    wire = Wire(b"a SELECT {3000+}\r\n" + literal + b" {4+}\r\nmore tail\r\nb NOOP\r\n")
    with pytest.raises(CommandRejected) as refused:
        await wire.read(SMALL)
    assert refused.value.response.startswith(b"a BAD [TOOBIG] ")
    assert wire.largest_read <= SMALL.chunk_size
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_a_non_synchronizing_literal_over_the_hard_cap_disconnects_without_reading_it() -> None:
    wire = Wire(b"a APPEND INBOX {20001+}\r\n" + b"y" * 100, close=False)
    with pytest.raises(MustDisconnect) as refused:
        await wire.read(SMALL)
    assert refused.value.response.startswith(b"* BYE [TOOBIG] ")
    assert wire.octets_read == len(b"a APPEND INBOX {20001+}\r\n")


async def test_an_absurd_literal_size_is_refused_not_converted() -> None:
    wire = Wire(b"a SELECT {" + b"9" * 5000 + b"}\r\nb NOOP\r\n", limit=10000)
    with pytest.raises(CommandRejected):
        await wire.read(ReadLimits(max_line=8000))
    assert await wire.read() == RawCommand((b"b NOOP",))


async def test_an_append_message_is_spooled_to_the_caller_file_up_to_the_append_limit() -> None:
    message = bytes(range(256)) * 19  # 4864 octets: above max_literal, within append_limit
    wire = Wire(b"a APPEND INBOX (\\Seen) {4864}\r\n" + message + b"\r\n")
    spool: list[io.BytesIO] = []
    command = await wire.read(SMALL, spool)
    assert command.lines == (b"a APPEND INBOX (\\Seen) {4864}", b"")
    spooled = command.literals[0]
    assert isinstance(spooled, SpooledLiteral)
    assert spooled.size == len(message) and spooled.file is spool[0]
    assert spool[0].getvalue() == message
    assert wire.largest_read <= SMALL.chunk_size and wire.continuations == 1
    command.close()
    assert spool[0].closed


async def test_an_append_without_a_spool_holds_a_large_message_in_memory() -> None:
    wire = Wire(b"a APPEND INBOX {4000+}\r\n" + b"m" * 4000 + b"\r\n")
    command = await wire.read(SMALL)
    assert command.literals == (b"m" * 4000,)


async def test_an_append_over_appendlimit_is_refused_no_toobig() -> None:
    wire = Wire(b"a APPEND INBOX {5001}\r\nb NOOP\r\n")
    with pytest.raises(CommandRejected) as refused:
        await wire.read(SMALL, [])
    assert refused.value.response == b"a NO [TOOBIG] Literal larger than 5000 octets\r\n"
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_only_one_literal_per_append_may_be_large() -> None:
    wire = Wire(b"a APPEND INBOX {200+}\r\n" + b"1" * 200 + b" {200+}\r\n" + b"2" * 200 + b"\r\nb NOOP\r\n")
    spool: list[io.BytesIO] = []
    with pytest.raises(CommandRejected) as refused:
        await wire.read(SMALL, spool)
    assert b"Only one message per APPEND" in refused.value.response
    assert spool[0].closed, "the reader closes the spool of a refused command"
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_a_spool_that_cannot_be_written_refuses_unavailable_and_keeps_in_step() -> None:
    class FullDisk(io.BytesIO):
        def write(self, data: object, /) -> int:
            raise OSError("no space left on device")

    files: list[io.BytesIO] = []

    def open_spool(size: int) -> io.BytesIO:
        files.append(FullDisk())
        return files[-1]

    wire = Wire(b"a APPEND INBOX {300}\r\n" + b"z" * 300 + b"\r\nb NOOP\r\n")
    with pytest.raises(CommandRejected) as refused:
        await read_command(wire, wire.send_continuation, SMALL, open_spool)
    assert refused.value.response == b"a NO [UNAVAILABLE] Cannot store the message now\r\n"
    assert files[0].closed
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_a_line_over_the_stream_limit_is_discarded_to_its_crlf_and_refused_with_its_tag() -> None:
    wire = Wire(b"tag1 SEARCH " + b"A" * 5000 + b"\r\nb NOOP\r\n", limit=256)
    with pytest.raises(CommandRejected) as refused:
        await wire.read(SMALL)
    assert refused.value.response == b"tag1 BAD Command line too long\r\n"
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_a_line_over_max_line_within_the_stream_limit_is_refused_too() -> None:
    wire = Wire(b"t " + b"B" * 300 + b"\r\nb NOOP\r\n")
    with pytest.raises(CommandRejected, match="too long"):
        await wire.read(SMALL)
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_an_overlong_line_announcing_a_literal_plus_has_that_literal_discarded_too() -> None:
    wire = Wire(b"t X " + b"C" * 5000 + b" {10+}\r\n0123456789\r\nb NOOP\r\n", limit=256)
    with pytest.raises(CommandRejected):
        await wire.read(SMALL)
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_too_many_octets_in_one_command_are_refused() -> None:
    literals = b"".join(b" {90+}\r\n" + b"l" * 90 for _ in range(15))
    wire = Wire(b"a LOGIN" + literals + b"\r\nb NOOP\r\n")
    with pytest.raises(CommandRejected, match="Command too long"):
        await wire.read(SMALL)
    assert await wire.read(SMALL) == RawCommand((b"b NOOP",))


async def test_an_endless_line_ends_in_a_disconnect_once_the_discard_cap_is_reached() -> None:
    wire = Wire(b"x" * 30000, close=False, limit=256)
    with pytest.raises(MustDisconnect):
        await wire.read(SMALL)


@pytest.mark.parametrize(
    ("data", "mid_command"),
    [
        (b"", False),
        (b"a NOO", True),
        (b"a LOGIN {5+}\r\nbo", True),
        (b"a LOGIN {3+}\r\nbob", True),
        (b"a APPEND INBOX {4000+}\r\n" + b"q" * 100, True),
    ],
)
async def test_end_of_input_anywhere_is_client_gone(data: bytes, mid_command: bool) -> None:
    with pytest.raises(ClientGone) as gone:
        await Wire(data).read(SMALL, [])
    assert gone.value.mid_command is mid_command


async def test_read_line_reads_one_line_and_refuses_an_overlong_one() -> None:
    wire = Wire(b"DONE\r\n" + b"x" * 500 + b"\r\ndGVzdA==\r\n")
    assert await read_line(wire, SMALL) == b"DONE"
    with pytest.raises(CommandRejected) as refused:
        await read_line(wire, SMALL)
    assert refused.value.response == b"* BAD Line too long\r\n"
    assert await read_line(wire, SMALL) == b"dGVzdA=="


def test_raw_command_from_bytes_splits_literals_and_refuses_partial_commands() -> None:
    assert RawCommand.from_bytes(b"a X {2}\r\nhi {0+}\r\n\r\n") == RawCommand(
        (b"a X {2}", b" {0+}", b""), (b"hi", b"")
    )
    for broken in (b"a NOOP", b"a X {5}\r\nab", b"a NOOP\r\nmore"):
        with pytest.raises(ValueError):
            RawCommand.from_bytes(broken)


# -- the grammar -------------------------------------------------------------------------------------


def parse(text: bytes | str) -> Command:
    data = text.encode() if isinstance(text, str) else text
    return parse_command(RawCommand.from_bytes(data + b"\r\n"))


def refusal(text: bytes | str) -> bytes:
    with pytest.raises(ParseError) as error:
        parse(text)
    return error.value.response


EVERY_SIMPLE_COMMAND = [
    ("a CAPABILITY", Capability("a")),
    ("a noop", Noop("a")),
    ("a LOGOUT", Logout("a")),
    ("a STARTTLS", StartTls("a")),
    ("a CHECK", Check("a")),
    ("a CLOSE", Close("a")),
    ("a EXPUNGE", Expunge("a")),
    ("a IDLE", Idle("a")),
    ("a NAMESPACE", Namespace("a")),
    ("a UNSELECT", Unselect("a")),
    ("a SELECT inbox", Select("a", "INBOX")),
    ('a EXAMINE "Entw&APw-rfe"', Examine("a", "Entwürfe")),
    ("a CREATE Archive.2024", Create("a", "Archive.2024")),
    ("a DELETE {3+}\r\nold", Delete("a", "old")),
    ("a RENAME old new", Rename("a", "old", "new")),
    ("a SUBSCRIBE Junk", Subscribe("a", "Junk")),
    ("a UNSUBSCRIBE Junk", Unsubscribe("a", "Junk")),
    ('a LOGIN "bob@example.org" "p\\"w\\\\d"', Login("a", "bob@example.org", 'p"w\\d')),
    ("a LOGIN bob {4+}\r\np w\x00", Login("a", "bob", "p w\x00")),
    ('a LIST "" *', List("a", "", ("*",))),
    ('a LIST "" "%"', List("a", "", ("%",))),
    ("a LSUB Archive %.2024", Lsub("a", "Archive", "%.2024")),
    ("a STATUS INBOX (MESSAGES uidnext UNSEEN)", Status("a", "INBOX", ("MESSAGES", "UIDNEXT", "UNSEEN"))),
    ("a ENABLE CONDSTORE utf8=accept", Enable("a", ("CONDSTORE", "UTF8=ACCEPT"))),
    ("a ID NIL", Id("a", None)),
    ('a ID ("name" "Thunderbird" "version" NIL)', Id("a", (("name", "Thunderbird"), ("version", None)))),
    ("a ID ()", Id("a", ())),
    ("a AUTHENTICATE plain", Authenticate("a", "PLAIN")),
    ("a AUTHENTICATE PLAIN =", Authenticate("a", "PLAIN", b"")),
    ("a AUTHENTICATE PLAIN AGJvYgBwdw==", Authenticate("a", "PLAIN", b"\x00bob\x00pw")),
    ("a UID EXPUNGE 4:7,9", UidExpunge("a", SequenceSet(((4, 7), (9, 9))))),
    ("a COPY 1:* Trash", Copy("a", False, SequenceSet(((1, None),)), "Trash")),
    ("a UID MOVE 5 Junk", Move("a", True, SequenceSet(((5, 5),)), "Junk")),
    ("A.1-x] CHECK", Check("A.1-x]")),
]


@pytest.mark.parametrize(("text", "expected"), EVERY_SIMPLE_COMMAND)
def test_every_command_parses_to_its_dataclass(text: str, expected: Command) -> None:
    assert parse(text) == expected


def test_list_extended_selection_patterns_and_return_options() -> None:
    command = parse(
        'a LIST (SUBSCRIBED RECURSIVEMATCH) "" ("INBOX" "Ar%") RETURN (CHILDREN STATUS (MESSAGES))'
    )
    assert command == List(
        "a", "", ("INBOX", "Ar%"), ("SUBSCRIBED", "RECURSIVEMATCH"), ("CHILDREN", "STATUS"), ("MESSAGES",)
    )
    assert parse('a LIST () "" %') == List("a", "", ("%",))
    assert refusal('a LIST (RECURSIVEMATCH) "" %').endswith(
        b"RECURSIVEMATCH needs another selection option\r\n"
    )
    assert b"Unknown LIST selection option" in refusal('a LIST (BOGUS) "" %')
    assert b"Unknown LIST return option" in refusal('a LIST "" % RETURN (BOGUS)')


def test_append_with_flags_date_time_and_literal() -> None:
    command = parse('a APPEND Sent (\\Seen $Label1) " 5-Mar-2024 09:08:07 -0130" {5+}\r\nHello')
    zone = timezone(-timedelta(hours=1, minutes=30))
    assert command == Append(
        "a", "Sent", ("\\Seen", "$Label1"), datetime(2024, 3, 5, 9, 8, 7, tzinfo=zone), b"Hello"
    )
    assert parse("a APPEND INBOX {2}\r\nhi") == Append("a", "INBOX", (), None, b"hi")


def test_append_takes_a_spooled_message_as_it_is() -> None:
    spooled = SpooledLiteral(3, io.BytesIO(b"abc"))
    command = parse_command(RawCommand((b"a APPEND INBOX {3}", b""), (spooled,)))
    assert isinstance(command, Append) and command.message is spooled


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a APPEND INBOX (\\Seen) hi", b"Expected the message as a literal"),
        ('a APPEND INBOX "hi" {1}\r\nx', b"Invalid date-time 'hi'"),
        ('a APPEND INBOX "32-Jan-2024 00:00:00 +0000" {1}\r\nx', b"Invalid date-time"),
        ('a APPEND INBOX "1-Foo-2024 00:00:00 +0000" {1}\r\nx', b"Invalid date-time"),
        ('a APPEND INBOX "1-Jan-2024 25:00:00 +0000" {1}\r\nx', b"Invalid date-time"),
        ('a APPEND INBOX "1-Jan-2024 00:00:00 +2500" {1}\r\nx', b"Invalid date-time"),
        ("a APPEND INBOX (\\Recent) {1}\r\nx", b"Invalid system flag \\RECENT"),
        ("a APPEND INBOX (\\Seen {1}\r\nx", b"Expected a flag (found '{1}')"),
        ("a APPEND INBOX (\\Seen", b"Missing ')' to close the flag list"),
    ],
)
def test_append_errors(text: str, message: bytes) -> None:
    assert message in refusal(text)


def test_fetch_macros_attributes_and_sections() -> None:
    assert parse("a FETCH 1:3 fast") == Fetch(
        "a", False, SequenceSet(((1, 3),)), ("FLAGS", "INTERNALDATE", "RFC822.SIZE")
    )
    full = parse("a FETCH * FULL")
    assert isinstance(full, Fetch)
    assert full.items == ("FLAGS", "INTERNALDATE", "RFC822.SIZE", "ENVELOPE", "BODY")
    command = parse(
        "a UID FETCH 1:* (UID rfc822.size BODY[] BODY.PEEK[1.2.HEADER.FIELDS.NOT (Received x-spam)]<0.1024> "
        "BODY[2.MIME] BODY[TEXT] BODY[3] BODY[HEADER] BODYSTRUCTURE ENVELOPE INTERNALDATE RFC822.HEADER)"
    )
    assert isinstance(command, Fetch) and command.uid
    assert command.items == (
        "UID",
        "RFC822.SIZE",
        BodySection(Section()),
        BodySection(Section((1, 2), "HEADER.FIELDS.NOT", ("RECEIVED", "X-SPAM")), (0, 1024), peek=True),
        BodySection(Section((2,), "MIME")),
        BodySection(Section((), "TEXT")),
        BodySection(Section((3,))),
        BodySection(Section((), "HEADER")),
        "BODYSTRUCTURE",
        "ENVELOPE",
        "INTERNALDATE",
        "RFC822.HEADER",
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a FETCH 1 BODY[MIME]", b"Invalid BODY[..] section MIME"),
        ("a FETCH 1 BODY[HEADER.FIELDS ()]", b"Empty header field list"),
        ("a FETCH 1 BODY[0]", b"Invalid part number 0"),
        ("a FETCH 1 BODY[1.X]", b"Invalid BODY[..] section X"),
        ("a FETCH 1 BODY[]<0.0>", b"Invalid partial octet count 0"),
        ("a FETCH 1 BODY[]<5>", b"Expected '.' in the partial range"),
        ("a FETCH 1 (FLAGS", b"Missing ')' to close the FETCH item list"),
        ("a FETCH 1 ()", b"Empty list of FETCH items"),
        ("a FETCH 1 BINARY[1]", b"Unknown FETCH item BINARY"),
        ("a FETCH 1 FLAGS (CHANGEDSINCE 5)", b"Unexpected characters at the end"),
        ("a FETCH 1:x FLAGS", b"Invalid sequence set '1:'"),
    ],
)
def test_fetch_errors(text: str, message: bytes) -> None:
    assert message in refusal(text)


def test_store_modes_silence_and_flag_forms() -> None:
    assert parse("a STORE 1:2 +FLAGS.SILENT (\\seen \\DELETED $Junk)") == Store(
        "a", False, SequenceSet(((1, 2),)), StoreMode.ADD, True, ("\\Seen", "\\Deleted", "$Junk")
    )
    assert parse("a UID STORE 7 -flags \\Flagged Old") == Store(
        "a", True, SequenceSet(((7, 7),)), StoreMode.REMOVE, False, ("\\Flagged", "Old")
    )
    assert parse("a STORE 3 FLAGS ()") == Store(
        "a", False, SequenceSet(((3, 3),)), StoreMode.REPLACE, False, ()
    )
    assert b"Invalid system flag \\FOO" in refusal("a STORE 1 +FLAGS (\\Foo)")
    assert b"Expected FLAGS, +FLAGS or -FLAGS" in refusal("a STORE 1 *FLAGS (x)")


def test_search_is_parsed_with_its_charset_and_uid() -> None:
    command = parse("a UID SEARCH CHARSET UTF-8 UNSEEN TEXT {5+}\r\ncaf\xc3\xa9".encode("latin-1"))
    assert command == Search("a", True, "UTF-8", And((Not(HasFlag("\\Seen")), TextContains("café"))))
    assert parse("a SEARCH ALL") == Search("a", False, None, All())
    latin = parse(b"a SEARCH CHARSET ISO-8859-1 FROM {4+}\r\ncaf\xe9")
    assert isinstance(latin, Search)
    assert latin.criteria == HeaderContains("From", "café", HeaderMatch.ADDRESS)


def test_an_unknown_search_charset_is_refused_with_badcharset() -> None:
    with pytest.raises(BadCharsetError) as error:
        parse("t7 SEARCH CHARSET KLINGON ALL")
    assert error.value.response == b"t7 NO [BADCHARSET (US-ASCII UTF-8)] Unknown charset 'KLINGON'\r\n"


@pytest.mark.parametrize(
    ("text", "response"),
    [
        ("", b"* BAD Empty command line\r\n"),
        ("+tag NOOP", b"* BAD Invalid tag\r\n"),
        ("a(b NOOP", b"* BAD Invalid tag\r\n"),
        ("a", b"a BAD Missing a command name\r\n"),
        ("a  NOOP", b"a BAD Extra space before a command name\r\n"),
        ("a FROB", b"a BAD Unknown command FROB\r\n"),
        ("a UID NOOP", b"a BAD Unknown command UID NOOP\r\n"),
        ("a NOOP extra", b"a BAD Unexpected characters at the end of the command (found ' extra')\r\n"),
        ("a SELECT", b"a BAD Missing a mailbox name\r\n"),
        ('a SELECT "unterminated', b"a BAD Invalid quoted string for a mailbox name\r\n"),
        ('a SELECT "bad\\escape"', b"a BAD Invalid quoted string for a mailbox name\r\n"),
        ("a LOGIN bob", b"a BAD Missing a password\r\n"),
        ("a RENAME a", b"a BAD Missing the new mailbox name\r\n"),
        ("a STATUS INBOX ()", b"a BAD Empty status item list\r\n"),
        ("a STATUS INBOX (MESSAGES SIZE)", b"a BAD Unknown status item SIZE\r\n"),
        (
            "a STATUS INBOX (MESSAGES",
            b"a BAD Missing ')' to close the status item list\r\n",
        ),
        ("a ENABLE", b"a BAD Missing a capability to enable\r\n"),
        ("a AUTHENTICATE PLAIN AGJvYgBwd", b"a BAD Initial response is not valid base64\r\n"),
        ("a COPY 0 Trash", b"a BAD Invalid sequence set '0': '0' is not a number or '*'\r\n"),
        (
            "a COPY 4294967296 Trash",
            b"a BAD Invalid sequence set '4294967296': '4294967296' is above 4294967295\r\n",
        ),
        ("a SELECT a&b", b"a NO Mailbox name is not valid mUTF-7\r\n"),
    ],
)
def test_errors_name_the_problem_and_carry_the_tag_when_there_is_one(text: str, response: bytes) -> None:
    assert refusal(text) == response


def test_non_ascii_mailbox_names_and_login_names() -> None:
    with pytest.raises(MailboxNameError):
        parse("a CREATE {5+}\r\ncaf\xc3\xa9".encode("latin-1"))
    assert parse('a LOGIN "b\xc3\xb6b" x'.encode("latin-1")) == Login("a", "böb", "x")
    assert b"is not valid UTF-8" in refusal(b'a LOGIN "b\xf6b" x')


def test_error_responses_never_carry_line_breaks_or_non_ascii() -> None:
    response = refusal(b"a FROB\xff\x01")
    assert response.endswith(b"\r\n") and b"\r" not in response[:-2] and b"\n" not in response[:-2]
    assert response.isascii()


def test_a_spooled_literal_where_a_string_is_needed_is_refused() -> None:
    raw = RawCommand((b"a APPEND {9}", b" {1}", b""), (SpooledLiteral(9, io.BytesIO()), b"x"))
    with pytest.raises(ParseError, match="Literal too large"):
        parse_command(raw)


def test_idle_done_is_recognised_in_any_case_and_nothing_else() -> None:
    assert is_idle_done(b"DONE") and is_idle_done(b"done")
    assert not is_idle_done(b"DONE ") and not is_idle_done(b"a DONE")


IMAP_TOKENS = st.sampled_from(
    [
        b" ", b"(", b")", b'"', b"\\", b"{3}", b"{2+}", b"*", b":", b",", b"[", b"]", b"<", b">", b".", b"1",
        b"0", b"42", b"4294967296", b"NIL", b"INBOX", b"&", b"&APw-", b"UID", b"FETCH", b"STORE", b"SEARCH",
        b"APPEND", b"LIST", b"STATUS", b"LOGIN", b"ID", b"ENABLE", b"AUTHENTICATE", b"COPY", b"BODY",
        b"BODY.PEEK", b"HEADER.FIELDS", b"MIME", b"TEXT", b"FLAGS", b"+FLAGS.SILENT", b"\\Seen", b"CHARSET",
        b"UTF-8", b"OR", b"NOT", b"SUBJECT", b"SENTON", b"1-Jan-2020", b"LARGER", b"RETURN", b"\xff", b"=",
    ]
)  # fmt: skip


@st.composite
def raw_commands(draw: st.DrawFn) -> RawCommand:
    """Commands from IMAP-ish tokens, literals placed where a line announces one."""
    lines = []
    literals: list[bytes] = []
    for _ in range(draw(st.integers(1, 3))):
        line = b"t " + b"".join(draw(st.lists(IMAP_TOKENS, max_size=14)))
        lines.append(line)
        literals.append(draw(st.binary(max_size=6)))
    for index in range(len(lines) - 1):
        lines[index] += b"{%d}" % len(literals[index])
    return RawCommand(tuple(lines), tuple(literals[: len(lines) - 1]))


@settings(max_examples=400, deadline=None)
@given(raw_commands())
def test_token_soup_raises_nothing_but_parse_error(raw: RawCommand) -> None:
    try:
        parse_command(raw)
    except ParseError as error:
        assert error.response.endswith(b"\r\n")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=120))
def test_random_bytes_raise_nothing_but_parse_error(data: bytes) -> None:
    try:
        raw = RawCommand.from_bytes(data)
    except ValueError:
        raw = RawCommand((data.replace(b"\r\n", b""),))
    with contextlib.suppress(ParseError):
        parse_command(raw)


async def test_random_wire_input_never_breaks_the_reader() -> None:
    for data in (b"{5}\r\n", b"a {x}\r\n", b"}{+}\r\n{0}\r\n\r\n", b"a {2+}\r\n\r\n\r\n", b"\r\n\r\n"):
        wire = Wire(data)
        while True:
            try:
                await wire.read(SMALL)
            except CommandRejected:
                continue
            except ClientGone:
                break


# -- sequence sets -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "ranges"),
    [
        ("1", ((1, 1),)),
        ("*", ((None, None),)),
        ("1:5,7,9:*", ((1, 5), (7, 7), (9, None))),
        ("5:1", ((5, 1),)),
        ("*:3", ((None, 3),)),
        ("4294967295", ((MAX_NUMBER, MAX_NUMBER),)),
    ],
)
def test_sequence_sets_parse_and_print_back(
    text: str, ranges: tuple[tuple[int | None, int | None], ...]
) -> None:
    parsed = SequenceSet.parse(text)
    assert parsed.ranges == ranges
    assert str(parsed) == text


@pytest.mark.parametrize(
    "text", ["", "0", "01", "1:", ":1", "1,", "1:2:3", "a", "-1", "4294967296", "1 2", "$"]
)
def test_invalid_sequence_sets_are_refused(text: str) -> None:
    with pytest.raises(SequenceSetError):
        SequenceSet.parse(text)


def test_star_is_the_largest_number_and_ranges_are_put_in_order() -> None:
    assert list(SequenceSet.parse("5:3,*").resolve(10)) == [3, 4, 5, 10]
    assert list(SequenceSet.parse("8:*").resolve(6)) == [6, 7, 8], "N:* with N above the largest still has it"
    assert SequenceSet.parse("1:3,2:6,8").resolve(9).intervals == ((1, 6), (8, 8))
    assert SequenceSet.parse("2:3,4:5").resolve(9).intervals == ((2, 5),), "adjacent ranges merge"
    assert not SequenceSet.parse("*").resolve(0), "* names nothing in an empty mailbox"


def test_message_numbers_must_exist() -> None:
    assert SequenceSet.parse("2:*").message_numbers(4) == [2, 3, 4]
    with pytest.raises(SequenceSetError):
        SequenceSet.parse("2:5").message_numbers(4)
    with pytest.raises(SequenceSetError):
        SequenceSet.parse("1:*").message_numbers(0)


def test_uid_sets_select_existing_uids_without_materialising_ranges() -> None:
    uids = list(range(10, 200_010, 4))  # 50,000 sparse UIDs
    assert SequenceSet.parse("1:*").uids(uids) == uids
    assert SequenceSet.parse("1:4294967295").uids(uids) == uids
    assert SequenceSet.parse("11:21,300000:*").uids(uids) == [14, 18, uids[-1]]
    assert SequenceSet.parse("1:9").uids(uids) == []
    assert SequenceSet.parse("5").uids([]) == []


def test_number_set_membership_by_bisection() -> None:
    numbers = NumberSet(((1, 3), (10, 10), (20, 4_000_000_000)))
    assert [n in numbers for n in (0, 1, 3, 4, 10, 11, 19, 20, 4_000_000_000, 4_000_000_001)] == [
        False, True, True, False, True, False, False, True, True, False,
    ]  # fmt: skip
    assert numbers.select([2, 5, 10, 25, 4_000_000_001]) == [2, 10, 25]


def test_format_sequence_set_compresses_runs_and_keeps_order() -> None:
    assert format_sequence_set([1, 2, 3, 5, 7, 8, 9]) == "1:3,5,7:9"
    assert format_sequence_set([4]) == "4"
    assert format_sequence_set([9, 8, 1, 2]) == "9,8,1:2"
    for bad in ([], [0], [MAX_NUMBER + 1]):
        with pytest.raises(SequenceSetError):
            format_sequence_set(bad)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 60), max_size=30), st.integers(0, 70))
def test_resolved_sets_hold_exactly_the_numbers_the_ranges_name(numbers: list[int], largest: int) -> None:
    text = ",".join(f"{a}:{b}" for a, b in zip(numbers[::2], numbers[1::2], strict=False)) or "*"
    expected = {
        n for a, b in zip(numbers[::2], numbers[1::2], strict=False) for n in range(min(a, b), max(a, b) + 1)
    }
    if text == "*":
        expected = {largest} if largest else set()
    resolved = SequenceSet.parse(text).resolve(largest)
    assert set(resolved) == expected
    assert all((n in resolved) == (n in expected) for n in range(0, 75))
    if expected:
        assert SequenceSet.parse(format_sequence_set(sorted(expected))).resolve(largest) == resolved
