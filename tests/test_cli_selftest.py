"""``mailtoaster selftest DOMAIN`` (issue 7, part 3): a message through the running server's submission
port to its own reflector, and the report read back from the sender's Maildir.

The first test runs a real ``mailtoaster serve`` process with two worker processes
(:mod:`tests.serverprocess`); the others use the threaded harness, which is quicker to start, or no
server at all for the errors found before anything is sent.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from mailtoaster.keys import KeyType, create_key
from mailtoaster.store import Directory
from tests.clirun import assert_usage_error, run
from tests.serverharness import (
    ALICE_PASSWORD,
    LOCAL_DOMAIN,
    Installation,
    free_port,
    installation,
    zone_text,
)
from tests.serverprocess import ServerProcess, prepare_installation, remote_sink
from tests.test_server_reflector import EVERY_CHECK_PASSES

SUMMARY_LINE = re.compile(r"^([A-Za-z-]+(?: [A-Za-z-]+)? check):\s+(\S+)$", re.MULTILINE)


def with_password(monkeypatch: pytest.MonkeyPatch, password: str = ALICE_PASSWORD) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(password + "\n"))


def selftest(
    capsys: pytest.CaptureFixture[str],
    mail: Installation,
    *extra: str,
    timeout: str = "30",
    port: int | None = None,
) -> tuple[int, str, str]:
    """``mailtoaster selftest`` against ``mail``'s submission port (or ``port``)."""
    return run(
        capsys,
        "selftest",
        LOCAL_DOMAIN,
        "--data-dir",
        str(mail.data_dir),
        "--port",
        str(mail.running.port("submission") if port is None else port),
        "--password-stdin",
        "--timeout",
        timeout,
        *extra,
    )


def test_every_check_passes_against_a_real_server(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The server signs with DKIM (RSA and Ed25519) and DomainKeys, and every record is in DNS."""
    with remote_sink() as (_, sink_port):
        setup = prepare_installation(
            tmp_path, sink_port=sink_port, overrides={"signing": {"domainkeys": True}}
        )
        keys_dir = setup.data_dir / "keys"
        create_key(keys_dir, LOCAL_DOMAIN, "default", key_type=KeyType.RSA)  # DomainKeys needs RSA
        setup.zone_file.write_text(zone_text(keys_dir, tmp_path / "no-sender-keys"))
        with ServerProcess(setup.config_file, cwd=tmp_path) as server:
            ports = server.start()
            with_password(monkeypatch)
            code, out, err = run(
                capsys,
                "selftest",
                LOCAL_DOMAIN,
                "--config",
                str(setup.config_file),
                "--port",
                str(ports.submission),
                "--password-stdin",
            )
            assert (code, err) == (0, ""), (out, err)
            assert dict(SUMMARY_LINE.findall(out)) == EVERY_CHECK_PASSES
            assert "It was sent by the authenticated user alice@example.org" in out
            assert "\nSummary of Results\n" in out and "\nOriginal message headers\n" in out
            server.wait_for_log(
                r"reflector report from=<alice@example\.org> rcpt=<check-auth-alice=example\.org@"
            )


@pytest.fixture
def mail(tmp_path: Path) -> Iterator[Installation]:
    """The threaded harness as it comes: DKIM signing only, no DomainKeys."""
    with installation(tmp_path, reflector={"max_per_sender_per_hour": 2}) as found:
        yield found


def test_a_check_that_does_not_pass_exits_1(
    mail: Installation, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_password(monkeypatch)
    code, out, err = selftest(capsys, mail)
    assert code == 1
    results = dict(SUMMARY_LINE.findall(out))
    assert results["DKIM check"] == "pass" and results["DomainKeys check"] == "none"
    assert err == "mailtoaster selftest: not every check passed: DomainKeys check: none\n"


def test_a_wrong_password_exits_2(
    mail: Installation, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_password(monkeypatch, "not the password")
    code, out, err = selftest(capsys, mail)
    assert_usage_error(code, out, err, "refused the login of alice@example.org: 535")


def test_no_report_in_time_exits_2(
    mail: Installation, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for _ in range(2):  # the hourly limit of this installation
        with_password(monkeypatch)
        assert selftest(capsys, mail)[0] == 1
    with_password(monkeypatch)
    code, out, err = selftest(capsys, mail, timeout="1")
    assert_usage_error(code, out, err, "no report arrived in ")


def test_an_unreachable_server_exits_2(
    mail: Installation, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_password(monkeypatch)
    code, out, err = selftest(capsys, mail, port=free_port())
    assert_usage_error(code, out, err, "cannot submit to 127.0.0.1:")


# -- refused before anything is sent --------------------------------------------------------------


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    data = tmp_path / "var"
    data.mkdir()
    with Directory.open(data / "directory.sqlite", mail_root=data / "mail") as directory:
        directory.add_domain("example.org")
        directory.add_domain("empty.example")
        directory.add_domain("other.example")
        directory.add_user("bob@other.example", "a long enough password")
    return data


@pytest.mark.parametrize(
    ("arguments", "fragment"),
    [
        (["nowhere.example"], "nowhere.example is not a local domain of this server"),
        (["empty.example"], "empty.example has no users: add one, or give --user"),
        (["example.org", "--user", "bob@other.example"], "bob@other.example is not a user of example.org"),
        (["example.org", "--user", "nobody@example.org"], "nobody@example.org is not a user of this server"),
        (["example.org", "--user", "not an address"], "not an address"),
        (["example.org", "--timeout", "0"], "--timeout 0: expected more than 0"),
        (["example.org", "--port", "70000"], "not a port number"),
    ],
)
def test_bad_input_is_one_line(
    data_dir: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    arguments: list[str],
    fragment: str,
) -> None:
    with Directory.open(data_dir / "directory.sqlite") as directory:
        directory.add_user("carol@example.org", "a long enough password")
    with_password(monkeypatch)
    code, out, err = run(capsys, "selftest", *arguments, "--data-dir", str(data_dir), "--password-stdin")
    assert_usage_error(code, out, err, fragment)


def test_no_directory_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "selftest", "example.org", "--data-dir", str(tmp_path / "none"))
    assert_usage_error(code, out, err, "no directory at ")
    assert not (tmp_path / "none").exists()  # nothing is created


def test_an_empty_password_is_one_line(
    data_dir: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    with_password(monkeypatch, "")
    code, out, err = run(
        capsys, "selftest", "other.example", "--data-dir", str(data_dir), "--password-stdin", "--port", "1"
    )
    assert_usage_error(code, out, err, "no password on standard input")


def test_a_switched_off_reflector_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "serve.toml"
    config.write_text("[reflector]\nenabled = false\n")
    code, out, err = run(capsys, "selftest", "example.org", "--config", str(config))
    assert_usage_error(code, out, err, "the reflector is off in this configuration")


def test_a_broken_configuration_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('[reflector]\nlocal_part = "A B"\n')
    code, out, err = run(capsys, "selftest", "example.org", "--config", str(config))
    assert_usage_error(code, out, err, "[reflector] local_part")
