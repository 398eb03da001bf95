"""The IMAP server over real sockets, driven by Python's imaplib and aioimaplib: every command, TLS, login
rules, two clients on one mailbox (IDLE included), limits and shutdown."""

from __future__ import annotations

import asyncio
import dataclasses
import imaplib
import logging
import re
import time
from collections.abc import Iterator
from pathlib import Path

import aioimaplib  # type: ignore[import-untyped]
import pytest

from tests.imapserver import (
    ALICE,
    ALICE_PASSWORD,
    BOB,
    FAST_SETTINGS,
    TIMEOUT,
    RawClient,
    RunningImap,
    insecure_context,
    message,
    ok,
    running_imap,
)


@pytest.fixture(autouse=True)
def info_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)


@pytest.fixture
def imap(tmp_path: Path) -> Iterator[RunningImap]:
    with running_imap(tmp_path / "imap") as running:
        yield running


def untagged(client: imaplib.IMAP4, name: str) -> list[bytes]:
    return [value for value in client.untagged_responses.pop(name, []) if isinstance(value, bytes)]


def fill_inbox(imap: RunningImap, count: int = 3) -> list[bytes]:
    client = imap.client()
    messages = [
        message(f"Message {number}", f"Body of message number {number}.") for number in range(1, count + 1)
    ]
    for data in messages:
        ok(client.append("INBOX", "", None, data))
    client.logout()
    return messages


# -- connection, capabilities, login ------------------------------------------------------------------


def test_capabilities_before_and_after_login(imap: RunningImap) -> None:
    client = imap.connect()
    before = set(client.capabilities)
    assert {"IMAP4REV1", "STARTTLS", "AUTH=PLAIN", "IDLE", "UIDPLUS", "MOVE", "LITERAL+", "SASL-IR"} <= before
    assert "LOGINDISABLED" not in before  # loopback and allow_plaintext_on_loopback
    ok(client.login(ALICE, ALICE_PASSWORD))
    _status, data = client.capability()
    after = set(data[0].decode().upper().split())
    assert "STARTTLS" not in after and "AUTH=PLAIN" not in after
    assert {
        "NAMESPACE",
        "UNSELECT",
        "ENABLE",
        "ID",
        "CHILDREN",
        "SPECIAL-USE",
        "APPENDLIMIT=52428800",
    } <= after
    assert client.logout()[0] == "BYE"


def test_plaintext_login_is_refused_unless_allowed_then_starttls_works(tmp_path: Path) -> None:
    strict = dataclasses.replace(FAST_SETTINGS, allow_plaintext_on_loopback=False)
    with running_imap(tmp_path, strict) as imap:
        client = imap.connect()
        assert "LOGINDISABLED" in client.capabilities and "AUTH=PLAIN" not in client.capabilities
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.login(ALICE, ALICE_PASSWORD)
        with pytest.raises(imaplib.IMAP4.error, match="PRIVACYREQUIRED"):
            client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{ALICE_PASSWORD}".encode())
        ok(client.starttls(ssl_context=insecure_context()))
        assert "LOGINDISABLED" not in client.capabilities and "AUTH=PLAIN" in client.capabilities
        ok(client.login(ALICE, ALICE_PASSWORD))
        ok(client.select("INBOX"))
        client.logout()


def test_starttls_is_refused_twice_and_after_login(imap: RunningImap) -> None:
    client = imap.connect()
    ok(client.starttls(ssl_context=insecure_context()))
    raw = imap.raw()
    raw.login()
    assert raw.command(b"STARTTLS")[-1].startswith(b"t BAD")
    raw.close()
    client.logout()


def test_implicit_tls(imap: RunningImap) -> None:
    client = imaplib.IMAP4_SSL(
        "127.0.0.1", imap.port("imaps"), ssl_context=insecure_context(), timeout=TIMEOUT
    )
    assert "STARTTLS" not in client.capabilities and "AUTH=PLAIN" in client.capabilities
    ok(client.login(ALICE, ALICE_PASSWORD))
    ok(client.select("INBOX"))
    client.logout()


def test_wrong_password_then_too_many(imap: RunningImap, caplog: pytest.LogCaptureFixture) -> None:
    raw = imap.raw()
    for attempt in range(2):
        answer = raw.command(f'LOGIN {ALICE} "wrong password {attempt}"'.encode())
        assert answer[-1].startswith(b"t NO [AUTHENTICATIONFAILED]")
    raw.send(b't LOGIN nobody@example.org "x"\r\n')
    assert raw.line().startswith(b"* BYE")
    assert raw.closed()
    assert "wrong password" not in caplog.text  # passwords are never logged
    assert "login failed user='alice@example.org'" in caplog.text


