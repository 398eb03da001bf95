"""The mail server process: configuration in, listeners, the queue runner and signals wired together.

Three listeners per bind address: SMTP for other servers (STARTTLS offered, AUTH after TLS), submission
with STARTTLS and submission with implicit TLS (both requiring AUTH before MAIL, RFC 6409 and RFC
8314). SIGTERM stops accepting, lets every transaction in progress finish, then exits; SIGHUP reloads
the rules file (a broken file keeps the old rules and says why).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import signal
import socket
import ssl
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from mailtoaster import __version__
from mailtoaster.config import DEFAULT_RULES, Config
from mailtoaster.dns import Resolver, ZoneFileError, load_zone_file
from mailtoaster.imap.server import ImapServer, imap_server_for
from mailtoaster.pipeline import Content, ContentFilter, Pipeline, PipelineSettings
from mailtoaster.pipeline.sign import KeyStoreSigner, SigningConfig
from mailtoaster.pipeline.spamfilter import INLINE_SIZE, SpamCheck, SpamCheckSettings
from mailtoaster.policy import (
    ClientPolicy,
    PolicyTable,
    RulesError,
    RuleSet,
    SpfBehavior,
    load_rules,
    parse_rules,
)
from mailtoaster.queue import DeliveryConfig, Queue, QueueError, QueueRunner, RetryPolicy, parse_smarthost
from mailtoaster.reflector import Reflector
from mailtoaster.server.tls import TlsSetupError, ensure_self_signed, server_context
from mailtoaster.smtp import MailtoasterSMTP, SmtpHandler
from mailtoaster.spam import SpamFilter, TokenStoreUnavailable
from mailtoaster.spam.location import describe, is_redis, open_filter
from mailtoaster.store import DIRECTORY_FILE, MAIL_DIR, Directory, DirectoryError, Maildir, deliver_for_user

log = logging.getLogger("mailtoaster.server")

SHUTDOWN_GRACE = 60.0
"""Seconds a transaction in progress may take to finish after SIGTERM before it is cut off."""


class StartupError(RuntimeError):
    """The server cannot start: a port in use, a broken rules file, an unreadable certificate, ..."""


class DirectoryMailboxes:
    """The pipeline's view of local delivery: the directory says who, Maildir++ stores."""

    def __init__(self, directory: Directory, hostname: str) -> None:
        self._directory = directory
        self._hostname = hostname

    def is_local(self, address: str) -> bool:
        return self._directory.is_local_domain(address.rpartition("@")[2])

    def expand(self, address: str) -> tuple[list[str], list[str]]:
        resolution = self._directory.resolve(address)
        if resolution is None:
            return [], []
        return [user.email for user in resolution.mailboxes], list(resolution.forwards)

    def deliver(self, mailbox: str, content: Content, *, spam: bool) -> None:
        user = self._directory.get_user(mailbox)
        if user is None:
            raise LookupError(f"mailbox {mailbox} vanished between RCPT and delivery")
        maildir = Maildir(user.maildir, hostname=self._hostname)
        with content.open() as rest:
            deliver_for_user(maildir, rest, content.prefix, spam=spam, quarantine=user.quarantine)


class QueueOutbound:
    def __init__(self, queue: Queue) -> None:
        self._queue = queue

    def enqueue(self, content: Content, sender: str, recipients: Sequence[str]) -> str:
        with content.open() as rest:
            return self._queue.enqueue(rest, sender, recipients, prefix=content.prefix).id


@dataclass(frozen=True)
class WorkerRole:
    """What makes a :class:`MailServer` one of ``serve``'s extra worker processes: it accepts on the
    main process's listening sockets instead of binding its own, and leaves the spool clean-up, the
    queue recovery and the queue runner to the main process, which ``queued`` wakes."""

    sockets: Mapping[str, Sequence[socket.socket]]
    """Listening sockets by listener name (``smtp``, ``submission``, ``smtps``)."""
    queued: Callable[[], None]


@dataclass
class Listener:
    name: str
    servers: list[asyncio.Server] = field(default_factory=list)

    @property
    def ports(self) -> list[int]:
        return sorted({sock.getsockname()[1] for server in self.servers for sock in server.sockets})


