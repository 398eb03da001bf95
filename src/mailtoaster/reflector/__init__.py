"""The authentication reflector: mail to ``check-auth@<local domain>`` is answered with the report of
every check (SPF, Sender ID, DomainKeys, DKIM, ADSP, DMARC, ARC, the spam score), as the classic
reflectors do; ``docs/reflector.md`` describes it for the postmaster.

* :mod:`~mailtoaster.reflector.addresses` — which recipients are the reflector's (RCPT), and where
  their reports may go;
* :mod:`~mailtoaster.reflector.suppress` — RFC 3834's "do not answer" rules and the hourly limit;
* :mod:`~mailtoaster.reflector.reply` — the answer as a message (pure functions);
* :mod:`~mailtoaster.reflector.respond` — :class:`Reflector`, the pipeline stage that answers;
* :mod:`~mailtoaster.reflector.selftest` — what ``mailtoaster selftest`` sends and reads back.
"""

from mailtoaster.reflector.addresses import (
    ReflectorAddress,
    ReflectorAddressError,
    ReflectorRecipients,
    parse_reflector_address,
)
from mailtoaster.reflector.reply import build_reply, report_body
from mailtoaster.reflector.respond import Reflector, ReflectorSetup
from mailtoaster.reflector.suppress import RateLimitError, ReportRateLimit, suppression_reason

__all__ = [
    "RateLimitError",
    "Reflector",
    "ReflectorAddress",
    "ReflectorAddressError",
    "ReflectorRecipients",
    "ReflectorSetup",
    "ReportRateLimit",
    "build_reply",
    "parse_reflector_address",
    "report_body",
    "suppression_reason",
]
