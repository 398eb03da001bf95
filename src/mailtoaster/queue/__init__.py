"""The outbound queue: a durable spool (``<data-dir>/queue``), MX delivery with retries, and RFC 3464
bounces. See docs/queue.md.

The SMTP server calls :meth:`Queue.enqueue` (in a worker thread: it fsyncs) and answers ``250`` only
after it returns; :class:`QueueRunner` delivers in the background and hands bounces back to the server.
"""

from mailtoaster.queue.address import InvalidAddressError, check_address, domain_of
from mailtoaster.queue.delivery import deliver
from mailtoaster.queue.dsn import DsnError, FailedRecipient, build_dsn, read_header_section
from mailtoaster.queue.routing import Destination, RouteFailure, find_destinations
from mailtoaster.queue.runner import BounceSender, QueueRunner
from mailtoaster.queue.schedule import (
    DEFAULT_POLICY,
    RetryPolicy,
    is_expired,
    next_attempt_time,
    qmail_retry_time,
    retry_delay,
)
from mailtoaster.queue.spool import (
    QUEUE_DIR_NAME,
    CorruptEntryError,
    EntryNotFoundError,
    InvalidQueueIdError,
    Queue,
    QueueEntry,
    QueueError,
    QueueNotFoundError,
    Recipient,
    RecipientState,
    RecoveryReport,
    check_queue_id,
    queue_directory,
)
from mailtoaster.queue.types import (
    DEFAULT_MAX_MESSAGE_SIZE,
    DeliveryConfig,
    DeliveryResult,
    RecipientOutcome,
    Smarthost,
    SmtpReply,
    parse_smarthost,
)

__all__ = [
    "DEFAULT_MAX_MESSAGE_SIZE",
    "DEFAULT_POLICY",
    "QUEUE_DIR_NAME",
    "BounceSender",
    "CorruptEntryError",
    "DeliveryConfig",
    "DeliveryResult",
    "Destination",
    "DsnError",
    "EntryNotFoundError",
    "FailedRecipient",
    "InvalidAddressError",
    "InvalidQueueIdError",
    "Queue",
    "QueueEntry",
    "QueueError",
    "QueueNotFoundError",
    "QueueRunner",
    "Recipient",
    "RecipientOutcome",
    "RecipientState",
    "RecoveryReport",
    "RetryPolicy",
    "RouteFailure",
    "Smarthost",
    "SmtpReply",
    "build_dsn",
    "check_address",
    "check_queue_id",
    "deliver",
    "domain_of",
    "find_destinations",
    "is_expired",
    "next_attempt_time",
    "parse_smarthost",
    "qmail_retry_time",
    "queue_directory",
    "read_header_section",
    "retry_delay",
]