class MailServer:
    """``await start()``, then ``await wait_stopped()``; ``request_stop()`` (SIGTERM) ends it."""

    def __init__(
        self,
        config: Config,
        *,
        resolver: Resolver | None = None,
        filters: Sequence[ContentFilter] | None = None,
        worker: WorkerRole | None = None,
    ) -> None:
        """``filters`` replace the content filters the configuration asks for (the spam filter, unless
        ``[spam] enabled = false``)."""
        self.config = config
        self._worker = worker
        self.hostname = config.server.hostname or socket.getfqdn()
        self.data_dir = config.data_dir
        self.spool_dir = self.data_dir / "spool"
        """Messages over ``smtp.data.IN_MEMORY_LIMIT`` while they are received; emptied at start."""
        self._resolver = resolver
        self.listeners: dict[str, Listener] = {}
        self._connections: set[MailtoasterSMTP] = set()
        self._stop = asyncio.Event()
        try:
            self.data_dir.mkdir(parents=True, exist_ok=True)
            self._policies = self._load_policies()
            directory_file = self.data_dir / DIRECTORY_FILE
            self.directory = Directory.open(directory_file, mail_root=self.data_dir / MAIL_DIR)
            self.mailboxes = DirectoryMailboxes(self.directory, self.hostname)
            self.queue = Queue(self.data_dir / "queue")
        except (OSError, RulesError, DirectoryError, QueueError, ValueError) as error:
            raise StartupError(str(error)) from error
        self.spam_filter: SpamFilter | None = None
        if filters is None:
            filters = self._configured_filters()
        self._filters = tuple(filters)
        self.runner: QueueRunner | None = None
        self._runner_task: asyncio.Task[None] | None = None
        self.imap: ImapServer | None = None
        """The IMAP listeners (``docs/imap.md``): main process only, None in workers or when off."""
        self.reflector: Reflector | None = None
        """Answers ``check-auth@`` (``docs/reflector.md``); made in :meth:`start`, None when off."""

    # -- start and stop ------------------------------------------------------------------------

    async def start(self) -> None:
        try:
            await self._start()
        except (OSError, TlsSetupError, ValueError, ZoneFileError) as error:
            await self._close_listeners()
            raise StartupError(str(error)) from error

    async def _start(self) -> None:
        resolver = self._resolver or self._make_resolver()
        queued: Callable[[], None]
        if self._worker is None:
            self.runner = self._queue_runner(resolver)
            queued = self.runner.wake
        else:
            queued = self._worker.queued
        signer = KeyStoreSigner(
            SigningConfig(
                keys_dir=self.data_dir / "keys",
                dkim=self.config.signing.dkim,
                domainkeys=self.config.signing.domainkeys,
            )
        )
        outbound = QueueOutbound(self.queue)
        self.reflector = Reflector.for_server(
            self, resolver=resolver, signer=signer, outbound=outbound, queued=queued
        )
        pipeline = Pipeline(
            PipelineSettings(
                hostname=self.hostname,
                authserv_id=self.config.server.authserv_id or self.hostname,
                dmarc_reject=self.config.policy.dmarc_reject,
                dmarc_quarantine=self.config.policy.dmarc_quarantine,
            ),
            resolver=resolver,
            mailboxes=self.mailboxes,
            outbound=outbound,
            signer=signer,
            queued=queued,
            filters=self._filters,
            responder=self.reflector,
        )
        tls = self._tls_context()
        await self._listen(pipeline, tls)
        if self._worker is None:
            # Ports are bound (a port in use fails above, before anything is touched); clients are
            # let in only once the spool is clean and the queue recovered.
            self._clean_spool()
            recovery = await asyncio.to_thread(self.queue.recover)
            log.info("queue recovered: %s", recovery)
        if self._worker is None:
            self.imap = await imap_server_for(self, tls)
        for listener in self.listeners.values():
            for server in listener.servers:
                await server.start_serving()
        if self.runner is not None:
            self._runner_task = asyncio.create_task(self.runner.run_forever(), name="queue-runner")

    def _queue_runner(self, resolver: Resolver) -> QueueRunner:
        """The main process's one queue runner (worker processes have none: they wake this one)."""
        return QueueRunner(
            self.queue,
            resolver,
            self._delivery_config(),
            bounce=self._bounce,
            concurrency=self.config.queue.concurrency,
            policy=RetryPolicy(
                first_delay=self.config.queue.first_retry,
                max_delay=self.config.queue.max_retry,
                lifetime=self.config.queue.lifetime,
            ),
            reporting_mta=self.hostname,
        )

    def listening_fds(self) -> dict[str, list[int]]:
        """The bound sockets' file descriptors by listener name, for worker processes to accept on."""
        return {
            name: [sock.fileno() for server in listener.servers for sock in server.sockets]
            for name, listener in self.listeners.items()
        }

    def request_stop(self) -> None:
        self._stop.set()

    async def wait_stopped(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def _close_listeners(self) -> None:
        for listener in self.listeners.values():
            for server in listener.servers:
                server.close()

    def welcome(self) -> str:
        """What the postmaster sees on start: where it listens and what to do next."""
        data = self.data_dir
        lines = [f"mailtoaster {__version__} is running as {self.hostname}, data in {data}"]
        notes = {"smtp": "", "submission": " (STARTTLS, AUTH required)", "smtps": " (TLS, AUTH required)"}
        for name, listener in self.listeners.items():
            for address in self.config.server.bind:
                ports = ",".join(str(port) for port in listener.ports)
                lines.append(f"  {name:<11} {address}:{ports}{notes[name]}")
        if self.imap is not None:
            lines += self.imap.welcome_lines()
        lines.append(self._spam_line())
        lines += [
            "Next:",
            f"  mailtoaster domain add example.com --data-dir {data}",
            f"  mailtoaster user add alice@example.com --data-dir {data}",
            f"  mailtoaster keygen example.com --selector default --keys-dir {data}/keys",
            f"  mailtoaster dns records example.com --keys-dir {data}/keys",
            "Stop with Ctrl-C or SIGTERM; SIGHUP reloads the client rules.",
        ]
        return "\n".join(lines)

    def _spam_line(self) -> str:
        settings = self.config.spam
        if self.spam_filter is None:
            return "Spam filter: off"
        where = describe(settings.store, self.data_dir)
        return f"Spam filter: {where}, spam from {settings.required:g} points (or each user's threshold)"

    async def shutdown(self, grace: float = SHUTDOWN_GRACE) -> None:
        await self._close_listeners()
        if self.imap is not None:
            await self.imap.stop()
        deadline = time.monotonic() + grace
        while any(connection.busy for connection in self._connections) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for connection in list(self._connections):
            connection.close_for_shutdown()
        if self.runner is not None:
            await self.runner.stop()
        if self._runner_task is not None:
            self._runner_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner_task
        if self.spam_filter is not None:
            self.spam_filter.close()
        self.directory.close()
        log.info("stopped")

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.request_stop)
        loop.add_signal_handler(signal.SIGINT, self.request_stop)
        loop.add_signal_handler(signal.SIGHUP, self.reload_rules)

    def reload_rules(self) -> None:
        try:
            self._policies = self._load_policies()
        except Exception as error:  # a broken file must not take the server down
            log.error("rules not reloaded, keeping the old ones: %s", error)
        else:
            log.info("rules reloaded from %s", self.config.rules.file or "the built-in default")

    # -- wiring --------------------------------------------------------------------------------

    def _configured_filters(self) -> tuple[ContentFilter, ...]:
        """The spam filter, with its token store opened now: a Redis that is down or a database that
        is not one stops the start with one line, rather than every message with a 451 later. Each
        worker process opens its own (an SQLite connection or a Redis client is not shared across
        processes)."""
        settings = self.config.spam
        if not settings.enabled:
            return ()
        try:
            self.spam_filter = open_filter(settings, self.data_dir)
        except TokenStoreUnavailable as error:
            self.directory.close()
            raise StartupError(
                f"spam filter: token store unavailable: {error} "
                "(check [spam] store, or set [spam] enabled = false to run without the filter)"
            ) from error
        inline = 0 if is_redis(settings.store) else INLINE_SIZE
        check = SpamCheckSettings(settings.required, settings.max_size, settings.fail_open, inline)
        return (SpamCheck(self.spam_filter, check, thresholds=self._spam_threshold),)

    def _spam_threshold(self, mailbox: str) -> float | None:
        """The mailbox's own threshold (the user's, else the domain's); None: ``[spam] required``."""
        user = self.directory.get_user(mailbox)
        return self.directory.spam_threshold_for(user) if user is not None else None

    def _load_policies(self) -> PolicyTable:
        rules: RuleSet = (
            load_rules(self.config.rules.file) if self.config.rules.file else parse_rules(DEFAULT_RULES)
        )
        return PolicyTable(rules, default_spf=SpfBehavior(self.config.policy.spf_behavior))

    def policy_for(self, ip: str) -> ClientPolicy:
        return self._policies.policy_for(ip)

    def _make_resolver(self) -> Resolver:
        settings = self.config.dns
        if settings.zone_file:
            return load_zone_file(settings.zone_file)
        from mailtoaster.dns.live import LiveResolver, parse_nameserver

        servers = [parse_nameserver(text) for text in settings.nameservers] or None
        return LiveResolver(servers, timeout=settings.timeout)

    def _delivery_config(self) -> DeliveryConfig:
        settings = self.config.queue
        return DeliveryConfig(
            helo_name=self.hostname,
            port=settings.port,
            smarthost=parse_smarthost(settings.smarthost) if settings.smarthost else None,
            require_tls=settings.require_tls,
            max_message_size=self.config.server.max_message_size + 64 * 1024,
        )

    def _tls_context(self) -> ssl.SSLContext:
        if self.config.tls.cert:
            return server_context(Path(self.config.tls.cert), Path(self.config.tls.key))
        cert, key = ensure_self_signed(self.data_dir / "tls", self.hostname)
        return server_context(cert, key)

    def _clean_spool(self) -> None:
        """Messages left in the spool by a crash were never acknowledged: the client still has them."""
        spool = self.spool_dir
        if spool.exists():
            shutil.rmtree(spool)
        spool.mkdir(parents=True, mode=0o700)

    async def _listen(self, pipeline: Pipeline, tls: ssl.SSLContext) -> None:
        settings = self.config.server
        kinds = (
            ("smtp", settings.smtp_port, False, False),
            ("submission", settings.submission_port, True, False),
            ("smtps", settings.smtps_port, True, True),
        )
        reflector = self.reflector.recipients if self.reflector is not None else None
        handler = SmtpHandler(  # one for every listener: its state is kept per session
            policy_for=self.policy_for,
            directory=self.directory if reflector is None else reflector,  # reflector's addresses first
            pipeline=pipeline,
            max_recipients=settings.max_recipients,
            primary_domain=self._primary_domain,
            recipient_refusal=reflector.refusal if reflector is not None else lambda recipient: None,
        )
        loop = asyncio.get_running_loop()
        for name, port, submission, implicit in kinds:
            factory = self._protocol_factory(handler, tls, submission=submission, implicit=implicit)
            context = tls if implicit else None
            listener = Listener(name)
            if self._worker is not None:
                for sock in self._worker.sockets.get(name, ()):
                    server = await loop.create_server(factory, sock=sock, ssl=context, start_serving=False)
                    listener.servers.append(server)
            else:
                for address in settings.bind:
                    server = await loop.create_server(
                        factory, address, port, ssl=context, reuse_address=True, start_serving=False
                    )
                    listener.servers.append(server)
            self.listeners[name] = listener

    def _protocol_factory(
        self, handler: SmtpHandler, tls: ssl.SSLContext, *, submission: bool, implicit: bool
    ) -> Callable[[], MailtoasterSMTP]:
        def make() -> MailtoasterSMTP:
            if not implicit:
                return self._protocol(handler, tls, submission=submission, implicit=implicit)
            with warnings.catch_warnings():
                # aiosmtpd warns about AUTH without required TLS: on the implicit-TLS port the whole
                # connection is TLS before the first command, which aiosmtpd's flag does not know.
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                return self._protocol(handler, tls, submission=submission, implicit=implicit)

        return make

    def _protocol(
        self, handler: SmtpHandler, tls: ssl.SSLContext, *, submission: bool, implicit: bool
    ) -> MailtoasterSMTP:
        settings = self.config.server
        return MailtoasterSMTP(
            handler,
            spool_dir=self.spool_dir,
            password_check=self._check_password,
            max_line_length=settings.max_line_length,
            connections=self._connections,
            data_size_limit=settings.max_message_size,
            enable_SMTPUTF8=True,
            hostname=self.hostname,
            ident="mailtoaster",
            tls_context=None if implicit else tls,
            timeout=settings.timeout,
            auth_required=submission,
            auth_require_tls=not implicit,
            loop=asyncio.get_running_loop(),
        )

    async def _check_password(self, login: str, password: str) -> bool:
        return await asyncio.to_thread(self.directory.verify_password, login, password)

    def _primary_domain(self) -> str | None:
        domains = self.directory.list_domains()
        return domains[0].name if domains else None

    async def _bounce(self, dsn: bytes, original_sender: str) -> None:
        """A bounce goes to a local sender's mailbox directly, or out through the queue with the null
        sender (so that it can never bounce back, RFC 5321 §4.5.5)."""
        mailboxes = self.mailboxes
        if mailboxes.is_local(original_sender):
            local, forwards = await asyncio.to_thread(mailboxes.expand, original_sender)
            for mailbox in local:
                await asyncio.to_thread(mailboxes.deliver, mailbox, Content(dsn), spam=False)
            if not forwards:
                return
            recipients = forwards
        else:
            recipients = [original_sender]
        await asyncio.to_thread(self.queue.enqueue, dsn, "", recipients)
        if self.runner is not None:
            self.runner.wake()
