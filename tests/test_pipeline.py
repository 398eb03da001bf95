"""The pipeline on its own, with recording mailboxes and queue: the content-filter stage and routing."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailtoaster.dns import StaticResolver
from mailtoaster.message import Message
from mailtoaster.pipeline import (
    Content,
    FilterVerdict,
    MailboxVerdict,
    Pipeline,
    PipelineSettings,
    Submission,
)
from mailtoaster.policy import ClientPolicy
from mailtoaster.verify import VerifyReport

MESSAGE = b"From: a@sender.example\r\nTo: bob@example.org\r\nSubject: hi\r\n\r\nHello.\r\n"


@dataclass
class Recorder:
    delivered: list[tuple[str, bytes, bool]] = field(default_factory=list)
    queued: list[tuple[bytes, str, list[str]]] = field(default_factory=list)

    def is_local(self, address: str) -> bool:
        return address.endswith("@example.org")

    def expand(self, address: str) -> tuple[list[str], list[str]]:
        if address == "list@example.org":
            return ["bob@example.org"], ["far@remote.example"]
        return [address], []

    def deliver(self, mailbox: str, content: Content, *, spam: bool) -> None:
        with content.open() as rest:
            self.delivered.append((mailbox, content.prefix + rest.read(), spam))

    def enqueue(self, content: Content, sender: str, recipients: Sequence[str]) -> str:
        with content.open() as rest:
            self.queued.append((content.prefix + rest.read(), sender, list(recipients)))
        return "q1"

    def signature_fields(self, message: Message, policy: ClientPolicy) -> bytes:
        return b"X-Signed: yes\r\n"


@dataclass
class Tagger:
    verdict: FilterVerdict
    calls: int = 0
    mailboxes: list[str] = field(default_factory=list)

    async def check(
        self, message: Message, submission: Submission, report: VerifyReport | None, mailboxes: Sequence[str]
    ) -> FilterVerdict:
        self.calls += 1
        self.mailboxes = list(mailboxes)
        assert report is not None and message.get("Subject") is not None
        return self.verdict


def pipeline(recorder: Recorder, *filters: Tagger) -> Pipeline:
    return Pipeline(
        PipelineSettings(hostname="mx.example.org", authserv_id="mx.example.org"),
        resolver=StaticResolver(),
        mailboxes=recorder,
        outbound=recorder,
        signer=recorder,
        filters=filters,
    )


def submission(tmp_path: Path, recipients: tuple[str, ...], *, relay: bool = False) -> Submission:
    spool = tmp_path / "spool"
    spool.write_bytes(MESSAGE)
    return Submission(
        client_ip="192.0.2.7",
        client_name="client.sender.example",
        mail_from="a@sender.example",
        recipients=recipients,
        policy=ClientPolicy(relay=relay),
        authenticated_as=None,
        tls=False,
        extended=True,
        spool=spool,
        size=len(MESSAGE),
    )


async def test_filter_fields_and_spam_vote_reach_local_copies(tmp_path: Path) -> None:
    recorder = Recorder()
    tagger = Tagger(FilterVerdict(b"X-Spam-Status: Yes, score=8.0\r\n", spam=True))
    reply = await pipeline(recorder, tagger).process(submission(tmp_path, ("bob@example.org",)))
    assert reply.startswith("250 2.0.0")
    [(mailbox, stored, spam)] = recorder.delivered
    assert (mailbox, spam) == ("bob@example.org", True)
    assert stored.startswith(b"Received: from client.sender.example ([192.0.2.7])")
    assert b"X-Spam-Status: Yes, score=8.0\r\nFrom: a@sender.example" in stored
    assert stored.endswith(b"\r\n\r\nHello.\r\n")


async def test_a_filter_refusal_is_the_reply_and_nothing_is_stored(tmp_path: Path) -> None:
    recorder = Recorder()
    later = Tagger(FilterVerdict(b"X-Never: 1\r\n"))
    refusing = Tagger(FilterVerdict(reply="554 5.7.1 Message refused as spam"))
    reply = await pipeline(recorder, refusing, later).process(submission(tmp_path, ("bob@example.org",)))
    assert reply == "554 5.7.1 Message refused as spam"
    assert recorder.delivered == [] and recorder.queued == [] and later.calls == 0


async def test_outbound_mail_is_signed_not_filtered(tmp_path: Path) -> None:
    recorder = Recorder()
    tagger = Tagger(FilterVerdict(b"X-Spam-Status: Yes\r\n", spam=True))
    reply = await pipeline(recorder, tagger).process(
        submission(tmp_path, ("far@remote.example",), relay=True)
    )
    assert reply.startswith("250") and tagger.calls == 0
    [(stored, sender, recipients)] = recorder.queued
    assert stored.startswith(b"X-Signed: yes\r\nReceived:") and b"X-Spam" not in stored
    assert (sender, recipients) == ("a@sender.example", ["far@remote.example"])


@pytest.mark.parametrize("relay", [False, True])
async def test_aliases_expand_to_mailboxes_and_forwards_once(tmp_path: Path, relay: bool) -> None:
    recorder = Recorder()
    recipients = ("list@example.org", "bob@example.org")
    assert (await pipeline(recorder).process(submission(tmp_path, recipients, relay=relay))).startswith("250")
    assert [mailbox for mailbox, _, _ in recorder.delivered] == ["bob@example.org"]
    assert [queued[2] for queued in recorder.queued] == [["far@remote.example"]]


async def test_a_filter_sees_the_local_mailboxes_and_decides_per_copy(tmp_path: Path) -> None:
    """Aliases expanded before the filter runs; each mailbox's own fields and Junk vote go to its copy
    only, and forwarded copies get neither."""
    recorder = Recorder()
    verdict = FilterVerdict(
        b"X-Checked: yes\r\n",
        mailboxes={"bob@example.org": MailboxVerdict(b"X-Spam-Flag: YES\r\n", spam=True)},
    )
    tagger = Tagger(verdict)
    recipients = ("list@example.org", "carol@example.org")
    assert (await pipeline(recorder, tagger).process(submission(tmp_path, recipients))).startswith("250")
    assert tagger.mailboxes == ["bob@example.org", "carol@example.org"]
    copies = {mailbox: (stored, spam) for mailbox, stored, spam in recorder.delivered}
    assert copies["bob@example.org"][1] is True and copies["carol@example.org"][1] is False
    assert b"X-Checked: yes\r\nX-Spam-Flag: YES\r\nFrom:" in copies["bob@example.org"][0]
    assert b"X-Checked: yes\r\nFrom:" in copies["carol@example.org"][0]
    [(forwarded, _, _)] = recorder.queued
    assert b"X-Checked" not in forwarded and b"X-Spam-Flag" not in forwarded


async def test_filters_remove_the_fields_they_write_and_their_verdicts_add_up(tmp_path: Path) -> None:
    recorder = Recorder()
    first = Tagger(FilterVerdict(b"X-One: 1\r\n", removes=("x-spam-",), note="one=1"))
    second = Tagger(
        FilterVerdict(mailboxes={"bob@example.org": MailboxVerdict(b"X-Two: 2\r\n", True)}, note="two=2")
    )
    forged = b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=99\r\nX-Spammy-Name: kept\r\n" + MESSAGE
    sent = submission(tmp_path, ("bob@example.org",))
    sent = dataclasses.replace(sent, spool=forged, size=len(forged))  # a small message: in memory
    assert (await pipeline(recorder, first, second).process(sent)).startswith("250")
    [(_, stored, spam)] = recorder.delivered
    assert spam is True
    assert b"X-One: 1\r\nX-Two: 2\r\nX-Spammy-Name: kept\r\nFrom:" in stored
    assert b"X-Spam-Flag" not in stored and b"X-Spam-Status" not in stored


@pytest.mark.parametrize(("relay", "junk"), [(False, False), (True, True)])
async def test_an_incoming_spam_status_counts_only_from_a_relay_client(
    tmp_path: Path, relay: bool, junk: bool
) -> None:
    """Without filters: a stranger's X-Spam-Status: Yes is anyone's to write and moves nothing; a
    relay client's (a filtering gateway in front of this server) puts the copy into Junk."""
    recorder = Recorder()
    sent = submission(tmp_path, ("bob@example.org",), relay=relay)
    flagged = b"X-Spam-Status: Yes, score=9.1 required=5.0\r\n" + MESSAGE
    sent = dataclasses.replace(sent, spool=flagged, size=len(flagged))  # a small message: in memory
    assert (await pipeline(recorder).process(sent)).startswith("250")
    [(_, _, spam)] = recorder.delivered
    assert spam is junk
