"""Which recipients are the reflector's, and where their reports may go.

``check-auth@<local domain>`` answers the envelope sender; ``check-auth-jsmith=example.org@<local
domain>`` (the classic reflectors' redirect form) answers jsmith@example.org instead. The reflector's
addresses come before the directory, as ``postmaster`` does: a catch-all alias would otherwise swallow
them. A local part that starts with ``check-auth-`` but has no ``=`` is not the reflector's, so a real
mailbox such as ``check-auth-team`` still works.

The redirect form could aim reports at anyone, so by default it may only name an address this server
delivers to; the RCPT that names another is refused with a reply that says why.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from mailtoaster.config import ReflectorSettings
from mailtoaster.smtp.address import AddressError, parse_mailbox
from mailtoaster.store import Resolution

REDIRECT_SEPARATOR = "="
"""Between the target's local part and its domain in ``check-auth-<local>=<domain>``."""


class ReflectorAddressError(ValueError):
    """A redirect form whose target is not an address; the message says what is wrong."""


class RecipientDirectory(Protocol):
    """The directory as RCPT sees it (:class:`mailtoaster.store.Directory` is one)."""

    def is_local_domain(self, domain: str) -> bool: ...

    def resolve(self, address: str) -> Resolution | None: ...


@dataclass(frozen=True)
class ReflectorAddress:
    """One recipient that is the reflector's."""

    recipient: str
    """The address as accepted at RCPT (``check-auth-jsmith=example.org@example.com``)."""
    reflector: str
    """The plain reflector address of that domain (``check-auth@example.com``): the report's From."""
    redirect: str | None
    """The redirect form's target (``jsmith@example.org``); None: the envelope sender gets the report."""


def parse_reflector_address(address: str, local_part: str) -> ReflectorAddress | None:
    """The reflector's reading of ``address`` (``local@domain``, already checked at RCPT), or None when
    the local part is not ``local_part`` or ``local_part-<target local>=<target domain>``.

    Raises :class:`ReflectorAddressError` for a redirect form whose target is not a mailbox."""
    local, _, domain = address.rpartition("@")
    lowered = local.lower()
    reflector = f"{local_part}@{domain}"
    if lowered == local_part:
        return ReflectorAddress(address, reflector, None)
    prefix = local_part + "-"
    if not lowered.startswith(prefix) or REDIRECT_SEPARATOR not in local:
        return None
    target_local, _, target_domain = local[len(prefix) :].rpartition(REDIRECT_SEPARATOR)
    if not target_local or not target_domain:
        raise ReflectorAddressError(f"expected {local_part}-LOCAL{REDIRECT_SEPARATOR}DOMAIN@{domain}")
    try:
        parsed_local, parsed_domain = parse_mailbox(f"{target_local}@{target_domain}")
    except AddressError as error:
        raise ReflectorAddressError(f"the report's target is not an address: {error}") from None
    if parsed_domain.startswith("["):
        raise ReflectorAddressError("the report's target must have a domain name, not an address literal")
    return ReflectorAddress(address, reflector, f"{parsed_local}@{parsed_domain}")


class ReflectorRecipients:
    """The reflector's addresses in this server's domains, for RCPT and for the pipeline.

    Also the directory RCPT asks (:meth:`is_local_domain`, :meth:`resolve`): the reflector's
    addresses resolve to no mailbox at all, which the SMTP handler accepts, and the reflector
    answers them once the message is in (:class:`mailtoaster.reflector.respond.Reflector`)."""

    def __init__(self, settings: ReflectorSettings, directory: RecipientDirectory) -> None:
        self._settings = settings
        self._directory = directory

    # -- the directory view --------------------------------------------------------------------

    def is_local_domain(self, domain: str) -> bool:
        return self._directory.is_local_domain(domain)

    def resolve(self, address: str) -> Resolution | None:
        """No mailbox for a reflector address whose report may be sent; else the directory's answer."""
        found = self.match(address)
        if found is not None and (
            found.redirect is None or self.target_refusal(found.redirect, address) is None
        ):
            return Resolution(address, (), ())
        return self._directory.resolve(address)

    # -- the reflector's own questions ---------------------------------------------------------

    def match(self, address: str) -> ReflectorAddress | None:
        """The reflector's reading of a recipient in one of our domains; None for anything else
        (including a malformed redirect form, which :meth:`refusal` explains)."""
        try:
            return self._parse(address)
        except ReflectorAddressError:
            return None

    def refusal(self, address: str) -> str | None:
        """The RCPT reply refusing a reflector address whose report may not be sent; None otherwise
        (not the reflector's address at all, or one that is accepted)."""
        try:
            found = self._parse(address)
        except ReflectorAddressError as error:
            return f"553 5.1.3 <{address}>: Recipient address rejected: {error}"
        if found is None or found.redirect is None:
            return None
        return self.target_refusal(found.redirect, address)

    def target_refusal(self, target: str, recipient: str) -> str | None:
        """Why a report may not go to ``target`` as a reply (None: it may)."""
        if self._parse_quietly(target) is not None:
            return f"550 5.7.1 <{recipient}>: a report cannot be sent to a reflector address"
        if self._settings.allow_any_target or self._delivered_here(target):
            return None
        return (
            f"550 5.7.1 <{recipient}>: reports go only to addresses of this server "
            "([reflector] allow_any_target is off)"
        )

    def _parse(self, address: str) -> ReflectorAddress | None:
        if not self._settings.enabled:
            return None
        if not self._directory.is_local_domain(address.rpartition("@")[2]):
            return None
        return parse_reflector_address(address, self._settings.local_part)

    def _parse_quietly(self, address: str) -> ReflectorAddress | None:
        try:
            return self._parse(address)
        except ReflectorAddressError:
            return None

    def _delivered_here(self, target: str) -> bool:
        if not self._directory.is_local_domain(target.rpartition("@")[2]):
            return False
        try:
            return self._directory.resolve(target) is not None
        except ValueError:  # a local part no account can have
            return False
