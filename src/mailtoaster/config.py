"""The server's configuration: an embedded default that runs with no file at all, and a TOML file that
overrides any part of it.

Every setting lives in one frozen dataclass per TOML table. A file may leave out anything; an unknown
table or key is an error (a misspelt setting silently doing nothing is how mail servers end up open
relays). ``docs/configuration.md`` describes every setting; a test keeps the two in step.
"""

from __future__ import annotations

import dataclasses
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DEFAULT_RULES = '127.:allow,RELAYCLIENT=""\n::1:allow,RELAYCLIENT=""\n:allow\n'
"""With no rules file: loopback clients may relay (the classic tcp.smtp first line), everyone else may
send to local users only."""

_DURATION = re.compile(r"(\d+(?:\.\d+)?)\s*([smhd]?)\Z")
_DURATION_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class ConfigError(ValueError):
    """The configuration file is unreadable or says something invalid; the message names the setting."""


@dataclass(frozen=True)
class ServerSettings:
    hostname: str = ""
    """The name in the greeting, Received fields and bounces; empty: this machine's FQDN."""
    data_dir: str = "./var"
    bind: tuple[str, ...] = ("127.0.0.1",)
    smtp_port: int = 2525
    submission_port: int = 5870
    """Submission with STARTTLS (RFC 6409); AUTH is offered only after TLS."""
    smtps_port: int = 4650
    """Submission with implicit TLS (RFC 8314)."""
    authserv_id: str = ""
    """The authserv-id of our Authentication-Results fields; empty: the hostname."""
    max_message_size: int = 25 * 1024 * 1024
    max_line_length: int = 998
    """Octets per line, CRLF not counted (RFC 5321 §4.5.3.1.6)."""
    max_recipients: int = 100
    timeout: float = 300.0
    """Seconds of client silence before the connection is closed (RFC 5321 §4.5.3.2.7 suggests 5 min)."""
    workers: int = 0
    """Processes that accept SMTP connections (``mailtoaster serve``); 0: one per CPU core."""


@dataclass(frozen=True)
class TlsSettings:
    cert: str = ""
    """PEM certificate chain; empty: ``<data_dir>/tls/cert.pem``, made self-signed on first start."""
    key: str = ""


@dataclass(frozen=True)
class RulesSettings:
    file: str = ""
    """A tcprules source file (tcp.smtp); empty: :data:`DEFAULT_RULES`."""


@dataclass(frozen=True)
class DnsSettings:
    zone_file: str = ""
    """Answer from this BIND master file instead of DNS (tests, offline demos)."""
    nameservers: tuple[str, ...] = ()
    timeout: float = 5.0


@dataclass(frozen=True)
class PolicySettings:
    spf_behavior: int = 1
    """qmail-spf's SPFBEHAVIOR for clients whose rule does not set it: 0 off, 1 headers only, ... 6."""
    dmarc_reject: bool = False
    """Refuse (550 5.7.1) mail whose DMARC disposition is ``reject``; off: record it only."""
    dmarc_quarantine: bool = True
    """Deliver mail whose DMARC disposition is ``quarantine`` to the recipient's Junk folder."""


@dataclass(frozen=True)
class SigningSettings:
    dkim: bool = True
    """Sign relayed mail with every key its From domain has in the key store."""
    domainkeys: bool = False
    """Also add a DomainKey-Signature (as DKSIGN did for qmail-dk)."""


@dataclass(frozen=True)
class QueueSettings:
    lifetime: float = 5 * 86400.0
    """Seconds a message may stay in the queue before it bounces (``"5d"`` in the file)."""
    first_retry: float = 300.0
    """Wait after the first failed attempt; doubled after each further one."""
    max_retry: float = 7200.0
    """The longest wait between two attempts."""
    port: int = 25
    """The port remote exchangers are contacted on (tests use another)."""
    smarthost: str = ""
    """``host[:port]``: hand all remote mail to this relay instead of looking up MX records."""
    require_tls: bool = False
    concurrency: int = 8


