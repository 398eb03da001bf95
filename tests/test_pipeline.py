"""The pipeline on its own, with recording mailboxes and queue: the content-filter stage and routing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from mailtoaster.dns import StaticResolver
from mailtoaster.message import Message
from mailtoaster.pipeline import Content, FilterVerdict, Pipeline, PipelineSettings, Submission
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

    async def check(
        self, message: Message, submission: Submission, report: VerifyReport | None
    ) -> FilterVerdict:
        self.calls += 1
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
