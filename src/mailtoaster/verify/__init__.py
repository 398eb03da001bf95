"""Every authentication check on one message, and the report: what ``mailtoaster verify`` prints and
what the reflector address will send back. A summary line per check (the mail-reflector layout
postmasters know), the details behind each verdict, and the ``Authentication-Results`` header the
server would add."""

from mailtoaster.verify.render import SUMMARY_LABELS, render_json, render_summary, render_text
from mailtoaster.verify.report import Envelope, VerifyReport, verify_message

__all__ = [
    "SUMMARY_LABELS",
    "Envelope",
    "VerifyReport",
    "render_json",
    "render_summary",
    "render_text",
    "verify_message",
]
