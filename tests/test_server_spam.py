"""The spam filter in the server, end to end over loopback (docs/spam.md, "In the server").

A trained filter (``tests/spamtraining.py``) in the installation's data directory: inbound spam lands
in the recipient's Junk with SpamAssassin's fields, ham in INBOX; relayed and authenticated mail is not
scored; each recipient's threshold decides for their copy; forged X-Spam-* fields never count; a token
store that goes away is a 451 (or, with ``fail_open``, mail scored without Bayes); a store that is not
there at start stops the start. The last tests run ``mailtoaster serve`` as a process with workers.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import smtplib
from collections.abc import Callable, Iterator, Sequence
from email.parser import BytesHeaderParser
from pathlib import Path

import pytest

from mailtoaster.cli import main as cli_main
from mailtoaster.config import Config, ConfigError, ServerSettings, SpamSettings, config_from_mapping
from mailtoaster.server import MailServer, StartupError
from mailtoaster.store import Directory
from tests.redisserver import RedisServer, flush, free_port, require_redis_server, running_redis
from tests.serverharness import ALICE, ALICE_PASSWORD, BOB, RELAY_CLIENT, STRANGER, Installation, installation
from tests.serverprocess import ServerProcess, prepare_installation
from tests.spamtraining import HAM_SENDER, SPAM_SENDER, TRAINED, ham_message, install_trained, spam_message

DAVE = "dave@example.net"
"""A user of a domain whose spam threshold is -5: even ham is spam for him."""


def send(
    mail: Installation, raw: bytes, sender: str, recipients: Sequence[str] = (ALICE,), source: str = STRANGER
) -> tuple[int, bytes]:
    with mail.smtp(source) as client:
        client.mail(sender)
        for recipient in recipients:
            assert client.rcpt(recipient)[0] == 250
        return client.data(raw)


def spam_fields(stored: bytes) -> dict[str, list[str]]:
    """Every X-Spam-* field of a stored copy, unfolded, by name."""
    header = BytesHeaderParser().parsebytes(stored)
    found: dict[str, list[str]] = {}
    for name, value in header.items():
        if name.lower().startswith("x-spam-"):
            found.setdefault(name, []).append(" ".join(str(value).split()))
    return found


def rule_names(status: str) -> list[str]:
    """The test list of an X-Spam-Status value (folded after commas, as SpamAssassin folds it)."""
    return re.sub(r",\s+", ",", status).split("tests=")[1].split()[0].split(",")


def trained(template: Path, *also: Callable[[Path], None]) -> Callable[[Path], None]:
    def prepare(data_dir: Path) -> None:
        install_trained(template, data_dir)
        for step in also:
            step(data_dir)

    return prepare


def add_dave(data_dir: Path) -> None:
    with Directory.open(data_dir / "directory.sqlite", mail_root=data_dir / "mail") as directory:
        directory.add_domain("example.net", spam_threshold=-5.0)
        directory.add_user(DAVE, "a password for dave")


def set_threshold(mail: Installation, address: str, threshold: float | None) -> None:
    with Directory.open(mail.data_dir / "directory.sqlite", mail_root=mail.data_dir / "mail") as directory:
        directory.set_user_settings(address, spam_threshold=threshold)


@pytest.fixture
def mail(tmp_path: Path, trained_spam_store: Path) -> Iterator[Installation]:
    with installation(tmp_path, prepare=trained(trained_spam_store, add_dave)) as found:
        yield found


# -- verdicts ---------------------------------------------------------------------------------------


def test_inbound_spam_goes_to_junk_with_spamassassin_fields(
    mail: Installation, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO", logger="mailtoaster.smtp")
    code, _ = send(mail, spam_message(1000), SPAM_SENDER)
    assert code == 250
    assert mail.maildir_messages(ALICE) == []
    [stored] = mail.maildir_messages(ALICE, "Junk")
    fields = spam_fields(stored)
    [status] = fields["X-Spam-Status"]
    score = float(fields["X-Spam-Score"][0])
    assert fields["X-Spam-Flag"] == ["YES"]
    assert status.startswith(f"Yes, score={score:.1f} required=5.0 tests=")
    assert {"BAYES_99", "SPF_FAIL", "NO_AUTH", "MIME_HTML_ONLY"} <= set(rule_names(status))
    assert fields["X-Spam-Level"] == ["*" * int(score)]
    # Our fields come after the trace and the authentication results, on top of the message.
    assert stored.index(b"Authentication-Results:") < stored.index(b"X-Spam-Flag:") < stored.index(b"From:")
    [line] = [r.getMessage() for r in caplog.records if r.getMessage().startswith("id=")]
    assert f"spam=yes score={score:.1f}" in line and "reply='250" in line


def test_inbound_ham_goes_to_the_inbox_marked_no(mail: Installation) -> None:
    assert send(mail, ham_message(1000), HAM_SENDER)[0] == 250
    [stored] = mail.maildir_messages(ALICE)
    fields = spam_fields(stored)
    assert "X-Spam-Flag" not in fields
    [status] = fields["X-Spam-Status"]
    assert status.startswith("No, score=-") and "BAYES_00" in rule_names(status)
    assert fields["X-Spam-Level"] == [""]
    assert mail.maildir_messages(ALICE, "Junk") == []


def test_relayed_and_authenticated_mail_is_not_scored(mail: Installation) -> None:
    """Relay clients and authenticated users send mail out: signed, never judged (docs/smtp.md)."""
    assert send(mail, spam_message(1001), ALICE, source=RELAY_CLIENT)[0] == 250
    with mail.submission() as client:
        client.login(ALICE, ALICE_PASSWORD)
        client.sendmail(ALICE, [BOB], spam_message(1002, BOB))
    [relayed] = mail.maildir_messages(ALICE)
    [submitted] = mail.maildir_messages(BOB)
    assert spam_fields(relayed) == {} and spam_fields(submitted) == {}


def test_each_recipient_gets_the_verdict_of_their_own_threshold(mail: Installation) -> None:
    set_threshold(mail, BOB, 20.0)
    assert send(mail, spam_message(1003), SPAM_SENDER, [ALICE, BOB])[0] == 250
    [alice_copy] = mail.maildir_messages(ALICE, "Junk")
    [bob_copy] = mail.maildir_messages(BOB)
    assert spam_fields(alice_copy)["X-Spam-Status"][0].startswith("Yes, score=")
    assert "required=5.0" in spam_fields(alice_copy)["X-Spam-Status"][0]
    bob_status = spam_fields(bob_copy)["X-Spam-Status"][0]
    assert bob_status.startswith("No, score=") and "required=20.0" in bob_status
    assert "X-Spam-Flag" not in spam_fields(bob_copy)
    # One score for the message: the same points in both copies.
    assert spam_fields(alice_copy)["X-Spam-Score"] == spam_fields(bob_copy)["X-Spam-Score"]

    # The directory is read for every message: a change applies at once.
    set_threshold(mail, BOB, None)
    assert send(mail, spam_message(1004), SPAM_SENDER, [BOB])[0] == 250
    assert len(mail.maildir_messages(BOB, "Junk")) == 1


def test_a_domain_threshold_applies_to_its_users(mail: Installation) -> None:
    assert send(mail, ham_message(1005), HAM_SENDER, [ALICE, DAVE])[0] == 250
    assert len(mail.maildir_messages(ALICE)) == 1
    [dave_copy] = mail.maildir_messages(DAVE, "Junk")
    status = spam_fields(dave_copy)["X-Spam-Status"][0]
    assert status.startswith("Yes, score=-") and "required=-5.0" in status


def test_forged_spam_fields_from_outside_are_replaced(mail: Installation) -> None:
    """A stranger cannot put mail into Junk (whose contents the nightly sweep learns as spam) nor
    dress spam as ham: incoming X-Spam-* fields are removed, ours decide."""
    forged_yes = b"X-Spam-Flag: YES\r\nX-Spam-Status: Yes, score=99.0 required=5.0\r\nX-Spam-Report: x\r\n"
    assert send(mail, forged_yes + ham_message(1006), HAM_SENDER)[0] == 250
    [stored] = mail.maildir_messages(ALICE)
    fields = spam_fields(stored)
    assert set(fields) == {"X-Spam-Score", "X-Spam-Level", "X-Spam-Status"}
    assert [status[:3] for status in fields["X-Spam-Status"]] == ["No,"]

    forged_no = b"X-Spam-Status: No, score=-9.0 required=5.0\r\nX-Spam-Flag: NO\r\n"
    assert send(mail, forged_no + spam_message(1007), SPAM_SENDER)[0] == 250
    [junk] = mail.maildir_messages(ALICE, "Junk")
    assert spam_fields(junk)["X-Spam-Flag"] == ["YES"]
    assert [status[:4] for status in spam_fields(junk)["X-Spam-Status"]] == ["Yes,"]


def test_a_relay_clients_spam_verdict_is_honoured(mail: Installation) -> None:
    """A relay client is trusted (a filtering gateway in front of this server): its X-Spam-Status: Yes
    still puts mail into Junk. An authenticated user's is not (anyone with a password could)."""
    flagged = b"X-Spam-Status: Yes, score=9.1 required=5.0\r\n" + ham_message(1008)
    assert send(mail, flagged, "gateway@example.org", source=RELAY_CLIENT)[0] == 250
    assert mail.maildir_messages(ALICE) == [] and len(mail.maildir_messages(ALICE, "Junk")) == 1
    with mail.submission() as client:
        client.login(ALICE, ALICE_PASSWORD)
        client.sendmail(
            ALICE, [BOB], b"X-Spam-Status: Yes, score=9.1 required=5.0\r\n" + ham_message(1009, BOB)
        )
    assert len(mail.maildir_messages(BOB)) == 1 and mail.maildir_messages(BOB, "Junk") == []


