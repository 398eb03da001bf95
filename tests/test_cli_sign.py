"""``mailtoaster sign``: keys from the store, every key signs, the output verifies."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

import pytest

from mailtoaster.auth.arc import ArcResult, validate_arc
from mailtoaster.auth.dkim import DkimResult, verify_dkim
from mailtoaster.auth.domainkeys import DkStatus, verify_domainkeys
from mailtoaster.cli import main
from mailtoaster.dns import RRType, StaticResolver
from mailtoaster.keys import KeyType, create_key, list_keys
from mailtoaster.message import Message

MESSAGE = (
    b"From: Alice <alice@example.org>\r\nTo: bob@example.net\r\nSubject: hello\r\n"
    b"Date: Wed, 25 Nov 2026 10:00:00 +0000\r\nMessage-ID: <1@example.org>\r\n\r\nHi Bob.\r\n"
)


@pytest.fixture
def keys_dir(tmp_path: Path) -> Path:
    create_key(tmp_path, "example.org", "rsa2026", key_type=KeyType.RSA)
    create_key(tmp_path, "example.org", "ed2026", key_type=KeyType.ED25519)
    return tmp_path


def published(keys_dir: Path) -> StaticResolver:
    resolver = StaticResolver()
    for key in list_keys(keys_dir, "example.org"):
        resolver.add(key.record_name, RRType.TXT, (key.dkim_record.encode(),))
    return resolver


def run(capsysbinary: pytest.CaptureFixture[bytes], message: Path, *argv: str) -> tuple[int, bytes, str]:
    code = main(["sign", str(message), *argv])
    out, err = capsysbinary.readouterr()
    return code, out, err.decode()


@pytest.fixture
def message_file(tmp_path: Path) -> Path:
    path = tmp_path / "message.eml"
    path.write_bytes(MESSAGE)
    return path


async def test_every_key_of_the_domain_signs(
    keys_dir: Path, message_file: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    code, out, err = run(capsysbinary, message_file, "--domain", "example.org", "--keys-dir", str(keys_dir))
    assert code == 0, err
    assert out.endswith(MESSAGE)
    verdicts = await verify_dkim(Message.parse(out), published(keys_dir))
    assert sorted((verdict.selector, verdict.algorithm, verdict.result) for verdict in verdicts) == [
        ("ed2026", "ed25519-sha256", DkimResult.PASS),
        ("rsa2026", "rsa-sha256", DkimResult.PASS),
    ]


async def test_selector_and_canonicalization_choose(
    keys_dir: Path, message_file: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    argv = ["--domain", "example.org", "--keys-dir", str(keys_dir), "--selector", "rsa2026"]
    code, out, _ = run(capsysbinary, message_file, *argv, "--canonicalization", "simple/simple")
    assert code == 0
    verdicts = await verify_dkim(Message.parse(out), published(keys_dir))
    assert [(verdict.selector, verdict.canonicalization) for verdict in verdicts] == [
        ("rsa2026", "simple/simple")
    ]
    assert verdicts[0].passed


async def test_domainkeys_signature_is_added_below_dkim(
    keys_dir: Path, message_file: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    argv = ["--domain", "example.org", "--keys-dir", str(keys_dir), "--domainkeys"]
    code, out, err = run(capsysbinary, message_file, *argv)
    assert code == 0, err
    message = Message.parse(out)
    names = [field.name for field in message.headers]
    assert names.index("DomainKey-Signature") > max(i for i, n in enumerate(names) if n == "DKIM-Signature")
    resolver = published(keys_dir)
    assert (await verify_domainkeys(message, resolver)).status is DkStatus.OK
    assert all(verdict.passed for verdict in await verify_dkim(message, resolver))


def test_lf_input_gives_lf_output(
    keys_dir: Path, message_file: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    message_file.write_bytes(MESSAGE.replace(b"\r\n", b"\n"))
    code, out, _ = run(capsysbinary, message_file, "--domain", "example.org", "--keys-dir", str(keys_dir))
    assert code == 0 and b"\r" not in out and b"DKIM-Signature:" in out


@pytest.mark.parametrize(
    ("argv", "fragment"),
    [
        (["--domain", "nokeys.example"], "no keys for nokeys.example"),
        (["--domain", "example.org", "--selector", "missing"], "missing"),
        (["--domain", "bad domain!"], "domain"),
        (["--domain", "example.org", "--arc"], "--arc needs --authserv-id"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(
    keys_dir: Path,
    message_file: Path,
    capsysbinary: pytest.CaptureFixture[bytes],
    argv: list[str],
    fragment: str,
) -> None:
    code, out, err = run(capsysbinary, message_file, *argv, "--keys-dir", str(keys_dir))
    assert (code, out) == (2, b"")
    assert len(err.strip().splitlines()) == 1 and fragment in err and "Traceback" not in err


def test_message_without_from_is_refused(
    keys_dir: Path, message_file: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    message_file.write_bytes(b"Subject: no author\r\n\r\nbody\r\n")
    code, out, err = run(capsysbinary, message_file, "--domain", "example.org", "--keys-dir", str(keys_dir))
    assert (code, out) == (2, b"")
    assert "no From field" in err


def test_arc_seal_validates_and_copies_this_servers_results(
    keys_dir: Path, message_file: Path, tmp_path: Path, capsysbinary: pytest.CaptureFixture[bytes]
) -> None:
    message_file.write_bytes(
        b"Authentication-Results: fwd.example.org; spf=pass smtp.mailfrom=x@y.z\r\n" + MESSAGE
    )
    zone = tmp_path / "empty.zone"
    zone.write_text("$TTL 3600\nexample.org. IN A 192.0.2.1\n")
    argv = [
        "--domain",
        "example.org",
        "--keys-dir",
        str(keys_dir),
        "--arc",
        "--authserv-id",
        "fwd.example.org",
    ]
    code, out, err = run(capsysbinary, message_file, *argv, "--dns-zone", str(zone))
    assert code == 0, err
    message = Message.parse(out)
    assert [field.name for field in message.headers[:3]] == [
        "ARC-Seal",
        "ARC-Message-Signature",
        "ARC-Authentication-Results",
    ]
    assert (
        " ".join(message.headers[2].value.split())
        == "i=1; fwd.example.org; arc=none; spf=pass smtp.mailfrom=x@y.z"
    )
    outcome = asyncio.run(validate_arc(message, published(keys_dir)))
    assert (outcome.result, outcome.sets) == (ArcResult.PASS, 1)


async def test_stdin_and_repeated_selectors(
    keys_dir: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsysbinary: pytest.CaptureFixture[bytes],
) -> None:
    """``-`` reads the message from standard input; each --selector given signs, and only those."""
    create_key(keys_dir, "example.org", "spare", key_type=KeyType.RSA)
    monkeypatch.setattr("sys.stdin", io.TextIOWrapper(io.BytesIO(MESSAGE)))
    argv = ["sign", "-", "--domain", "example.org", "--keys-dir", str(keys_dir)]
    code = main([*argv, "--selector", "ed2026", "--selector", "spare"])
    out, err = capsysbinary.readouterr()
    assert code == 0, err
    assert out.endswith(MESSAGE)
    verdicts = await verify_dkim(Message.parse(out), published(keys_dir))
    assert sorted((verdict.selector, verdict.result) for verdict in verdicts) == [
        ("ed2026", DkimResult.PASS),
        ("spare", DkimResult.PASS),
    ]