def test_authenticate_plain_with_and_without_initial_response(imap: RunningImap) -> None:
    client = imap.connect()
    ok(client.authenticate("PLAIN", lambda _: f"\0{ALICE}\0{ALICE_PASSWORD}".encode()))
    client.logout()
    raw = imap.raw()
    import base64

    token = base64.b64encode(f"{ALICE}\0{ALICE}\0{ALICE_PASSWORD}".encode())
    assert raw.command(b"AUTHENTICATE PLAIN " + token)[-1].startswith(b"t OK [CAPABILITY")
    raw.close()
    raw = imap.raw()
    raw.send(b"a AUTHENTICATE PLAIN\r\n")
    assert raw.line() == b"+ "
    raw.send(b"*\r\n")
    assert raw.until(b"a")[-1].startswith(b"a BAD")
    token = base64.b64encode(f"{BOB}\0{ALICE}\0{ALICE_PASSWORD}".encode())
    assert raw.command(b"AUTHENTICATE PLAIN " + token)[-1].startswith(b"t NO [AUTHORIZATIONFAILED]")
    assert raw.command(b"AUTHENTICATE CRAM-MD5")[-1].startswith(b"t NO")
    raw.close()


def test_noop_namespace_enable_and_id(imap: RunningImap) -> None:
    client = imap.client()
    ok(client.noop())
    assert ok(client.namespace()) == [b'(("" ".")) NIL NIL']
    ok(client.enable("CONDSTORE"))  # unknown to us: accepted and ignored
    client.logout()

    async def ask_id() -> list[str]:
        peer = aioimaplib.IMAP4(host="127.0.0.1", port=imap.port(), timeout=TIMEOUT)
        await peer.wait_hello_from_server()
        answer = await peer.id(name="pytest", version="1")
        await peer.logout()
        return [line.decode() if isinstance(line, bytes) else str(line) for line in answer.lines]

    lines = asyncio.run(ask_id())
    assert any('"name" "mailtoaster"' in line for line in lines), lines


def test_commands_in_the_wrong_state(imap: RunningImap) -> None:
    raw = imap.raw()
    assert raw.command(b"SELECT INBOX")[-1] == b"t BAD Log in first."
    raw.login()
    assert raw.command(b"FETCH 1 FLAGS")[-1] == b"t BAD No mailbox selected."
    assert raw.command(b"LOGIN a b")[-1] == b"t BAD Already logged in."
    assert raw.command(b"NOOP")[-1].startswith(b"t OK")
    raw.close()


# -- mailboxes -------------------------------------------------------------------------------------


def test_select_and_examine(imap: RunningImap) -> None:
    fill_inbox(imap, 2)
    client = imap.client()
    assert ok(client.select("INBOX")) == [b"2"]
    assert untagged(client, "RECENT") == [b"2"]
    assert untagged(client, "UIDNEXT") == [b"3"]
    assert untagged(client, "UNSEEN") == [b"1"]
    assert b"\\*" in untagged(client, "PERMANENTFLAGS")[0]
    assert "READ-WRITE" in client.untagged_responses
    assert ok(client.select("INBOX", readonly=True)) == [b"2"]
    assert untagged(client, "PERMANENTFLAGS") == [b"()"]
    status, data = client.store("1", "+FLAGS", "(\\Seen)")
    assert status == "NO" and b"read-only" in data[0]
    status, data = client.select("Nowhere")
    assert status == "NO" and b"NONEXISTENT" in data[0]  # type: ignore[operator]
    assert client.state == "AUTH"  # a failed SELECT leaves no mailbox selected
    client.logout()


def test_create_delete_rename_subscribe(imap: RunningImap) -> None:
    client = imap.client()
    ok(client.create("Projects"))
    ok(client.create("Projects.2026"))
    status, data = client.create("Projects")
    assert status == "NO" and b"ALREADYEXISTS" in data[0]
    assert client.create("INBOX.x")[0] == "NO"
    ok(client.subscribe("Projects"))
    ok(client.subscribe("Projects.2026"))
    assert client.subscribe("Missing")[0] == "NO"
    assert ok(client.lsub('""', "*")) == [b'() "." Projects', b'() "." Projects.2026']
    assert ok(client.lsub('""', "%")) == [b'() "." Projects']
    ok(client.rename("Projects.2026", "Archive"))
    assert client.rename("Nowhere", "Else")[0] == "NO"
    ok(client.unsubscribe("Projects.2026"))
    assert client.unsubscribe("Projects.2026")[0] == "NO"
    ok(client.delete("Projects"))
    assert client.delete("INBOX")[0] == "NO"
    names = [line.rsplit(b" ", 1)[1] for line in ok(client.list()) if isinstance(line, bytes)]
    assert names == [b"INBOX", b"Archive"]
    client.logout()


