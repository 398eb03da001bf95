"""``mailtoaster domain|user|alias``, run in-process against a data directory in tmp_path."""

from __future__ import annotations

import getpass
import io
import stat
import sys
from pathlib import Path

import pytest

from mailtoaster.cli import main
from mailtoaster.store import Directory
from tests.clirun import assert_usage_error


def run(capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str) -> tuple[int, str, str]:
    code = main([*argv, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return code, out, err


def run_argparse_error(
    capsys: pytest.CaptureFixture[str], data_dir: Path, *argv: str
) -> tuple[int, str, str]:
    """argparse's own errors (unknown or missing arguments) exit through SystemExit(2)."""
    with pytest.raises(SystemExit) as exc:
        main([*argv, "--data-dir", str(data_dir)])
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


def feed_stdin(monkeypatch: pytest.MonkeyPatch, text: str) -> None:
    monkeypatch.setattr(sys, "stdin", io.StringIO(text))


def prompt_answers(monkeypatch: pytest.MonkeyPatch, *answers: str) -> list[str]:
    prompts: list[str] = []
    replies = iter(answers)

    def fake_getpass(prompt: str = "Password: ", stream: object = None) -> str:
        prompts.append(prompt)
        return next(replies)

    monkeypatch.setattr(getpass, "getpass", fake_getpass)
    return prompts


def open_directory(data_dir: Path) -> Directory:
    return Directory.open(data_dir / "directory.sqlite")


def test_domain_add_list_del(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert run(capsys, tmp_path, "domain", "add", "Example.COM") == (0, "added domain example.com\n", "")
    code, out, _ = run(capsys, tmp_path, "domain", "add", "bücher.de", "--spam-threshold", "6")
    assert (code, out) == (0, "added domain xn--bcher-kva.de\n")
    code, out, _ = run(capsys, tmp_path, "domain", "list")
    assert out.splitlines() == [
        "example.com\tusers=0\tspam-threshold=default",
        "xn--bcher-kva.de\tusers=0\tspam-threshold=6",
    ]
    code, out, _ = run(capsys, tmp_path, "domain", "set", "example.com", "--spam-threshold", "4.5")
    assert (code, out) == (0, "example.com: spam-threshold=4.5\n")
    code, out, _ = run(capsys, tmp_path, "domain", "del", "bücher.de")
    assert code == 0 and out.startswith("removed domain xn--bcher-kva.de")
    with open_directory(tmp_path) as directory:
        assert [(d.name, d.spam_threshold) for d in directory.list_domains()] == [("example.com", 4.5)]
    assert stat.S_IMODE((tmp_path / "directory.sqlite").stat().st_mode) == 0o600


def test_default_data_dir_is_var(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["domain", "add", "example.com"]) == 0
    assert (tmp_path / "var" / "directory.sqlite").is_file()
    capsys.readouterr()


def test_user_add_with_password_from_stdin_creates_the_maildir(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    feed_stdin(monkeypatch, "s3cret pass\r\nsecond line is ignored\n")
    code, out, err = run(capsys, tmp_path, "user", "add", "Bob@Example.com", "--password-stdin")
    maildir = tmp_path / "mail" / "example.com" / "bob" / "Maildir"
    assert (code, err) == (0, "")
    assert out == f"added user bob@example.com, Maildir {maildir}\n"
    for sub in ("cur", "new", "tmp"):
        assert (maildir / sub).is_dir()
    assert stat.S_IMODE(maildir.stat().st_mode) == 0o700
    with open_directory(tmp_path) as directory:
        assert directory.verify_password("bob@example.com", "s3cret pass")
        assert not directory.verify_password("bob@example.com", "second line is ignored")
        user = directory.get_user("bob@example.com")
    assert user is not None and user.quarantine and user.spam_threshold is None


def test_user_add_with_prompt_asks_twice(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    prompts = prompt_answers(monkeypatch, "typed-twice", "typed-twice")
    code, _, _ = run(
        capsys, tmp_path, "user", "add", "alice@example.com", "--quarantine", "off", "--spam-threshold", "3.5"
    )
    assert code == 0
    assert len(prompts) == 2
    with open_directory(tmp_path) as directory:
        assert directory.verify_password("alice@example.com", "typed-twice")
        user = directory.get_user("alice@example.com")
    assert user is not None and (user.quarantine, user.spam_threshold) == (False, 3.5)


def test_user_add_prompt_mismatch_and_empty_are_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    prompt_answers(monkeypatch, "one", "two")
    assert_usage_error(*run(capsys, tmp_path, "user", "add", "bob@example.com"), "passwords differ")
    prompt_answers(monkeypatch, "", "")
    assert_usage_error(*run(capsys, tmp_path, "user", "add", "bob@example.com"), "password is empty")
    feed_stdin(monkeypatch, "")
    assert_usage_error(
        *run(capsys, tmp_path, "user", "add", "bob@example.com", "--password-stdin"),
        "no password on standard input",
    )
    with open_directory(tmp_path) as directory:
        assert directory.list_users() == []


def test_password_is_never_accepted_as_an_argument(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    for extra in (["--password", "visible-in-ps"], ["visible-in-ps"]):
        code, out, err = run_argparse_error(capsys, tmp_path, "user", "add", "bob@example.com", *extra)
        assert_usage_error(code, out, err, "unrecognized arguments")
    with open_directory(tmp_path) as directory:
        assert directory.list_users() == []


def test_user_passwd_list_set_del(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    run(capsys, tmp_path, "domain", "add", "example.net")
    for address in ("bob@example.com", "carol@example.net"):
        feed_stdin(monkeypatch, "first\n")
        assert run(capsys, tmp_path, "user", "add", address, "--password-stdin")[0] == 0
    feed_stdin(monkeypatch, "second\n")
    assert run(capsys, tmp_path, "user", "passwd", "bob@example.com", "--password-stdin") == (
        0,
        "password of bob@example.com changed\n",
        "",
    )
    with open_directory(tmp_path) as directory:
        assert directory.verify_password("bob@example.com", "second")
        assert not directory.verify_password("bob@example.com", "first")
    code, out, _ = run(capsys, tmp_path, "user", "set", "bob@example.com", "--quarantine", "off")
    assert out == "bob@example.com\tquarantine=off\tspam-threshold=default\n"
    code, out, _ = run(capsys, tmp_path, "user", "list")
    assert out.splitlines() == [
        "bob@example.com\tquarantine=off\tspam-threshold=default",
        "carol@example.net\tquarantine=on\tspam-threshold=default",
    ]
    code, out, _ = run(capsys, tmp_path, "user", "list", "example.net")
    assert out.splitlines() == ["carol@example.net\tquarantine=on\tspam-threshold=default"]
    code, out, _ = run(capsys, tmp_path, "user", "del", "bob@example.com")
    assert code == 0 and "Maildir stays in" in out
    assert (tmp_path / "mail" / "example.com" / "bob" / "Maildir").is_dir()
    assert_usage_error(*run(capsys, tmp_path, "user", "del", "bob@example.com"), "no user bob@example.com")


def test_user_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    feed_stdin(monkeypatch, "pw\n")
    assert_usage_error(
        *run(capsys, tmp_path, "user", "add", "bob@example.org", "--password-stdin"), "not a local domain"
    )
    assert_usage_error(
        *run(capsys, tmp_path, "user", "add", "not-an-address", "--password-stdin"), "no @domain"
    )
    assert_usage_error(*run(capsys, tmp_path, "user", "passwd", "nobody@example.com"), "no user")
    assert_usage_error(
        *run(capsys, tmp_path, "user", "set", "nobody@example.com", "--spam-threshold", "lots"),
        "--spam-threshold must be a number",
    )
    assert_usage_error(*run(capsys, tmp_path, "user", "set", "nobody@example.com"), "nothing to change")
    assert_usage_error(*run(capsys, tmp_path, "user", "list", "example.org"), "no domain example.org")
    feed_stdin(monkeypatch, "pw\n")
    run(capsys, tmp_path, "user", "add", "bob@example.com", "--password-stdin")
    assert_usage_error(*run(capsys, tmp_path, "user", "add", "BOB@example.com"), "exists already")


def test_domain_errors(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    assert_usage_error(*run(capsys, tmp_path, "domain", "add", "example.com"), "exists already")
    assert_usage_error(*run(capsys, tmp_path, "domain", "add", "exa mple.com"), "invalid domain")
    assert_usage_error(*run(capsys, tmp_path, "domain", "del", "example.org"), "no domain example.org")
    assert_usage_error(*run(capsys, tmp_path, "domain", "set", "example.com"), "nothing to change")
    feed_stdin(monkeypatch, "pw\n")
    run(capsys, tmp_path, "user", "add", "bob@example.com", "--password-stdin")
    assert_usage_error(*run(capsys, tmp_path, "domain", "del", "example.com"), "still has 1 user")
    code, out, _ = run(capsys, tmp_path, "domain", "del", "example.com", "--force")
    assert code == 0 and "stays in" in out
    with open_directory(tmp_path) as directory:
        assert directory.list_users() == [] and directory.list_domains() == []


def test_unusable_data_dir_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    assert_usage_error(*run(capsys, blocker, "domain", "list"), "cannot open directory")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "directory.sqlite").write_bytes(b"garbage" * 1000)
    assert_usage_error(*run(capsys, tmp_path / "data", "domain", "list"), "not a usable directory database")


def test_alias_add_list_del(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    feed_stdin(monkeypatch, "pw\n")
    run(capsys, tmp_path, "user", "add", "bob@example.com", "--password-stdin")
    code, out, _ = run(
        capsys, tmp_path, "alias", "add", "Info@example.com", "bob@example.com", "Ext@Example.ORG"
    )
    assert (code, out) == (0, "info@example.com -> bob@example.com, Ext@example.org\n")
    code, out, _ = run(capsys, tmp_path, "alias", "add", "@example.com", "bob@example.com")
    assert (code, out) == (0, "@example.com -> bob@example.com\n")
    code, out, _ = run(capsys, tmp_path, "alias", "list", "example.com")
    assert out.splitlines() == [
        "@example.com -> bob@example.com",
        "info@example.com -> bob@example.com, Ext@example.org",
    ]
    with open_directory(tmp_path) as directory:
        resolution = directory.resolve("info@example.com")
        assert resolution is not None and resolution.forwards == ("Ext@example.org",)
        catch = directory.resolve("anything@example.com")
        assert catch is not None and [u.email for u in catch.mailboxes] == ["bob@example.com"]
    code, out, _ = run(capsys, tmp_path, "alias", "del", "info@example.com", "Ext@example.org")
    assert (code, out) == (0, "info@example.com -> bob@example.com\n")
    code, out, _ = run(capsys, tmp_path, "alias", "del", "info@example.com")
    assert (code, out) == (0, "removed alias info@example.com\n")
    code, out, _ = run(capsys, tmp_path, "alias", "list")
    assert out == "@example.com -> bob@example.com\n"


def test_alias_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    run(capsys, tmp_path, "domain", "add", "example.com")
    assert_usage_error(
        *run(capsys, tmp_path, "alias", "add", "info@example.org", "x@example.com"), "not a local domain"
    )
    assert_usage_error(
        *run(capsys, tmp_path, "alias", "add", "info@example.com", "not an address"), "invalid address"
    )
    assert_usage_error(
        *run_argparse_error(capsys, tmp_path, "alias", "add", "info@example.com"), "required: DEST"
    )
    assert_usage_error(
        *run(capsys, tmp_path, "alias", "del", "info@example.com"), "no alias info@example.com"
    )
