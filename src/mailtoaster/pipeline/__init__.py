"""From the end of DATA to the mailboxes and the queue: checks, decisions, trace fields, routing."""

from mailtoaster.pipeline.decide import InboundVerdict, decide_inbound
from mailtoaster.pipeline.process import (
    Content,
    ContentFilter,
    Expansion,
    FilterVerdict,
    Mailboxes,
    MailboxVerdict,
    Outbound,
    Pipeline,
    PipelineSettings,
    Signer,
    Submission,
)

__all__ = [
    "Content",
    "ContentFilter",
    "Expansion",
    "FilterVerdict",
    "InboundVerdict",
    "MailboxVerdict",
    "Mailboxes",
    "Outbound",
    "Pipeline",
    "PipelineSettings",
    "Signer",
    "Submission",
    "decide_inbound",
]