def test_unicode_mailbox_names_travel_in_modified_utf7(imap: RunningImap) -> None:
    client = imap.client()
    ok(client.create("Entw&APw-rfe"))
    assert (imap.maildir() / ".Entw&APw-rfe" / "cur").is_dir()
    assert b'"." Entw&APw-rfe' in ok(client.list('""', "Entw*"))[0]
    client.logout()


def test_list_wildcards_reference_and_special_use(imap: RunningImap) -> None:
    client = imap.client()
    for name in ("Archive.2024", "Archive.2025.Q1", "Junk", "Sent", "Trash", "Drafts"):
        ok(client.create(name))
    ok(client.subscribe("Sent"))

    def names(reference: str, pattern: str) -> list[bytes]:
        return [line for line in ok(client.list(reference, pattern)) if isinstance(line, bytes)]

    everything = names('""', "*")
    assert everything[0] == b'(\\HasNoChildren) "." INBOX'
    assert b'(\\Noselect \\HasChildren \\Archive) "." Archive' in everything
    assert b'(\\HasNoChildren \\Junk) "." Junk' in everything
    assert b'(\\HasNoChildren \\Sent) "." Sent' in everything
    assert b'(\\Noselect \\HasChildren) "." Archive.2025' in everything
    top = names('""', "%")
    assert [line.rsplit(b" ", 1)[1] for line in top] == [
        b"INBOX",
        b"Archive",
        b"Drafts",
        b"Junk",
        b"Sent",
        b"Trash",
    ]
    below = names("Archive.", "%")
    assert [line.rsplit(b" ", 1)[1] for line in below] == [b"Archive.2024", b"Archive.2025"]
    assert [line.rsplit(b" ", 1)[1] for line in names('""', "Archive.*")] == [
        b"Archive.2024",
        b"Archive.2025",
        b"Archive.2025.Q1",
    ]
    assert names('""', "inbox") == [b'(\\HasNoChildren) "." INBOX']
    assert names('""', '""') == [b'(\\Noselect) "." ""']
    assert names("Archive.2024", '""') == [b'(\\Noselect) "." Archive.']
    ok(client._simple_command("LIST", "(SPECIAL-USE)", '""', "*"))  # imaplib keeps the lines aside
    listed = untagged(client, "LIST")
    assert [line.rsplit(b" ", 1)[1] for line in listed] == [b"Archive", b"Drafts", b"Junk", b"Sent", b"Trash"]
    ok(client._simple_command("LIST", '""', "S*", "RETURN", "(SUBSCRIBED STATUS (MESSAGES UIDNEXT))"))
    assert untagged(client, "LIST") == [b'(\\HasNoChildren \\Sent \\Subscribed) "." Sent']
    assert untagged(client, "STATUS") == [b"Sent (MESSAGES 0 UIDNEXT 1)"]
    ok(client._simple_command("LIST", "(SUBSCRIBED)", '""', "*"))
    assert untagged(client, "LIST") == [b'(\\HasNoChildren \\Sent \\Subscribed) "." Sent']
    with pytest.raises(imaplib.IMAP4.error, match="wildcards"):
        client.list('""', "*%" * 30)
    client.logout()


def test_status(imap: RunningImap) -> None:
    fill_inbox(imap, 3)
    client = imap.client()
    answer = ok(client.status("INBOX", "(MESSAGES RECENT UIDNEXT UIDVALIDITY UNSEEN)"))
    assert re.fullmatch(rb"INBOX \(MESSAGES 3 RECENT 3 UIDNEXT 4 UIDVALIDITY \d+ UNSEEN 3\)", answer[0])
    status, data = client.status("Nowhere", "(MESSAGES)")
    assert status == "NO" and b"NONEXISTENT" in data[0]
    client.logout()


# -- APPEND ----------------------------------------------------------------------------------------


def test_append_flags_date_and_appenduid(imap: RunningImap) -> None:
    client = imap.client()
    data = message("Appended")
    when = imaplib.Time2Internaldate(time.mktime((2024, 5, 17, 12, 30, 0, 0, 0, -1)))
    answer = ok(client.append("INBOX", "(\\Seen $Label1)", when, data))
    assert re.fullmatch(rb"\[APPENDUID \d+ 1\] Append completed.", answer[0])
    ok(client.select("INBOX"))
    fetched = ok(client.fetch("1", "(FLAGS INTERNALDATE BODY.PEEK[])"))
    head, body = fetched[0]
    assert b"FLAGS (\\Seen $Label1)" in head and b'INTERNALDATE "17-May-2024 12:30:00' in head
    assert body == data
    status, answer = client.append("Nowhere", "", None, data)
    assert status == "NO" and b"TRYCREATE" in answer[0]
    client.logout()