@dataclass(frozen=True)
class ImapSettings:
    """The IMAP server (docs/imap.md); it runs in the main process of ``serve``."""

    bind: tuple[str, ...] = ()
    """Addresses to listen on; empty: those of ``[server] bind``."""
    imap_port: int = 1430
    """IMAP with STARTTLS (143 in production); 0: off."""
    imaps_port: int = 9930
    """IMAP over implicit TLS, RFC 8314 (993 in production); 0: off."""
    allow_plaintext_on_loopback: bool = False
    """Let clients on 127.0.0.0/8 and ::1 log in without TLS; everyone else always needs TLS."""
    append_limit: int = 50 * 1024 * 1024
    """The largest message APPEND takes (advertised as APPENDLIMIT); larger ones get NO [TOOBIG]."""
    idle_poll_interval: float = 1.0
    """Seconds between two looks at the selected folder while a client IDLEs."""
    autologout: float = 1800.0
    """Seconds of client silence before the session ends (RFC 3501 asks for at least 30 minutes)."""
    max_connections: int = 1000
    """IMAP connections at once; more are refused with BYE."""

    def __post_init__(self) -> None:
        for name in ("imap_port", "imaps_port"):
            if not 0 <= getattr(self, name) <= 65535:
                raise ConfigError(f"{name}: {getattr(self, name)} is not a port number (0: off)")
        if self.append_limit < 1:
            raise ConfigError("append_limit: must be at least 1")


SPAM_STORE_SCHEMES = ("redis://", "rediss://", "unix://")
"""How a ``[spam] store`` that names a Redis begins (redis-py's URL forms); anything else that is not
empty must be an absolute path to an SQLite file."""


@dataclass(frozen=True)
class SpamSettings:
    enabled: bool = True
    """Score inbound mail in the server (X-Spam-* fields, Junk by threshold)."""
    store: str = ""
    """The token store: empty is ``<data_dir>/spam/tokens.sqlite``; an absolute path is another SQLite
    file; ``redis://host:port/db`` (``rediss://``, ``unix://``) a Redis shared by several servers."""
    required: float = 5.0
    """Points from which a message is spam, unless the user's or the domain's own threshold says
    otherwise (the directory's ``spam_threshold``)."""
    min_spam: int = 200
    """Spam a filter must have learned before its Bayes result counts (SpamAssassin's
    ``bayes_min_spam_num``)."""
    min_ham: int = 200
    """Ham a filter must have learned before its Bayes result counts (``bayes_min_ham_num``)."""
    fail_open: bool = False
    """When the token store is unavailable: accept and score without Bayes (true), or answer with a
    temporary failure so that the sender retries (false)."""
    max_size: int = 512_000
    """Messages larger than this (octets) are not scored, as SpamAssassin's spamc skips them."""
    timeout: float = 3.0
    """Seconds for connecting to Redis and for each of its replies."""
    redis_prefix: str = "mailtoaster:bayes:"
    """The prefix of every Redis key: installations sharing one Redis database keep apart by it."""

    def __post_init__(self) -> None:
        if self.min_spam < 1 or self.min_ham < 1:
            raise ConfigError("min_spam and min_ham: must be at least 1")
        problem = spam_store_problem(self.store)
        if problem is not None:
            raise ConfigError(f"store: {problem}")


def spam_store_problem(store: str) -> str | None:
    """Why ``store`` cannot name a token store, or None. Checked at load time: a misspelt Redis URL
    taken for a file name would give every server its own empty filter without a word."""
    if not store or store.startswith(SPAM_STORE_SCHEMES) or Path(store).is_absolute():
        return None
    if "://" in store:
        return f"{store!r}: unknown scheme (use redis://, rediss:// or unix://)"
    return f"{store!r}: expected a redis:// URL or an absolute path to an SQLite file (empty: the default)"


_REFLECTOR_LOCAL_PART = re.compile(r"[a-z0-9!#$%&'*+/?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/?^_`{|}~-]+)*\Z")
"""A reflector local part: a lower-case dot-atom without ``=`` (which separates a redirect target's
domain) and without ``@``."""


@dataclass(frozen=True)
class ReflectorSettings:
    """The authentication reflector (``docs/reflector.md``): mail to ``<local_part>@<local domain>`` is
    answered with a report of every check."""

    enabled: bool = True
    local_part: str = "check-auth"
    """``check-auth@`` every local domain; ``check-auth-jsmith=example.org@`` sends the report to
    jsmith@example.org instead."""
    allow_any_target: bool = False
    """Let the redirect form name any address; off, only an address this server delivers to (a user or
    an alias of a local domain): else anyone could aim reports at a stranger."""
    max_per_sender_per_hour: int = 10
    """Reports to one address in an hour, across every worker process; more are not sent (logged)."""

    def __post_init__(self) -> None:
        if not _REFLECTOR_LOCAL_PART.match(self.local_part) or len(self.local_part) > 48:
            raise ConfigError(
                f"local_part: {self.local_part!r} is not a lower-case local part of at most 48 characters "
                "without '=' (e.g. \"check-auth\")"
            )
        if self.max_per_sender_per_hour < 1:
            raise ConfigError("max_per_sender_per_hour: must be at least 1 (set enabled = false to turn off)")