def test_a_message_over_max_size_is_not_scored(
    tmp_path: Path, trained_spam_store: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    with installation(tmp_path, prepare=trained(trained_spam_store), spam={"max_size": 2000}) as mail:
        big = spam_message(1010).replace(b"</body>", b"<p>" + b"padding padding\r\n" * 150 + b"</p></body>")
        assert len(big) > 2000
        assert send(mail, big, SPAM_SENDER)[0] == 250
        [stored] = mail.maildir_messages(ALICE)
    status = spam_fields(stored)["X-Spam-Status"][0]
    assert status.startswith("No, score=0.0 required=5.0 tests=UNSCORED_TOO_BIG ")
    assert any(
        "spam check skipped" in r.getMessage() and "max_size=2000" in r.getMessage() for r in caplog.records
    )


def test_the_filter_can_be_switched_off(tmp_path: Path, trained_spam_store: Path) -> None:
    with installation(tmp_path, prepare=trained(trained_spam_store), spam={"enabled": False}) as mail:
        forged = b"X-Spam-Status: Yes, score=9.0\r\n" + spam_message(1011)
        assert send(mail, forged, SPAM_SENDER)[0] == 250
        [stored] = mail.maildir_messages(ALICE)  # no verdict of ours, and a stranger's is none
    assert spam_fields(stored) == {"X-Spam-Status": ["Yes, score=9.0"]}


# -- the token store goes away ----------------------------------------------------------------------


def _redis_config(tmp_path: Path, url: str) -> Config:
    return Config(server=ServerSettings(data_dir=str(tmp_path / "var")), spam=SpamSettings(store=url))


def test_an_unreachable_store_stops_the_start(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    with pytest.raises(StartupError) as raised:
        MailServer(_redis_config(tmp_path, url))
    message = str(raised.value)
    assert message.startswith("spam filter: token store unavailable: Redis at 127.0.0.1:")
    assert "[spam] store" in message and "\n" not in message


@pytest.mark.parametrize("fail_open", [False, True])
def test_a_store_that_goes_away_is_a_temporary_failure_unless_failing_open(
    tmp_path: Path, fail_open: bool, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level("INFO")
    with running_redis(require_redis_server()) as redis:
        settings = {"store": redis.url, "fail_open": fail_open}
        with installation(tmp_path, spam=settings) as mail:
            assert send(mail, ham_message(1012), HAM_SENDER)[0] == 250  # Redis is up
            _stop(redis)
            code, text = send(mail, ham_message(1013), HAM_SENDER)
            delivered = mail.maildir_messages(ALICE)
    logged = [record for record in caplog.records if "spam filter unavailable" in record.getMessage()]
    if not fail_open:
        assert (code, text) == (451, b"4.7.1 Spam filter temporarily unavailable, please try again later")
        assert len(delivered) == 1  # only the first
        assert [record.levelname for record in logged] == ["ERROR"]
        assert "Redis at 127.0.0.1:" in logged[0].getMessage()
        return
    assert code == 250 and len(delivered) == 2
    # By its Message-ID: Maildir names do not sort by arrival (the microseconds have no fixed width).
    [second] = [message for message in delivered if b"<ham1013@" in message]
    status = spam_fields(second)["X-Spam-Status"][0]
    assert status.startswith("No, ") and "BAYES_UNAVAILABLE" in rule_names(status)
    assert [record.levelname for record in logged] == ["WARNING"]


def _stop(redis: RedisServer) -> None:
    redis.process.terminate()
    redis.process.wait(10)


# -- configuration ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("settings", "fragment"),
    [
        ({"store": "redsi://10.0.0.5/2"}, "store: 'redsi://10.0.0.5/2': unknown scheme"),
        ({"store": "spam.sqlite"}, "expected a redis:// URL or an absolute path"),
        ({"min_spam": 0}, "min_spam and min_ham: must be at least 1"),
        ({"required": "5"}, "required: expected a number"),
        ({"bayes": True}, "unknown setting 'bayes'"),
    ],
)
def test_bad_spam_settings_are_named(settings: dict[str, object], fragment: str) -> None:
    with pytest.raises(ConfigError) as raised:
        config_from_mapping({"spam": settings}, source="serve.toml")
    assert str(raised.value).startswith("serve.toml: [spam]") and fragment in str(raised.value)


def test_spam_settings_are_read() -> None:
    config = config_from_mapping(
        {"spam": {"store": "redis://10.0.0.5:6379/2", "timeout": "2s", "max_size": 10}}
    )
    assert config.spam.store == "redis://10.0.0.5:6379/2"
    assert config.spam.timeout == 2.0 and config.spam.max_size == 10
    assert dataclasses.replace(config.spam, store="/srv/spam.sqlite").store == "/srv/spam.sqlite"


# -- mailtoaster serve as a process -------------------------------------------------------------------


def test_serve_refuses_to_start_when_its_redis_is_not_there(tmp_path: Path) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    setup = prepare_installation(tmp_path, sink_port=free_port(), overrides={"spam": {"store": url}})
    exited = ServerProcess(setup.config_file, cwd=tmp_path).run_to_exit()
    assert exited.returncode == 2
    [line] = exited.message_lines
    assert line.startswith(
        "mailtoaster serve: error: spam filter: token store unavailable: Redis at 127.0.0.1:"
    )


def test_learned_with_the_cli_and_scored_by_every_worker_process(
    tmp_path: Path, redis_server: RedisServer, capsys: pytest.CaptureFixture[str]
) -> None:
    """``mailtoaster learn --config`` fills the Redis the configuration names; the server (a main
    process and a worker, each with its own Redis client) scores from it."""
    flush(redis_server.url)
    setup = prepare_installation(
        tmp_path, sink_port=free_port(), overrides={"spam": {"store": redis_server.url}}
    )
    for label, make in (("spam", spam_message), ("ham", ham_message)):
        mbox = tmp_path / f"{label}.mbox"
        mbox.write_bytes(
            b"".join(b"From x@y Mon Jan  1 00:00:00 2024\n" + make(i) + b"\n" for i in range(TRAINED))
        )
        assert cli_main(["learn", f"--{label}", str(mbox), "--config", str(setup.config_file)]) == 0
    assert cli_main(["spam", "stats", "--config", str(setup.config_file)]) == 0
    stats = capsys.readouterr().out
    assert f"database:      {redis_server.url}" in stats and f"spam learned:  {TRAINED}" in stats
    with ServerProcess(setup.config_file, cwd=tmp_path) as server:
        server.start()
        server.wait_for_workers(1)
        for number in range(2):
            _send_to(server, spam_message(2000 + number), SPAM_SENDER)
        os.kill(server.main_pid, signal.SIGSTOP)  # only the worker accepts meanwhile
        try:
            _send_to(server, spam_message(2002), SPAM_SENDER)
            _send_to(server, ham_message(2003), HAM_SENDER)
        finally:
            os.kill(server.main_pid, signal.SIGCONT)
    junk = sorted((setup.maildir(ALICE) / ".Junk" / "new").iterdir())
    inbox = sorted((setup.maildir(ALICE) / "new").iterdir())
    assert len(junk) == 3 and len(inbox) == 1
    assert all(spam_fields(path.read_bytes())["X-Spam-Flag"] == ["YES"] for path in junk)


def _send_to(server: ServerProcess, raw: bytes, sender: str) -> None:
    client: smtplib.SMTP = server.smtp(STRANGER)
    with client:
        client.sendmail(sender, [ALICE], raw)