def test_append_into_the_selected_mailbox_is_reported(imap: RunningImap) -> None:
    client = imap.client()
    ok(client.select("INBOX"))
    ok(client.append("INBOX", "(\\Flagged)", None, message("Mine")))
    ok(client.noop())
    assert untagged(client, "EXISTS")[-1] == b"1"
    assert untagged(client, "RECENT")[-1] == b"1"  # recent for the session that appended it
    client.logout()


def test_large_append_is_spooled_and_too_large_is_refused(tmp_path: Path) -> None:
    settings = dataclasses.replace(FAST_SETTINGS, append_limit=3_000_000)
    with running_imap(tmp_path, settings, spam=False) as imap:
        client = imap.client()
        assert "APPENDLIMIT=3000000" in ok(client.capability())[0].decode()
        big = message("Big", "0123456789abcdef" * 150_000)  # 2.4 MB, over the in-memory literal limit
        ok(client.append("INBOX", "", None, big))
        ok(client.select("INBOX"))
        fetched = ok(client.fetch("1", "(RFC822.SIZE BODY.PEEK[])"))
        assert fetched[0][1] == big
        assert b"RFC822.SIZE %d" % len(big) in fetched[0][0]
        status, data = client.append("INBOX", "", None, big + b"x" * 1_000_000)
        assert status == "NO" and b"TOOBIG" in data[0]
        ok(client.noop())  # the connection goes on
        assert not list((imap.maildir() / "tmp").iterdir())  # the spool left nothing behind
        client.logout()


# -- FETCH, SEARCH, STORE ----------------------------------------------------------------------------


def test_fetch_items_and_seen(imap: RunningImap) -> None:
    messages = fill_inbox(imap, 2)
    client = imap.client()
    ok(client.select("INBOX"))
    peeked = ok(
        client.fetch("1", "(UID FLAGS RFC822.SIZE BODY.PEEK[HEADER.FIELDS (SUBJECT)] BODY.PEEK[TEXT]<0.4>)")
    )
    assert peeked[0][0].startswith(b"1 (UID 1 FLAGS (\\Recent) RFC822.SIZE %d" % len(messages[0]))
    assert peeked[0][1] == b"Subject: Message 1\r\n\r\n"
    assert peeked[1] == (b" BODY[TEXT]<0> {4}", b"Body")
    assert b"\\Seen" not in ok(client.fetch("1", "FLAGS"))[0]
    read = ok(client.fetch("1", "(BODY[])"))
    assert read[0][1] == messages[0] and read[1] == b" FLAGS (\\Seen \\Recent))"
    envelope = ok(client.fetch("2", "(ENVELOPE BODYSTRUCTURE BODY RFC822.HEADER INTERNALDATE)"))
    assert b'ENVELOPE ("Mon, 2 Mar 2026 10:00:00 +0000" "Message 2"' in envelope[0][0]
    assert b'BODYSTRUCTURE ("text" "plain" ("charset" "us-ascii") NIL NIL "7bit"' in envelope[0][0]
    assert b"\\Seen" not in b"".join(part if isinstance(part, bytes) else part[0] for part in envelope)
    by_uid = ok(client.uid("FETCH", "2", "(FLAGS)"))
    assert by_uid == [b"2 (UID 2 FLAGS (\\Recent))"]
    with pytest.raises(imaplib.IMAP4.error, match="Invalid messageset"):
        client.fetch("9", "FLAGS")
    with pytest.raises(imaplib.IMAP4.error):
        client.fetch("1", "(BODY[1.2.MIME)")
    assert ok(client.uid("FETCH", "7:9", "FLAGS")) == [None]  # unknown UIDs name nothing
    client.logout()


def test_examine_does_not_set_seen(imap: RunningImap) -> None:
    fill_inbox(imap, 1)
    client = imap.client()
    ok(client.select("INBOX", readonly=True))
    ok(client.fetch("1", "(BODY[])"))
    assert ok(client.fetch("1", "FLAGS")) == [b"1 (FLAGS (\\Recent))"]
    client.logout()