@dataclass(frozen=True)
class Config:
    server: ServerSettings = field(default_factory=ServerSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    rules: RulesSettings = field(default_factory=RulesSettings)
    dns: DnsSettings = field(default_factory=DnsSettings)
    policy: PolicySettings = field(default_factory=PolicySettings)
    signing: SigningSettings = field(default_factory=SigningSettings)
    queue: QueueSettings = field(default_factory=QueueSettings)
    spam: SpamSettings = field(default_factory=SpamSettings)
    reflector: ReflectorSettings = field(default_factory=ReflectorSettings)
    imap: ImapSettings = field(default_factory=ImapSettings)

    @property
    def data_dir(self) -> Path:
        return Path(self.server.data_dir)


def load_config(path: str | Path | None) -> Config:
    """The configuration in ``path`` over the defaults; ``None`` gives the defaults alone."""
    if path is None:
        return Config()
    try:
        with open(path, "rb") as handle:
            document = tomllib.load(handle)
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: {exc}") from exc
    return config_from_mapping(document, source=str(path))


def config_from_mapping(document: dict[str, Any], source: str = "<config>") -> Config:
    tables: dict[str, Any] = {}
    known = {item.name: item for item in dataclasses.fields(Config)}
    for table_name, values in document.items():
        if table_name not in known:
            raise ConfigError(f"{source}: unknown table [{table_name}] (known: {', '.join(known)})")
        if not isinstance(values, dict):
            raise ConfigError(f"{source}: [{table_name}] must be a table")
        settings_type = known[table_name].default_factory
        assert isinstance(settings_type, type)  # every table is a field(default_factory=<Settings>)
        tables[table_name] = _settings(settings_type, values, f"{source}: [{table_name}]")
    return Config(**tables)


def with_overrides(config: Config, table: str, **values: Any) -> Config:
    """``config`` with some settings of one table replaced (command-line options); None means keep."""
    given = {name: value for name, value in values.items() if value is not None}
    if not given:
        return config
    current = getattr(config, table)
    return dataclasses.replace(config, **{table: dataclasses.replace(current, **given)})


def parse_duration(value: object, where: str) -> float:
    """Seconds from a number or a string such as ``"90s"``, ``"30m"``, ``"5d"``."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected a duration, got {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value.strip())):
        seconds = float(match.group(1)) * _DURATION_UNITS[match.group(2)]
    else:
        raise ConfigError(f'{where}: expected a duration such as 30, "90s", "12h" or "5d", got {value!r}')
    if seconds <= 0:
        raise ConfigError(f"{where}: must be more than zero")
    return seconds


_DURATION_SETTINGS = {
    ("QueueSettings", "lifetime"),
    ("QueueSettings", "first_retry"),
    ("QueueSettings", "max_retry"),
    ("ServerSettings", "timeout"),
    ("SpamSettings", "timeout"),
    ("ImapSettings", "idle_poll_interval"),
    ("ImapSettings", "autologout"),
}


def _settings(settings_type: type[Any], values: dict[str, Any], where: str) -> Any:
    fields = {item.name: item for item in dataclasses.fields(settings_type)}
    converted: dict[str, Any] = {}
    for name, value in values.items():
        if name not in fields:
            raise ConfigError(f"{where}: unknown setting {name!r} (known: {', '.join(fields)})")
        default = fields[name].default
        converted[name] = _convert(value, default, (settings_type.__name__, name), f"{where} {name}")
    try:
        return settings_type(**converted)
    except ConfigError as exc:  # a check across settings, in the table's __post_init__
        raise ConfigError(f"{where} {exc}") from None


def _convert(value: Any, default: Any, key: tuple[str, str], where: str) -> Any:
    if key in _DURATION_SETTINGS:
        return parse_duration(value, where)
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if isinstance(default, int):
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"{where}: expected a whole number of at least 0, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise ConfigError(f"{where}: expected a number above 0, got {value!r}")
        return float(value)
    if isinstance(default, tuple):
        if isinstance(value, str):
            value = [value]
        if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
            raise ConfigError(f"{where}: expected a list of strings, got {value!r}")
        return tuple(value)
    if not isinstance(value, str):
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value
