"""SMTP receiving: aiosmtpd's protocol, subclassed (:mod:`.protocol`), and the server's decisions per
connection and envelope (:mod:`.handler`)."""

from mailtoaster.smtp.address import AddressError, parse_mailbox
from mailtoaster.smtp.handler import SmtpHandler
from mailtoaster.smtp.protocol import MailtoasterSMTP

__all__ = ["AddressError", "MailtoasterSMTP", "SmtpHandler", "parse_mailbox"]