def test_search(imap: RunningImap) -> None:
    client = imap.client()
    ok(client.append("INBOX", "", None, message("Apples", "Green apples")))
    ok(client.append("INBOX", "(\\Flagged)", None, message("Pears", "Ripe pears")))
    ok(client.append("INBOX", "", None, message("Café", "Crème brûlée".encode().decode())))
    ok(client.select("INBOX"))
    assert ok(client.search(None, "ALL")) == [b"1 2 3"]
    assert ok(client.search(None, "FLAGGED")) == [b"2"]
    assert ok(client.search(None, "OR", "SUBJECT", "apples", "BODY", "pears")) == [b"1 2"]
    assert ok(client.uid("SEARCH", "UID", "2:*", "NOT", "FLAGGED")) == [b"3"]
    client.literal = "café".encode()  # type: ignore[assignment]
    assert ok(client.search("UTF-8", "SUBJECT")) == [b"3"]
    status, data = client.search("X-UNKNOWN", "ALL")
    assert status == "NO" and b"BADCHARSET" in data[0]
    with pytest.raises(imaplib.IMAP4.error):
        client.search(None, "(SUBJECT apples")
    assert ok(client.search(None, "SEEN")) == [b""]
    client.logout()


def test_store(imap: RunningImap) -> None:
    fill_inbox(imap, 3)
    client = imap.client()
    ok(client.select("INBOX"))
    assert ok(client.store("1:2", "+FLAGS", "(\\Flagged $Work)")) == [
        b"1 (FLAGS (\\Flagged \\Recent $Work))",
        b"2 (FLAGS (\\Flagged \\Recent $Work))",
    ]
    assert ok(client.store("2", "-FLAGS", "($Work)")) == [b"2 (FLAGS (\\Flagged \\Recent))"]
    assert ok(client.store("3", "FLAGS", "(\\Answered \\Draft)")) == [
        b"3 (FLAGS (\\Answered \\Draft \\Recent))"
    ]
    assert ok(client.store("1:3", "+FLAGS.SILENT", "(\\Seen)")) == [None]
    assert ok(client.uid("STORE", "1", "-FLAGS", "(\\Seen)")) == [
        b"1 (UID 1 FLAGS (\\Flagged \\Recent $Work))"
    ]
    assert ok(client.store("2", "+FLAGS", "(\\Flagged)")) == [None]  # nothing changed, nothing said
    with pytest.raises(imaplib.IMAP4.error):
        client.store("1", "+FLAGS", "(\\Recent)")
    flags = untagged(client, "FLAGS")
    assert flags and b"$Work" in flags[-1]
    client.logout()


# -- COPY, MOVE, EXPUNGE, CLOSE, UNSELECT --------------------------------------------------------------


def test_copy_and_move(imap: RunningImap) -> None:
    fill_inbox(imap, 3)
    client = imap.client()
    ok(client.create("Archive"))
    ok(client.select("INBOX"))
    answer = ok(client.copy("1:2", "Archive"))
    assert re.fullmatch(rb"\[COPYUID \d+ 1:2 1:2\] Copy completed.", answer[0])
    status, data = client.copy("1", "Nowhere")
    assert status == "NO" and b"TRYCREATE" in data[0]
    ok(client.uid("MOVE", "3", "Archive"))
    assert re.fullmatch(rb"\d+ 3 3", untagged(client, "COPYUID")[-1])
    assert untagged(client, "EXPUNGE") == [b"3"]
    ok(client._simple_command("MOVE", "1", "Archive"))
    assert untagged(client, "EXPUNGE") == [b"1"]
    assert ok(client.status("Archive", "(MESSAGES)")) == [b"Archive (MESSAGES 4)"]
    assert ok(client.search(None, "ALL")) == [b"1"]
    assert client.uid("MOVE", "99", "Archive")[0] == "OK"
    client.logout()


def test_expunge_uid_expunge_close_unselect_check(imap: RunningImap) -> None:
    fill_inbox(imap, 5)
    client = imap.client()
    ok(client.select("INBOX"))
    ok(client.check())
    ok(client.store("1,3", "+FLAGS.SILENT", "(\\Deleted)"))
    assert ok(client.expunge()) == [b"1", b"2"]  # 3 became 2 once 1 was gone
    ok(client.store("1:3", "+FLAGS.SILENT", "(\\Deleted)"))  # UIDs 2, 4, 5
    ok(client.uid("EXPUNGE", "4"))
    assert untagged(client, "EXPUNGE") == [b"2"]
    ok(client.unselect())
    assert client.state == "AUTH"
    ok(client.select("INBOX"))
    assert untagged(client, "EXISTS")[-1] == b"2"
    ok(client.close())  # expunges silently
    assert "EXPUNGE" not in client.untagged_responses
    assert ok(client.status("INBOX", "(MESSAGES)")) == [b"INBOX (MESSAGES 0)"]
    ok(client.select("INBOX", readonly=True))
    assert client.expunge()[0] == "NO"
    client.logout()


