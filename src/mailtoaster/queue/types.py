"""The vocabulary of outbound delivery: its configuration and what one attempt did for each recipient."""

from __future__ import annotations

import enum
import ipaddress
import re
from dataclasses import dataclass, field

from mailtoaster.dns.types import IPAddress

DEFAULT_PORT = 25
DEFAULT_MAX_MESSAGE_SIZE = 50 * 1024 * 1024
"""aiosmtplib sends a message from one ``bytes`` object (and makes up to three transient copies while
normalising line endings and dot-stuffing), so each delivery in flight holds about four times the
message in memory. 50 MiB times the runner's concurrency bounds that."""
_ENHANCED_STATUS = re.compile(r"^([245])\.(\d{1,3})\.(\d{1,3})$")
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST_NAME = re.compile(rf"^(?=.{{1,253}}$){_LABEL}(?:\.{_LABEL})*$")


class DeliveryResult(enum.StrEnum):
    DELIVERED = "delivered"
    """The receiving server took responsibility (2xx after the data)."""
    TEMPORARY = "deferred"
    """4xx, no connection, a timeout, a DNS failure: try again later."""
    PERMANENT = "bounced"
    """5xx or a permanent local decision (null MX, mail loop): return to the sender."""


@dataclass(frozen=True)
class RecipientOutcome:
    """What one delivery attempt did for one recipient: the data the queue stores and the DSN reports."""

    recipient: str
    result: DeliveryResult
    status: str
    """RFC 3463 enhanced status code, e.g. ``2.0.0``, ``4.4.1``, ``5.1.1``."""
    diagnostic: str
    """RFC 3464 Diagnostic-Code: ``smtp; 550 5.1.1 no such user`` for a server's reply,
    ``x-mailtoaster; ...`` for a decision made here (DNS, loop detection, size)."""
    remote_mta: str = ""
    """The host name of the server that replied (empty for local decisions)."""
    relay: str = ""
    """``host[address]:port`` of that server, for the log."""
    tls: bool = False
    """Whether the transaction ran over TLS."""


@dataclass(frozen=True)
class SmtpReply:
    code: int
    text: str
    """The reply text without the code; lines of a multi-line reply joined with ``\\n``."""

    @property
    def enhanced_status(self) -> str:
        """The RFC 2034 status the server put first in its text, or ``X.0.0`` from the code's class."""
        first_word = self.text.split(None, 1)[0] if self.text.strip() else ""
        match = _ENHANCED_STATUS.match(first_word)
        if match and match.group(1) == str(self.code // 100):
            return first_word
        return f"{self.code // 100}.0.0"

    @property
    def one_line(self) -> str:
        """``550 5.1.1 no such user``: the whole reply on one line, control characters removed."""
        text = " ".join(line.strip() for line in self.text.splitlines() if line.strip())
        return f"{self.code} {''.join(c for c in text if c.isprintable())}".rstrip()

    @property
    def diagnostic(self) -> str:
        """The reply as an RFC 3464 Diagnostic-Code: ``smtp; 550 5.1.1 no such user``."""
        return f"smtp; {self.one_line}"

    @property
    def result(self) -> DeliveryResult:
        if 200 <= self.code < 300:
            return DeliveryResult.DELIVERED
        return DeliveryResult.PERMANENT if 500 <= self.code < 600 else DeliveryResult.TEMPORARY


def local_diagnostic(text: str) -> str:
    return f"x-mailtoaster; {text}"


@dataclass(frozen=True)
class Smarthost:
    """Send everything through this relay instead of looking up MX records."""

    host: str
    """A host name or an IP address."""
    port: int = DEFAULT_PORT
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    verify_certificate: bool = True
    """With credentials, TLS is mandatory and, unless this is False, the relay's certificate must
    verify against ``ca_file`` (or the system's store) and match ``host``: a password is never sent
    to whoever answers an unauthenticated connection."""
    ca_file: str | None = None

    def __post_init__(self) -> None:
        _check_port(self.port)
        if not (_is_ip_address(self.host) or _HOST_NAME.match(self.host)):
            raise ValueError(f"smarthost {self.host!r} is not a host name or IP address")
        if (self.username is None) != (self.password is None):
            raise ValueError("smarthost AUTH needs both a user name and a password")

    @property
    def has_credentials(self) -> bool:
        return self.username is not None


def parse_smarthost(
    text: str, *, username: str | None = None, password: str | None = None, ca_file: str | None = None
) -> Smarthost:
    """``host``, ``host:port``, ``[2001:db8::1]:587`` or ``[192.0.2.1]`` → :class:`Smarthost`."""
    host, port = text.strip(), DEFAULT_PORT
    if host.startswith("["):
        inside, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            raise ValueError(f"smarthost {text!r}: expected [address] or [address]:port")
        host, port_text = inside, rest[1:]
    elif host.count(":") == 1:
        host, port_text = host.split(":")
    else:
        port_text = ""
    if port_text:
        if not port_text.isdigit():
            raise ValueError(f"smarthost {text!r}: the port must be a number")
        port = int(port_text)
    return Smarthost(host, port, username, password, ca_file=ca_file)


@dataclass(frozen=True)
class DeliveryConfig:
    helo_name: str
    """Our host name, sent in EHLO/HELO; an MX pointing at this name is a mail loop."""
    port: int = DEFAULT_PORT
    """The port of MX hosts (always 25 in production; tests use another)."""
    smarthost: Smarthost | None = None
    connect_timeout: float = 30.0
    """For the TCP connection and the server's greeting."""
    command_timeout: float = 300.0
    """For each command's reply (RFC 5321 §4.5.3.2 asks for 5 minutes for MAIL and RCPT)."""
    data_timeout: float = 600.0
    """For the reply after the data has been sent (RFC 5321: 10 minutes for the final dot)."""
    require_tls: bool = False
    """Never send in plaintext: a server not offering STARTTLS gets a temporary failure (4.7.4).
    Certificates are not verified either way (opportunistic TLS, RFC 7435)."""
    max_message_size: int = DEFAULT_MAX_MESSAGE_SIZE
    local_addresses: frozenset[IPAddress] = frozenset()
    """This server's own addresses: an MX resolving to one of them is a mail loop (5.4.6)."""
    max_addresses: int = 10
    """Addresses tried per destination domain in one attempt (Postfix's ``smtp_mx_address_limit``)."""

    def __post_init__(self) -> None:
        if not _HOST_NAME.match(self.helo_name):
            raise ValueError(f"HELO name {self.helo_name!r} is not a host name")
        _check_port(self.port)
        for name in ("connect_timeout", "command_timeout", "data_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_message_size < 1 or self.max_addresses < 1:
            raise ValueError("max_message_size and max_addresses must be positive")


def _check_port(port: int) -> None:
    if not 0 < port < 65536:
        raise ValueError(f"port {port} is out of range (1-65535)")


def _is_ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True
