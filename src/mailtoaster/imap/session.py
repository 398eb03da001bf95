"""One IMAP connection: the RFC 3501 state machine (not authenticated, authenticated, selected, logout)
with IDLE, UIDPLUS, MOVE, LITERAL+, SASL-IR, NAMESPACE, UNSELECT, ENABLE, ID, SPECIAL-USE, CHILDREN,
LIST-EXTENDED, LIST-STATUS and APPENDLIMIT.

:class:`ImapSession` reads commands with :func:`~mailtoaster.imap.reader.read_command` (literals and
limits), parses them with :func:`~mailtoaster.imap.parser.parse_command`, and carries them out on the
user's :class:`~mailtoaster.store.MailStore`. It needs a stream to read and a writer (an
``asyncio.StreamWriter``, or anything with its methods), never a socket, so tests can feed it bytes.
All file work runs in worker threads (``asyncio.to_thread``); the event loop only parses and writes,
and makes the few ``stat`` calls of an IDLE poll and of a SELECT of a folder unchanged since this process
last read it (:meth:`~mailtoaster.store.Folder.sync_from_snapshot`).

Keeping clients in step: after every command with a mailbox selected, the folder is synced and the
changes go out as untagged EXPUNGE, EXISTS, RECENT and FETCH FLAGS before the tagged answer, so two
clients on one mailbox see each other's work. After FETCH, STORE and SEARCH (not their UID forms) no
EXPUNGE is sent (RFC 3501 §7.4.1): vanished messages stay in the view until a later command. During
IDLE the folder's files are watched with a few ``stat`` calls per poll interval and synced when they
change (or changed within the last second, which an mtime cannot tell apart).

Bad input never ends the session by itself: a malformed command gets a tagged BAD (or ``* BAD`` when
it has no valid tag), an unknown charset ``NO [BADCHARSET]``, a literal over the limits ``BAD
[TOOBIG]`` or ``NO [TOOBIG]`` (APPEND), and the connection goes on. What ends it: LOGOUT, the client
closing, :data:`MAX_BAD_COMMANDS` bad commands in a row, :data:`MAX_FAILED_LOGINS` failed logins, more
discarded input than the reader allows, the autologout timer, a server shutdown (``* BYE``), or the
selected folder vanishing under the session (``* BYE``, RFC 3501 §2.3.1.1 when its UIDVALIDITY
changed).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import enum
import ipaddress
import logging
import os
import ssl
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import IO, Any, BinaryIO, Protocol, TypeVar, cast

from mailtoaster import __version__
from mailtoaster.imap import listing, parser, response
from mailtoaster.imap.fetch import FetchSyntaxError
from mailtoaster.imap.learning import (
    JunkLearner,
    LearningEvent,
    label_for_keywords,
    label_for_transfer,
)
from mailtoaster.imap.logins import LoginChecks
from mailtoaster.imap.mailbox import FetchOutcome, SelectedMailbox, fetch_items, take_batch
from mailtoaster.imap.reader import (
    ClientGone,
    CommandRejected,
    MustDisconnect,
    RawCommand,
    ReadLimits,
    SpooledLiteral,
    read_command,
    read_line,
)
from mailtoaster.imap.sequence import SequenceSetError, format_sequence_set
from mailtoaster.spam.store import Label
from mailtoaster.store import (
    DirectoryError,
    FlagError,
    Folder,
    FolderExistsError,
    FolderGoneError,
    FolderNameError,
    FolderNotFoundError,
    KeywordLimitError,
    LockTimeoutError,
    MaildirError,
    MailStore,
    MessageGoneError,
    ReadOnlyFolderError,
    User,
)
from mailtoaster.store.folder import canonical_name
from mailtoaster.store.maildir import Maildir

log = logging.getLogger("mailtoaster.imap")

DEFAULT_APPEND_LIMIT = 50 * 1024 * 1024
PREAUTH_TIMEOUT = 60.0
"""Seconds a connection may wait without logging in (capped by the autologout timer)."""
MAX_BAD_COMMANDS = 20
"""Bad commands in a row before the server gives up on a client (Dovecot's number)."""
MAX_FAILED_LOGINS = 3
"""Failed LOGIN/AUTHENTICATE attempts on one connection before it is closed."""
PREAUTH_LIMITS = ReadLimits(append_limit=ReadLimits.max_literal, max_discard=1024 * 1024)
"""Before login nobody may make the server spool a message or discard much: APPEND needs a login."""
CLOSE_TIMEOUT = 2.0
WATCH_DIRTY_SECONDS = 1.0
"""A watched file changed less than this before the poll: sync anyway (one mtime tick can hide a
second change)."""

SERVER_ID = (("name", "mailtoaster"), ("version", __version__))
_T = TypeVar("_T")


class State(enum.Enum):
    NOT_AUTHENTICATED = "not authenticated"
    AUTHENTICATED = "authenticated"
    SELECTED = "selected"
    LOGOUT = "logout"


ANY_STATE = frozenset(State) - {State.LOGOUT}
NOT_AUTHENTICATED = frozenset({State.NOT_AUTHENTICATED})
AUTHENTICATED = frozenset({State.AUTHENTICATED, State.SELECTED})
SELECTED = frozenset({State.SELECTED})


@dataclass(frozen=True)
class SessionSettings:
    """What the ``[imap]`` configuration tells a session (see docs/imap.md)."""

    allow_plaintext_on_loopback: bool = False
    """LOGIN and AUTHENTICATE without TLS from 127.0.0.0/8 and ::1 (else TLS is required)."""
    append_limit: int = DEFAULT_APPEND_LIMIT
    idle_poll_interval: float = 1.0
    autologout: float = 1800.0
    preauth_timeout: float = PREAUTH_TIMEOUT
    max_bad_commands: int = MAX_BAD_COMMANDS
    max_failed_logins: int = MAX_FAILED_LOGINS
    hostname: str = "localhost"
    """For the Maildir file names of APPEND and COPY."""


class Accounts(Protocol):
    """The directory as a session needs it (:class:`~mailtoaster.store.Directory` has it)."""

    def verify_password(self, address: str, password: str) -> bool: ...

    def get_user(self, address: str) -> User | None: ...


class Writer(Protocol):
    """The sending side (:class:`asyncio.StreamWriter` has it)."""

    def write(self, data: bytes) -> None: ...

    async def drain(self) -> None: ...

    def close(self) -> None: ...

    async def wait_closed(self) -> None: ...

    def is_closing(self) -> bool: ...

    def get_extra_info(self, name: str, default: Any = None) -> Any: ...

    async def start_tls(self, sslcontext: ssl.SSLContext) -> None: ...


@dataclass
class SessionServices:
    """What every session of a server shares."""

    accounts: Accounts
    settings: SessionSettings = field(default_factory=SessionSettings)
    tls: ssl.SSLContext | None = None
    """Offered with STARTTLS (None: no STARTTLS)."""
    learner: JunkLearner | None = None
    logins: LoginChecks = field(default_factory=LoginChecks)
    """Password checks, limited and cached for all sessions (:mod:`.logins`)."""

    def store_for(self, user: User) -> MailStore:
        return MailStore(Maildir(user.maildir, hostname=self.settings.hostname))


class _Disconnect(Exception):
    """End the session now (the reason has been sent, or there is nobody to send it to)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Answer:
    """A command's tagged answer."""

    status: str
    text: str
    code: str | None = None


def ok(text: str, code: str | None = None) -> Answer:
    return Answer("OK", text, code)


def no(text: str, code: str | None = None) -> Answer:
    return Answer("NO", text, code)


def bad(text: str, code: str | None = None) -> Answer:
    return Answer("BAD", text, code)


def is_loopback(address: str) -> bool:
    try:
        parsed = ipaddress.ip_address(address.partition("%")[0])
    except ValueError:
        return False
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        return parsed.ipv4_mapped.is_loopback
    return parsed.is_loopback


Handler = Callable[[Any], Awaitable[Answer | None]]


class ImapSession:
    """One client connection; :meth:`run` until it ends, :meth:`request_stop` to end it with BYE."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: Writer,
        services: SessionServices,
        *,
        peer: str,
        tls_active: bool = False,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._services = services
        self._settings = services.settings
        self.peer = peer
        self.tls_active = tls_active
        self.state = State.NOT_AUTHENTICATED
        self.user: User | None = None
        self.store: MailStore | None = None
        self.mailbox: SelectedMailbox | None = None
        self._bad_in_a_row = 0
        self._failed_logins = 0
        self._commands = 0
        self._stop = asyncio.Event()
        self._handlers: dict[type[parser.Command], tuple[frozenset[State], Handler]] = {
            parser.Capability: (ANY_STATE, self._capability),
            parser.Noop: (ANY_STATE, self._noop),
            parser.Logout: (ANY_STATE, self._logout),
            parser.Id: (ANY_STATE, self._id),
            parser.StartTls: (NOT_AUTHENTICATED, self._starttls),
            parser.Authenticate: (NOT_AUTHENTICATED, self._authenticate),
            parser.Login: (NOT_AUTHENTICATED, self._login),
            parser.Select: (AUTHENTICATED, self._select),
            parser.Examine: (AUTHENTICATED, self._select),
            parser.Create: (AUTHENTICATED, self._create),
            parser.Delete: (AUTHENTICATED, self._delete),
            parser.Rename: (AUTHENTICATED, self._rename),
            parser.Subscribe: (AUTHENTICATED, self._subscribe),
            parser.Unsubscribe: (AUTHENTICATED, self._unsubscribe),
            parser.List: (AUTHENTICATED, self._list),
            parser.Lsub: (AUTHENTICATED, self._lsub),
            parser.Status: (AUTHENTICATED, self._status),
            parser.Append: (AUTHENTICATED, self._append),
            parser.Idle: (AUTHENTICATED, self._idle),
            parser.Namespace: (AUTHENTICATED, self._namespace),
            parser.Enable: (AUTHENTICATED, self._enable),
            parser.Check: (SELECTED, self._check),
            parser.Close: (SELECTED, self._close),
            parser.Unselect: (SELECTED, self._unselect),
            parser.Expunge: (SELECTED, self._expunge),
            parser.UidExpunge: (SELECTED, self._uid_expunge),
            parser.Search: (SELECTED, self._search),
            parser.Fetch: (SELECTED, self._fetch),
            parser.Store: (SELECTED, self._store_flags),
            parser.Copy: (SELECTED, self._copy),
            parser.Move: (SELECTED, self._move),
        }

    # -- the connection ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Greet, serve commands until the session ends, close the connection."""
        started = time.monotonic()
        reason = "logout"
        try:
            self._send(response.untagged(f"OK [CAPABILITY {self.capabilities()}] mailtoaster IMAP ready."))
            await self._flush()
            reason = await self._serve()
        except _Disconnect as disconnect:
            reason = disconnect.reason
        except (ConnectionError, ClientGone, TimeoutError, ssl.SSLError):
            reason = "connection lost"
        except Exception as error:  # a bug: the connection ends, the server goes on
            log.error("imap client=%s session failed: %s", self.peer, error, exc_info=error)
            reason = "internal error"
        finally:
            await self._release_mailbox()
            await self._close_connection()
            log.info(
                "imap client=%s closed user=%s commands=%d duration=%.1fs reason=%s",
                self.peer,
                self.user.email if self.user else "-",
                self._commands,
                time.monotonic() - started,
                reason,
            )

    def request_stop(self) -> None:
        """End the session with ``* BYE``: at once when it waits for the client, else after the
        command in progress."""
        self._stop.set()

    async def _serve(self) -> str:
        while self.state is not State.LOGOUT:
            if self._stop.is_set():
                await self._bye("Server shutting down.")
                return "shutdown"
            raw = await self._next_command()
            if raw is None:
                return "client closed"
            try:
                await self._handle(raw)
            finally:
                raw.close()
        return "logout"

    async def _next_command(self) -> RawCommand | None:
        """The next command (bad ones are answered here); None when the client has gone."""
        while True:
            reading = asyncio.ensure_future(
                read_command(self._reader, self._continue, self._limits(), self._spool_opener())
            )
            try:
                raw = await self._wait_for_client(reading, self._timeout())
            except ClientGone as gone:
                if gone.mid_command:
                    raise _Disconnect("client closed mid-command") from None
                return None
            except CommandRejected as rejected:
                self._send(rejected.response)
                await self._count_bad(rejected.status == "BAD")
                await self._flush()
                continue
            except MustDisconnect as refused:
                self._send(refused.response)
                await self._flush()
                raise _Disconnect("input over the limits") from None
            return raw

    async def _wait_for_client(self, reading: asyncio.Future[_T], timeout: float) -> _T:
        """``reading``'s result, unless the timer runs out or the server stops first (then BYE)."""
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {reading, stopping}
        try:
            done, _ = await asyncio.wait(waiting, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if reading in done:
            return reading.result()
        reading.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await reading
        if self._stop.is_set():
            await self._bye("Server shutting down.")
            raise _Disconnect("shutdown")
        await self._bye("Autologout; idle for too long.")
        raise _Disconnect("autologout")

    def _timeout(self) -> float:
        if self.state is State.NOT_AUTHENTICATED:
            return min(self._settings.preauth_timeout, self._settings.autologout)
        return self._settings.autologout

    def _limits(self) -> ReadLimits:
        if self.state is State.NOT_AUTHENTICATED:
            return PREAUTH_LIMITS
        return ReadLimits(append_limit=self._settings.append_limit)

    def _spool_opener(self) -> Callable[[int], IO[bytes]] | None:
        """Large APPEND literals go to an unnamed file in the user's Maildir ``tmp/`` (same disk)."""
        if self.store is None:
            return None
        directory = self.store.maildir.path / "tmp"

        def open_spool(size: int) -> IO[bytes]:
            return tempfile.TemporaryFile(dir=directory)

        return open_spool

    async def _continue(self) -> None:
        self._send(b"+ Ready for literal data\r\n")
        await self._flush()

    # -- output -----------------------------------------------------------------------------------

    def _send(self, data: bytes) -> None:
        self._writer.write(data)

    async def _flush(self) -> None:
        """Wait until the client has taken what was written (up to the autologout time)."""
        try:
            await asyncio.wait_for(self._writer.drain(), self._settings.autologout)
        except TimeoutError:
            raise _Disconnect("client stopped reading") from None

    async def _bye(self, text: str) -> None:
        with contextlib.suppress(ConnectionError, RuntimeError, _Disconnect, ssl.SSLError):
            self._send(response.untagged(f"BYE {text}"))
            await self._flush()

    async def _close_connection(self) -> None:
        """Close; a TLS peer that does not answer the close_notify is cut off after a while."""
        with contextlib.suppress(Exception):
            self._writer.close()
            try:
                await asyncio.wait_for(self._writer.wait_closed(), CLOSE_TIMEOUT)
            except TimeoutError:
                transport = getattr(self._writer, "transport", None)
                if transport is not None:
                    transport.abort()

    # -- one command ------------------------------------------------------------------------------

    async def _handle(self, raw: RawCommand) -> None:
        try:
            command = parser.parse_command(raw)
        except parser.ParseError as error:
            self._send(error.response)
            await self._count_bad(error.status == "BAD")
            await self._flush()
            return
        self._commands += 1
        allowed, handler = self._handlers[type(command)]
        if self.state not in allowed:
            answer: Answer | None = self._wrong_state(command)
        else:
            answer = await self._carry_out(handler, command)
        if answer is None:
            return
        if self.mailbox is not None and _reports_changes(command):
            await self._send_updates(report_expunges=_may_expunge(command))
        self._send(response.tagged(command.tag, answer.status, answer.text, answer.code))
        await self._count_bad(answer.status == "BAD")
        await self._flush()

    async def _carry_out(self, handler: Handler, command: parser.Command) -> Answer | None:
        """Run the handler; what goes wrong in the store becomes a NO (a bug too, logged)."""
        try:
            return await handler(command)
        except (_Disconnect, ConnectionError, ClientGone, asyncio.CancelledError):
            raise
        except FolderGoneError:
            await self._bye("Selected mailbox was deleted or renamed.")
            raise _Disconnect("selected mailbox gone") from None
        except Exception as error:
            return self._failure(command, error)

    def _failure(self, command: parser.Command, error: Exception) -> Answer:
        match error:
            case SequenceSetError() | FetchSyntaxError() | listing.PatternError():
                return bad(str(error)[:200] or "Invalid arguments")
            case FolderNotFoundError():
                return no("Mailbox doesn't exist.", "NONEXISTENT")
            case FolderExistsError():
                return no("Mailbox already exists.", "ALREADYEXISTS")
            case FolderNameError():
                return no("Invalid mailbox name.", "CANNOT")
            case ReadOnlyFolderError():
                return no("Mailbox is read-only.")
            case KeywordLimitError():
                return no("Too many keywords in this mailbox.", "LIMIT")
            case FlagError():
                return no("Invalid flag.", "CANNOT")
            case MessageGoneError():
                return no("Some of the requested messages no longer exist.", "EXPUNGEISSUED")
            case LockTimeoutError():
                return no("Mailbox is locked, try again later.", "INUSE")
            case MaildirError() | OSError():
                log.warning("imap client=%s %s failed: %s", self.peer, type(command).__name__, error)
                return no("Mailbox unavailable, try again later.", "UNAVAILABLE")
        name = type(command).__name__
        log.error("imap client=%s internal error in %s: %s", self.peer, name, error, exc_info=error)
        return no("Internal error.", "SERVERBUG")

    def _wrong_state(self, command: parser.Command) -> Answer:
        if self.state is State.NOT_AUTHENTICATED:
            return bad("Log in first.")
        if isinstance(command, parser.StartTls | parser.Login | parser.Authenticate):
            return bad("Already logged in.")
        return bad("No mailbox selected.")

    async def _count_bad(self, was_bad: bool) -> None:
        self._bad_in_a_row = self._bad_in_a_row + 1 if was_bad else 0
        if self._bad_in_a_row >= self._settings.max_bad_commands:
            await self._bye("Too many invalid IMAP commands.")
            raise _Disconnect("too many bad commands")

    async def _send_updates(self, *, report_expunges: bool) -> None:
        """Sync the selected folder and send what changed."""
        mailbox = self.mailbox
        assert mailbox is not None
        try:
            lines, validity_changed = await asyncio.to_thread(mailbox.sync, report_expunges=report_expunges)
        except FolderGoneError:
            await self._bye("Selected mailbox was deleted or renamed.")
            raise _Disconnect("selected mailbox gone") from None
        except MaildirError as error:
            log.warning("imap client=%s sync of %s failed: %s", self.peer, mailbox.name, error)
            return
        if validity_changed:
            await self._bye("UIDVALIDITY of the selected mailbox changed.")
            raise _Disconnect("uidvalidity changed")
        for line in lines:
            self._send(line)

    # -- any state --------------------------------------------------------------------------------

    def capabilities(self) -> str:
        words = [
            "IMAP4rev1",
            "LITERAL+",
            "SASL-IR",
            "ID",
            "ENABLE",
            "IDLE",
            "NAMESPACE",
            "UNSELECT",
            "UIDPLUS",
            "MOVE",
            "CHILDREN",
            "SPECIAL-USE",
            "LIST-EXTENDED",
            "LIST-STATUS",
            f"APPENDLIMIT={self._settings.append_limit}",
        ]
        if self.state is State.NOT_AUTHENTICATED:
            if not self.tls_active and self._services.tls is not None:
                words.append("STARTTLS")
            words.append("AUTH=PLAIN" if self._may_log_in() else "LOGINDISABLED")
        return " ".join(words)

    def _may_log_in(self) -> bool:
        return self.tls_active or (self._settings.allow_plaintext_on_loopback and is_loopback(self.peer))

    async def _capability(self, command: parser.Capability) -> Answer:
        self._send(response.untagged(f"CAPABILITY {self.capabilities()}"))
        return ok("Capability completed.")

    async def _noop(self, command: parser.Noop) -> Answer:
        return ok("NOOP completed.")

    async def _logout(self, command: parser.Logout) -> None:
        self._send(response.untagged("BYE Logging out."))
        self._send(response.tagged(command.tag, "OK", "Logout completed."))
        await self._flush()
        self.state = State.LOGOUT

    async def _id(self, command: parser.Id) -> Answer:
        if command.parameters:
            log.debug("imap client=%s id %s", self.peer, command.parameters)
        pairs = b" ".join(
            response.string(name.encode()) + b" " + response.string(value.encode())
            for name, value in SERVER_ID
        )
        self._send(response.untagged(b"ID (" + pairs + b")"))
        return ok("ID completed.")

    # -- not authenticated --------------------------------------------------------------------------

    async def _starttls(self, command: parser.StartTls) -> None:
        context = self._services.tls
        if self.tls_active or context is None:
            self._send(response.tagged(command.tag, "BAD", "TLS is not available here."))
            await self._flush()
            return
        _discard_buffered(self._reader)  # pipelined after STARTTLS: a plaintext injection
        transport = getattr(self._writer, "transport", None)
        if transport is not None:
            transport.pause_reading()  # the ClientHello must reach TLS, not this stream's buffer
        self._send(response.tagged(command.tag, "OK", "Begin TLS negotiation now."))
        await self._flush()
        try:
            await self._writer.start_tls(context)
        except (ssl.SSLError, ConnectionError, OSError, TimeoutError) as error:
            raise _Disconnect(f"TLS handshake failed: {error}") from None
        self.tls_active = True

    async def _login(self, command: parser.Login) -> Answer:
        if not self._may_log_in():
            return no("Plaintext authentication disallowed on non-secure connections.", "PRIVACYREQUIRED")
        return await self._log_in(command.username, command.password, "LOGIN")

    async def _authenticate(self, command: parser.Authenticate) -> Answer:
        if command.mechanism != "PLAIN":
            return no("Unsupported authentication mechanism.")
        if not self._may_log_in():
            return no("Plaintext authentication disallowed on non-secure connections.", "PRIVACYREQUIRED")
        initial = command.initial_response
        if initial is None:
            self._send(b"+ \r\n")
            await self._flush()
            try:
                line = await self._wait_for_client(
                    asyncio.ensure_future(read_line(self._reader, PREAUTH_LIMITS)), self._timeout()
                )
            except CommandRejected:
                return bad("Authentication response too long.")
            if line == b"*":
                return bad("Authentication aborted.")
            try:
                initial = base64.b64decode(line, validate=True)
            except (binascii.Error, ValueError):
                return bad("Invalid base64 data.")
        parts = initial.split(b"\0")
        if len(parts) != 3:
            return bad("Invalid PLAIN response (authzid NUL authcid NUL password).")
        try:
            authzid, login, password = (part.decode("utf-8") for part in parts)
        except UnicodeDecodeError:
            return no("Authentication failed.", "AUTHENTICATIONFAILED")
        if authzid and authzid != login:
            return no("Logging in as another user is not supported.", "AUTHORIZATIONFAILED")
        return await self._log_in(login, password, "PLAIN")

    async def _log_in(self, login: str, password: str, mechanism: str) -> Answer:
        accounts = self._services.accounts
        user = None
        try:
            verified = bool(login and password) and await self._services.logins.verify(
                accounts.verify_password, login, password
            )
            if verified:
                user = await asyncio.to_thread(accounts.get_user, login)
        except (DirectoryError, ValueError) as error:
            log.warning("imap client=%s login lookup failed: %s", self.peer, error)
        if user is None:
            self._failed_logins += 1
            log.info("imap client=%s login failed user=%r mechanism=%s", self.peer, login[:100], mechanism)
            if self._failed_logins >= self._settings.max_failed_logins:
                self._send(response.untagged("BYE Too many failed logins."))
                await self._flush()
                raise _Disconnect("too many failed logins")
            return no("Authentication failed.", "AUTHENTICATIONFAILED")
        store = self._services.store_for(user)
        await asyncio.to_thread(store.maildir.ensure)
        self.user, self.store, self.state = user, store, State.AUTHENTICATED
        log.info(
            "imap client=%s login user=%s mechanism=%s tls=%s",
            self.peer,
            user.email,
            mechanism,
            "yes" if self.tls_active else "no",
        )
        return ok("Logged in.", f"CAPABILITY {self.capabilities()}")

    # -- authenticated --------------------------------------------------------------------------------

    def _store(self) -> MailStore:
        assert self.store is not None
        return self.store

    async def _select(self, command: parser.Select | parser.Examine) -> Answer:
        await self._release_mailbox()
        readonly = isinstance(command, parser.Examine)
        # A folder this process has read and that did not change since costs a few stat calls: done on the
        # event loop (as an IDLE poll is). Anything more (a scan, the uid list read, \Recent claimed) in a
        # worker thread, which a large folder's scan must not block the loop from.
        folder = self._store().folder(command.mailbox, readonly=readonly)
        if not folder.sync_from_snapshot():
            await asyncio.to_thread(folder.sync)
        self.mailbox = SelectedMailbox(folder)
        self.state = State.SELECTED
        for line in self.mailbox.select_responses():
            self._send(line)
        code = "READ-ONLY" if readonly else "READ-WRITE"
        return ok("Examine completed." if readonly else "Select completed.", code)

    async def _release_mailbox(self) -> None:
        """Leave the selected state (the folder's pending sizes are written on close)."""
        mailbox, self.mailbox = self.mailbox, None
        if self.state is State.SELECTED:
            self.state = State.AUTHENTICATED
        if mailbox is not None and mailbox.folder.close_writes:
            try:
                await asyncio.to_thread(mailbox.folder.close)
            except (MaildirError, OSError) as error:
                log.warning("imap client=%s closing %s: %s", self.peer, mailbox.name, error)

    async def _create(self, command: parser.Create) -> Answer:
        await asyncio.to_thread(self._store().create, command.mailbox)
        return ok("Create completed.")

    async def _delete(self, command: parser.Delete) -> Answer:
        await asyncio.to_thread(self._store().delete, command.mailbox)
        if self.mailbox is not None and self.mailbox.name == canonical_name(command.mailbox):
            await self._release_mailbox()  # deleted by this very session: nothing left selected
        return ok("Delete completed.")

    async def _rename(self, command: parser.Rename) -> Answer:
        store = self._store()
        await asyncio.to_thread(store.rename, command.source, command.destination)
        mailbox = self.mailbox
        if mailbox is not None and mailbox.name == canonical_name(command.source) and mailbox.name != "INBOX":
            # Renamed by this very session: same UIDs and UIDVALIDITY under the new name.
            folder = await asyncio.to_thread(
                store.select, command.destination.removesuffix("."), readonly=mailbox.readonly
            )
            await asyncio.to_thread(mailbox.folder.close)
            self.mailbox = SelectedMailbox(folder)
        return ok("Rename completed.")

    async def _subscribe(self, command: parser.Subscribe) -> Answer:
        await asyncio.to_thread(self._store().subscribe, command.mailbox)
        return ok("Subscribe completed.")

    async def _unsubscribe(self, command: parser.Unsubscribe) -> Answer:
        if not await asyncio.to_thread(self._store().unsubscribe, command.mailbox):
            return no("Mailbox is not subscribed.", "NONEXISTENT")
        return ok("Unsubscribe completed.")

    async def _list(self, command: parser.List) -> Answer:
        if command.patterns == ("",) and not command.selection:
            self._send(listing.root_response(command.reference))
            return ok("List completed.")
        lines = await asyncio.to_thread(self._list_responses, command)
        for line in lines:
            self._send(line)
        return ok("List completed.")

    def _list_responses(self, command: parser.List) -> list[bytes]:
        store = self._store()
        lines = []
        for line in listing.list_lines(store, command):
            lines.append(listing.encode_list_line(line))
            if "STATUS" in command.return_options and line.selectable:
                status = listing.status_line(store, line.name, command.status_items)
                if status is not None:
                    lines.append(status)
        return lines

    async def _lsub(self, command: parser.Lsub) -> Answer:
        lines = await asyncio.to_thread(listing.lsub_lines, self._store(), command)
        for line in lines:
            self._send(listing.encode_list_line(line, b"LSUB"))
        return ok("Lsub completed.")

    async def _status(self, command: parser.Status) -> Answer:
        store = self._store()
        await asyncio.to_thread(store.folder, command.mailbox, readonly=True)  # NONEXISTENT, CANNOT
        line = await asyncio.to_thread(listing.status_line, store, command.mailbox, command.items)
        if line is None:
            return no("Mailbox doesn't exist.", "NONEXISTENT")
        self._send(line)
        return ok("Status completed.")

    async def _append(self, command: parser.Append) -> Answer:
        name = canonical_name(command.mailbox)
        source: BinaryIO | bytes
        if isinstance(command.message, SpooledLiteral):
            source = cast(BinaryIO, command.message.file)
            source.seek(0)
        else:
            source = command.message
        when = command.internal_date.timestamp() if command.internal_date is not None else None
        mailbox = self.mailbox
        try:
            if mailbox is not None and mailbox.name == name:
                result = await asyncio.to_thread(
                    mailbox.folder.append, source, flags=command.flags, internal_date=when
                )
            else:
                result = await asyncio.to_thread(
                    self._store().append, name, source, flags=command.flags, internal_date=when
                )
        except FolderNotFoundError:
            return no("Mailbox doesn't exist.", "TRYCREATE")
        self._learn(label_for_transfer(None, name), name, (result.uid,), "append")
        return ok("Append completed.", f"APPENDUID {result.uidvalidity} {result.uid}")

    async def _namespace(self, command: parser.Namespace) -> Answer:
        self._send(response.untagged('NAMESPACE (("" ".")) NIL NIL'))
        return ok("Namespace completed.")

    async def _enable(self, command: parser.Enable) -> Answer:
        self._send(response.untagged("ENABLED"))  # nothing we know is enableable: all ignored
        return ok("Enabled.")

    async def _idle(self, command: parser.Idle) -> Answer:
        self._send(b"+ idling\r\n")
        await self._flush()
        deadline = time.monotonic() + self._settings.autologout
        done = asyncio.ensure_future(read_line(self._reader))
        watch = _Watch()
        try:
            while True:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    await self._bye("Autologout; idle for too long.")
                    raise _Disconnect("autologout")
                wait = min(self._settings.idle_poll_interval, remaining)
                with contextlib.suppress(TimeoutError):
                    line = await asyncio.wait_for(self._shielded_wait(done), wait)
                    return ok("IDLE terminated.") if parser.is_idle_done(line) else bad("Expected DONE.")
                if self._stop.is_set():
                    await self._bye("Server shutting down.")
                    raise _Disconnect("shutdown")
                await self._idle_poll(watch)
        except CommandRejected:
            return bad("Expected DONE.")
        finally:
            if not done.done():
                done.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await done

    async def _shielded_wait(self, reading: asyncio.Future[bytes]) -> bytes:
        """The line ``reading`` returns; a timeout does not cancel the read, and a server stop ends
        the wait early."""
        stopping: asyncio.Future[Any] = asyncio.ensure_future(self._stop.wait())
        waiting: set[asyncio.Future[Any]] = {reading, stopping}
        try:
            await asyncio.wait(waiting, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stopping.cancel()
        if reading.done():
            return reading.result()
        raise TimeoutError

    async def _idle_poll(self, watch: _Watch) -> None:
        if self.mailbox is None or not watch.changed(self.mailbox.folder):
            return
        await self._send_updates(report_expunges=True)
        await self._flush()

    # -- selected ---------------------------------------------------------------------------------

    def _selected(self) -> SelectedMailbox:
        assert self.mailbox is not None
        return self.mailbox

    async def _check(self, command: parser.Check) -> Answer:
        return ok("Check completed.")

    async def _close(self, command: parser.Close) -> Answer:
        mailbox = self._selected()
        if not mailbox.readonly:
            await asyncio.to_thread(mailbox.folder.expunge)
        await self._release_mailbox()
        return ok("Close completed.")

    async def _unselect(self, command: parser.Unselect) -> Answer:
        await self._release_mailbox()
        return ok("Unselect completed.")

    async def _expunge(self, command: parser.Expunge) -> Answer:
        mailbox = self._selected()
        if mailbox.readonly:
            return no("Mailbox is read-only.")
        await asyncio.to_thread(mailbox.folder.expunge)
        return ok("Expunge completed.")

    async def _uid_expunge(self, command: parser.UidExpunge) -> Answer:
        mailbox = self._selected()
        if mailbox.readonly:
            return no("Mailbox is read-only.")
        uids = command.uids.uids(mailbox.uids())
        if uids:
            await asyncio.to_thread(mailbox.folder.expunge, uids)
        return ok("Expunge completed.")

    async def _search(self, command: parser.Search) -> Answer:
        found = await asyncio.to_thread(self._selected().search, command.criteria, by_uid=command.uid)
        self._send(response.untagged(" ".join(["SEARCH", *map(str, found)])))
        return ok("Search completed.")

    async def _fetch(self, command: parser.Fetch) -> Answer:
        mailbox = self._selected()
        targets = mailbox.targets(command.uid, command.sequence_set)
        wanted = fetch_items(command.items, command.uid)
        outcome = FetchOutcome()
        chunks = mailbox.fetch(targets, wanted, outcome=outcome)
        sent_any = False
        # The next batch is made in the worker thread while this one is written and drained: the
        # client reads while the server reads files (one batch ahead, never more).
        ahead: asyncio.Future[bytes] | None = None
        try:
            ahead = asyncio.ensure_future(asyncio.to_thread(take_batch, chunks))
            while batch := await ahead:
                ahead = asyncio.ensure_future(asyncio.to_thread(take_batch, chunks))
                self._send(batch)
                sent_any = True
                await self._flush()
        except (_Disconnect, ConnectionError, asyncio.CancelledError):
            raise
        except Exception as error:
            if not sent_any:
                raise
            log.error("imap client=%s FETCH failed mid-response: %s", self.peer, error, exc_info=error)
            self._send(b"\r\n")
            await self._bye("Internal error while sending a message.")
            raise _Disconnect("internal error in FETCH") from None
        finally:
            await _settled(ahead)  # the generator is not closed while a thread runs it
            chunks.close()
        if outcome.missing:
            return no("Some of the requested messages no longer exist.", "EXPUNGEISSUED")
        return ok("Fetch completed.")

    async def _store_flags(self, command: parser.Store) -> Answer:
        mailbox = self._selected()
        if mailbox.readonly:
            return no("Mailbox is read-only.")
        targets = mailbox.targets(command.uid, command.sequence_set)
        outcome = await asyncio.to_thread(
            mailbox.store, targets, command.mode, command.flags, silent=command.silent, by_uid=command.uid
        )
        for line in outcome.responses:
            self._send(line)
        by_label: dict[Label, list[int]] = {}
        for uid, added in outcome.added.items():
            label = label_for_keywords(added)
            if label is not None:
                by_label.setdefault(label, []).append(uid)
        for label, uids in by_label.items():
            self._learn(label, mailbox.name, tuple(uids), "keyword")
        return ok("Store completed.")

    async def _copy(self, command: parser.Copy) -> Answer:
        return await self._transfer(command, move=False)

    async def _move(self, command: parser.Move) -> Answer:
        return await self._transfer(command, move=True)

    async def _transfer(self, command: parser.Copy | parser.Move, *, move: bool) -> Answer:
        mailbox = self._selected()
        if move and mailbox.readonly:
            return no("Mailbox is read-only.")
        verb = "Move" if move else "Copy"
        targets = mailbox.targets(command.uid, command.sequence_set)
        name = canonical_name(command.mailbox)
        try:
            target = await self._target_folder(name)
        except FolderNotFoundError:
            return no("Mailbox doesn't exist.", "TRYCREATE")
        if not targets:
            return ok(f"{verb} completed (no messages).")
        result = await asyncio.to_thread(mailbox.transfer, targets, target, move=move)
        if not result.source_uids:
            return ok(f"{verb} completed (no messages).")
        code = (
            f"COPYUID {result.uidvalidity} {format_sequence_set(result.source_uids)} "
            f"{format_sequence_set(result.target_uids)}"
        )
        label = label_for_transfer(mailbox.name, name)
        self._learn(label, name, result.target_uids, verb.lower(), mailbox.name)
        if move:
            self._send(response.untagged(f"OK [{code}] Moved UIDs."))
            return ok("Move completed.")
        return ok("Copy completed.", code)

    async def _target_folder(self, name: str) -> Folder:
        mailbox = self._selected()
        if mailbox.name == name:
            return mailbox.folder
        return await asyncio.to_thread(self._store().folder, name)

    # -- learning ---------------------------------------------------------------------------------

    def _learn(
        self, label: Label | None, folder: str, uids: tuple[int, ...], action: str, source: str | None = None
    ) -> None:
        learner = self._services.learner
        if label is None or learner is None or not uids or self.user is None or self.store is None:
            return
        learner.submit(
            LearningEvent(self.user.email, self.store.maildir, folder, uids, label, action, source)
        )


def _reports_changes(command: parser.Command) -> bool:
    """Whether the command's answer carries the selected folder's changes (not SELECT, which reports
    the folder itself, and not the commands that leave it)."""
    return not isinstance(
        command, parser.Select | parser.Examine | parser.Close | parser.Unselect | parser.Logout
    )


def _may_expunge(command: parser.Command) -> bool:
    """RFC 3501 §7.4.1: no EXPUNGE while answering FETCH, STORE or SEARCH (their UID forms may)."""
    if isinstance(command, parser.Fetch | parser.Store | parser.Search):
        return command.uid
    return True


def _discard_buffered(reader: asyncio.StreamReader) -> None:
    """Throw away what the client sent after STARTTLS before the handshake (CVE-2011-0411's attack:
    plaintext commands injected to run after TLS starts)."""
    buffer = getattr(reader, "_buffer", None)
    if isinstance(buffer, bytearray) and buffer:
        log.info("discarding %d octets sent after STARTTLS before the handshake", len(buffer))
        buffer.clear()


class _Watch:
    """The watched files of a folder as ``stat`` sees them: a cheap test for "something changed"."""

    def __init__(self) -> None:
        self._seen: tuple[tuple[int, int, int] | None, ...] | None = None

    def changed(self, folder: Folder) -> bool:
        stamps: list[tuple[int, int, int] | None] = []
        newest = 0
        for path in folder.watch_paths():
            try:
                found = os.stat(path)
            except OSError:
                stamps.append(None)
                continue
            stamps.append((found.st_mtime_ns, found.st_size, found.st_ino))
            newest = max(newest, found.st_mtime_ns)
        current = tuple(stamps)
        changed = current != self._seen
        self._seen = current
        recent = time.time_ns() - newest < WATCH_DIRTY_SECONDS * 1_000_000_000
        return changed or recent


async def _settled(work: asyncio.Future[bytes] | None) -> None:
    """Wait for a batch still being made in a worker thread (it cannot be stopped), ignoring its outcome;
    a cancellation of the waiting task is kept for after."""
    if work is None:
        return
    cancelled = False
    while not work.done():
        try:
            await asyncio.wait([work])
        except asyncio.CancelledError:
            cancelled = True
    if not work.cancelled():
        work.exception()  # retrieved: no "exception was never retrieved" warning
    if cancelled:
        raise asyncio.CancelledError