# -- two clients on one mailbox ------------------------------------------------------------------------


def test_two_clients_see_each_others_changes(imap: RunningImap) -> None:
    fill_inbox(imap, 2)
    first, second = imap.client(), imap.client()
    ok(first.select("INBOX"))
    ok(second.select("INBOX"))
    ok(second.store("1", "+FLAGS", "(\\Answered)"))
    ok(second.append("INBOX", "", None, message("Third")))
    ok(first.noop())
    assert untagged(first, "EXISTS")[-1] == b"3"
    assert any(b"UID 1 FLAGS (\\Answered" in line for line in untagged(first, "FETCH"))
    ok(second.store("2", "+FLAGS.SILENT", "(\\Deleted)"))
    ok(second.expunge())
    # FETCH must not announce the expunge (RFC 3501 §7.4.1): message 2 stays numbered as before
    fetched = ok(first.fetch("3", "(UID)"))
    assert fetched == [b"3 (UID 3)"] and "EXPUNGE" not in first.untagged_responses
    assert first.fetch("2", "(BODY.PEEK[])")[0] == "NO"  # EXPUNGEISSUED: its file is gone
    ok(first.noop())
    assert untagged(first, "EXPUNGE") == [b"2"]
    first.logout()
    second.logout()


def test_idle_sees_another_clients_append_store_and_expunge(imap: RunningImap) -> None:
    other = imap.client()

    async def watch() -> list[bytes]:
        seen: list[bytes] = []
        client = aioimaplib.IMAP4(host="127.0.0.1", port=imap.port(), timeout=TIMEOUT)
        await client.wait_hello_from_server()
        await client.login(ALICE, ALICE_PASSWORD)
        await client.select("INBOX")
        idle = await client.idle_start(timeout=TIMEOUT)

        async def push(action: object, wanted: bytes) -> None:
            await asyncio.to_thread(action)  # type: ignore[arg-type]
            deadline = time.monotonic() + TIMEOUT
            while not any(wanted in line for line in seen):
                lines = await client.wait_server_push(timeout=max(0.1, deadline - time.monotonic()))
                seen.extend(line if isinstance(line, bytes) else str(line).encode() for line in lines)

        await push(lambda: other.append("INBOX", "", None, message("Pushed")), b"1 EXISTS")
        await push(lambda: other.store("1", "+FLAGS", "(\\Flagged)"), b"FLAGS (\\Flagged")
        await push(lambda: (other.store("1", "+FLAGS", "(\\Deleted)"), other.expunge()), b"1 EXPUNGE")
        client.idle_done()
        answer = await asyncio.wait_for(idle, TIMEOUT)
        assert answer.result == "OK"
        await client.logout()
        return seen

    ok(other.select("INBOX"))
    seen = asyncio.run(watch())
    assert b"1 EXISTS" in seen
    other.logout()


def test_idle_ends_on_done_and_refuses_anything_else(imap: RunningImap) -> None:
    raw = imap.raw()
    raw.login()
    raw.send(b"i IDLE\r\n")
    assert raw.line() == b"+ idling"
    raw.send(b"done\r\n")
    assert raw.until(b"i")[-1] == b"i OK IDLE terminated."
    raw.send(b"j IDLE\r\n")
    assert raw.line() == b"+ idling"
    raw.send(b"NOOP\r\n")
    assert raw.until(b"j")[-1] == b"j BAD Expected DONE."
    assert raw.command(b"NOOP")[-1].startswith(b"t OK")
    raw.close()


# -- limits, bad input, shutdown -----------------------------------------------------------------------


def test_bad_input_over_the_wire_leaves_the_connection_usable(
    imap: RunningImap, caplog: pytest.LogCaptureFixture
) -> None:
    raw = imap.raw()
    raw.login()
    raw.command(b"SELECT INBOX")
    assert raw.command(b"FETCH 1 (FLAGS")[-1].startswith(b"t BAD")
    assert raw.command(b"FETCH 1 FLAGS)")[-1].startswith(b"t BAD")
    assert raw.command(b"FROBNICATE")[-1].startswith(b"t BAD")
    raw.send(b"\x00\xff garbage\r\n")
    assert raw.line().startswith(b"* BAD")
    raw.send(b"t SEARCH SUBJECT {1000000000}\r\n")  # synchronizing: refused, no "+"
    assert raw.line().startswith(b"t BAD [TOOBIG]")
    raw.send(b"t SEARCH SUBJECT {3000000+}\r\n" + b"x" * 3_000_000 + b"\r\n")  # already on its way
    assert raw.until(b"t")[-1].startswith(b"t BAD [TOOBIG]")
    raw.send(b"t APPEND INBOX {99999999999}\r\n")
    assert raw.line().startswith(b"t NO [TOOBIG]")
    assert raw.command(b"NOOP")[-1].startswith(b"t OK")
    raw.close()
    assert "Traceback" not in caplog.text


def test_client_vanishing_mid_literal_is_quiet(imap: RunningImap, caplog: pytest.LogCaptureFixture) -> None:
    raw = imap.raw()
    raw.login()
    raw.send(b"a APPEND INBOX {5000000}\r\n")
    assert raw.line().startswith(b"+ ")
    raw.send(b"From: x\r\n" * 1000)
    raw.close()
    deadline = time.monotonic() + TIMEOUT
    while imap.server.session_count and time.monotonic() < deadline:
        time.sleep(0.05)
    assert imap.server.session_count == 0
    assert "Traceback" not in caplog.text and "ERROR" not in caplog.text
    client = imap.client()  # the server goes on
    ok(client.select("INBOX"))
    assert untagged(client, "EXISTS") == [b"0"]
    assert not list((imap.maildir() / "tmp").iterdir())
    client.logout()


def test_autologout(tmp_path: Path) -> None:
    settings = dataclasses.replace(FAST_SETTINGS, autologout=0.5, preauth_timeout=0.3)
    with running_imap(tmp_path, settings, spam=False) as imap:
        raw = imap.raw()
        assert raw.line() == b"* BYE Autologout; idle for too long."
        assert raw.closed()
        raw = imap.raw()
        raw.login()
        raw.send(b"i IDLE\r\n")
        assert raw.line() == b"+ idling"
        assert raw.line() == b"* BYE Autologout; idle for too long."


def test_shutdown_says_bye(tmp_path: Path) -> None:
    with running_imap(tmp_path, spam=False) as imap:
        waiting, idling = imap.raw(), imap.raw()
        waiting.login()
        idling.login()
        idling.send(b"i IDLE\r\n")
        assert idling.line() == b"+ idling"
        imap.call(imap.server.stop(grace=5))
        assert waiting.line() == b"* BYE Server shutting down."
        assert idling.line() == b"* BYE Server shutting down."
        assert waiting.closed() and idling.closed()


def test_connection_limit(tmp_path: Path) -> None:
    with running_imap(tmp_path, spam=False, max_connections=1) as imap:
        first = imap.raw()
        assert first.greeting.startswith(b"* OK")
        second = RawClient(imap.port())
        assert second.greeting.startswith(b"* BYE")
        first.close()
        second.close()


def test_memory_stays_bounded_while_a_huge_literal_is_discarded(imap: RunningImap) -> None:
    import tracemalloc

    raw = imap.raw()
    raw.login()
    chunk = b"y" * 65536
    tracemalloc.start()
    try:
        raw.send(b"t SEARCH SUBJECT {40000000+}\r\n")
        for _ in range(40000000 // len(chunk)):
            raw.send(chunk)
        raw.send(b"y" * (40000000 % len(chunk)) + b"\r\n")
        answer = raw.until(b"t")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert answer[-1].startswith(b"t BAD [TOOBIG]")
    assert peak < 8 * 1024 * 1024, peak
    assert raw.command(b"NOOP")[-1].startswith(b"t OK")
    raw.close()


# -- in the mail server ------------------------------------------------------------------------------


def test_mail_server_serves_imap_in_its_main_process_and_learns_into_its_spam_store(tmp_path: Path) -> None:
    from mailtoaster.spam.filter import message_digest
    from tests.serverharness import ALICE as HARNESS_ALICE
    from tests.serverharness import ALICE_PASSWORD as HARNESS_PASSWORD
    from tests.serverharness import free_port, installation

    ports = {"imap_port": free_port(), "imaps_port": free_port(), "allow_plaintext_on_loopback": True}
    with installation(tmp_path, imap=ports) as setup:
        server = setup.running.server
        assert server is not None and server.imap is not None and server.spam_filter is not None
        welcome = server.welcome()
        assert f"imap        127.0.0.1:{ports['imap_port']} (STARTTLS)" in welcome
        assert f"imaps       127.0.0.1:{ports['imaps_port']} (TLS)" in welcome
        client = imaplib.IMAP4_SSL(
            "127.0.0.1", ports["imaps_port"], ssl_context=insecure_context(), timeout=TIMEOUT
        )
        ok(client.login(HARNESS_ALICE, HARNESS_PASSWORD))
        data = message("Spam through the server")
        ok(client.create("Junk"))
        ok(client.append("INBOX", "", None, data))
        ok(client.select("INBOX"))
        ok(client._simple_command("MOVE", "1", "Junk"))
        assert server.imap.learner.idle.wait(TIMEOUT)
        assert server.spam_filter.store.learned_as(message_digest(data), HARNESS_ALICE) == "spam"
    assert client.readline().startswith(b"* BYE")  # the server's shutdown said goodbye


def test_imap_configuration(tmp_path: Path) -> None:
    from mailtoaster.cli.common import CliError
    from mailtoaster.cli.serve import config_from_args
    from mailtoaster.config import ConfigError, config_from_mapping

    config = config_from_mapping({"imap": {"autologout": "45m", "idle_poll_interval": 0.5, "bind": "::1"}})
    assert (
        config.imap.autologout == 2700
        and config.imap.idle_poll_interval == 0.5
        and config.imap.bind == ("::1",)
    )
    with pytest.raises(ConfigError, match="imap_port"):
        config_from_mapping({"imap": {"imap_port": 70000}})
    with pytest.raises(ConfigError, match="unknown setting"):
        config_from_mapping({"imap": {"port": 143}})
    import argparse

    from mailtoaster.cli import serve

    parser = argparse.ArgumentParser()
    serve.register(parser.add_subparsers())
    args = parser.parse_args(["serve", "--imap-port", "0", "--imaps-port", "993"])
    config = config_from_args(args)
    assert (config.imap.imap_port, config.imap.imaps_port) == (0, 993)
    assert "--imaps-port" in serve.worker_command(args)
    with pytest.raises(CliError, match="not a port number"):
        config_from_args(parser.parse_args(["serve", "--imap-port", "-1"]))


def test_serve_runs_imap_in_the_main_process_only_and_says_bye_on_sigterm(tmp_path: Path) -> None:
    import signal

    from tests.serverharness import ALICE as HARNESS_ALICE
    from tests.serverharness import ALICE_PASSWORD as HARNESS_PASSWORD
    from tests.serverharness import free_port
    from tests.serverprocess import WORKERS, ServerProcess, prepare_installation

    imap_port, imaps_port = free_port(), free_port()
    setup = prepare_installation(
        tmp_path,
        sink_port=free_port(),
        overrides={"imap": {"imap_port": imap_port, "imaps_port": imaps_port}},
    )
    with ServerProcess(setup.config_file, cwd=tmp_path) as server:
        server.start()
        assert len(server.wait_for_workers(WORKERS - 1)) == WORKERS - 1
        clients = []
        for _ in range(4):  # every connection lands in the main process, whichever accepts SMTP
            client = imaplib.IMAP4("127.0.0.1", imap_port, timeout=TIMEOUT)
            assert "LOGINDISABLED" in client.capabilities  # plaintext not allowed by default
            ok(client.starttls(ssl_context=insecure_context()))
            ok(client.login(HARNESS_ALICE, HARNESS_PASSWORD))
            clients.append(client)
        secure = imaplib.IMAP4_SSL("127.0.0.1", imaps_port, ssl_context=insecure_context(), timeout=TIMEOUT)
        ok(secure.login(HARNESS_ALICE, HARNESS_PASSWORD))
        ok(secure.append("INBOX", "", None, message("Through serve")))
        ok(clients[0].select("INBOX"))
        assert untagged(clients[0], "EXISTS") == [b"1"]
        logins = [line for line in server.log_lines if "imap client=127.0.0.1 login user=" in line]
        assert len(logins) == 5
        assert listening_pids(imap_port) == {server.main_pid} == listening_pids(imaps_port)
        server.send_signal(signal.SIGTERM)
        for client in [*clients, secure]:
            assert client.readline().startswith(b"* BYE Server shutting down.")
        assert server.wait().returncode == 0


def listening_pids(port: int) -> set[int]:
    """The processes holding the socket that listens on 127.0.0.1:``port`` (from /proc)."""
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[1] == f"0100007F:{port:04X}" and fields[3] == "0A":  # 0A: LISTEN
            inodes.add(fields[9])
    owners = set()
    for fd_dir in Path("/proc").glob("[0-9]*/fd"):
        try:
            links = [str(fd.readlink()) for fd in fd_dir.iterdir()]
        except OSError:
            continue
        if any(link == f"socket:[{inode}]" for inode in inodes for link in links):
            owners.add(int(fd_dir.parent.name))
    return owners
