"""``mailtoaster verify`` end to end: the bundled sample, JSON, the DNS options (a zone file and a
real DNS server on 127.0.0.1), records published by ``dns records``, and bad input."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from pathlib import Path

import authres
import pytest

from mailtoaster.auth.dkim import canon, engine
from mailtoaster.cli import main
from mailtoaster.keys import dkim_record_text
from mailtoaster.keys.store import load_private_key
from mailtoaster.message import Message
from tests.dnsserver import DnsTestServer

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "examples" / "sample.eml"
ZONE = ROOT / "examples" / "sample.zone"
SAMPLE_ARGS = [str(SAMPLE), "--ip", "69.36.226.12", "--helo", "mail.sample.com", "--authserv-id", "mx.test"]


def run(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["verify", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


SUMMARY = [
    "SPF check:          pass",
    "Sender-ID check:    pass",
    "DomainKeys check:   pass",
    "DKIM check:         pass",
    "ADSP check:         pass",
    "DMARC check:        pass",
    "ARC check:          none",
]


def test_sample_report(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(ZONE))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[: len(SUMMARY)] == SUMMARY
    assert "  record:      v=spf1 ip4:69.36.226.12 include:emailcenterpro.com ~all" in lines
    assert "  PRA:     jsmith@sample.com (from the From header)" in lines
    assert (
        "  signature 2: pass: d=sample.com s=ed2026 a=ed25519-sha256 Ed25519 key, signature verified" in lines
    )
    methods = [result.method for result in authres.AuthenticationResultsHeader.parse(lines[-1]).results]
    assert methods == ["spf", "sender-id", "domainkeys", "dkim", "dkim", "dkim-adsp", "dmarc", "arc"]
    assert lines[-1].startswith(
        "Authentication-Results: mx.test; spf=pass (domain of jsmith@sample.com designates 69.36.226.12 as "
        "permitted sender) smtp.helo=mail.sample.com smtp.mailfrom=jsmith@sample.com; "
        "sender-id=pass header.from=jsmith@sample.com; "
        "domainkeys=pass (signature verified) header.d=sample.com header.from=jsmith@sample.com; "
        "dkim=pass (2048-bit key; signature verified) header.d=sample.com header.i=@sample.com "
        "header.a=rsa-sha256 header.s=default header.b="
    )
    assert lines[-2].startswith("Received-SPF: pass (mx.test: domain of jsmith@sample.com designates")


def test_json_and_other_clients(capsys: pytest.CaptureFixture[str]) -> None:
    """A client the record does not list: the include's -all does not match, so ~all softfails."""
    args = [str(SAMPLE), "--ip", "198.51.100.20", "--helo", "h.example", "--dns-zone", str(ZONE), "--json"]
    code, out, _ = run(capsys, *args)
    assert code == 0
    document = json.loads(out)
    assert document["spf"]["result"] == "softfail"
    assert document["spf"]["mechanism"] == "~all"
    assert document["spf"]["dns_lookups"] == 1
    assert document["senderid"]["result"] == "softfail"
    assert document["senderid"]["pra"] == "jsmith@sample.com"
    assert "spf=softfail" in document["authentication_results"]


def test_json_has_every_check_and_one_dkim_entry_per_signature(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(ZONE), "--json")
    assert code == 0
    document = json.loads(out)
    assert [document[key]["result"] for key in ("spf", "senderid", "domainkeys", "adsp", "dmarc", "arc")] == [
        "pass", "pass", "pass", "pass", "pass", "none",
    ]  # fmt: skip
    assert [
        {key: entry[key] for key in ("result", "domain", "selector", "algorithm")}
        for entry in document["dkim"]
    ] == [
        {"result": "pass", "domain": "sample.com", "selector": "default", "algorithm": "rsa-sha256"},
        {"result": "pass", "domain": "sample.com", "selector": "ed2026", "algorithm": "ed25519-sha256"},
    ]
    assert all(entry["reason"] == "signature verified" for entry in document["dkim"])
    assert document["domainkeys"]["status"] == "OK" and document["domainkeys"]["letter"] == "A"
    assert document["dmarc"]["disposition"] == "none"


def test_forged_message_fails_dkim_and_dmarc_quarantines(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The body changed after signing, and the client is not in SPF: every signature fails, so DMARC
    fails and sample.com's p=quarantine applies."""
    forged = tmp_path / "forged.eml"
    forged.write_bytes(SAMPLE.read_bytes().replace(b"Hello,", b"Send money,"))
    args = [str(forged), "--ip", "198.51.100.20", "--helo", "h.example", "--dns-zone", str(ZONE), "--json"]
    code, out, _ = run(capsys, *args)
    assert code == 0
    document = json.loads(out)
    assert [entry["reason"] for entry in document["dkim"]] == ["body hash mismatch", "body hash mismatch"]
    assert document["domainkeys"]["status"] == "BADSIG"
    assert document["adsp"]["result"] == "fail"
    assert (document["dmarc"]["result"], document["dmarc"]["disposition"]) == ("fail", "quarantine")


def test_included_sender_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, str(SAMPLE), "--ip", "203.0.113.77", "--helo", "x", "--dns-zone", str(ZONE), "--json"
    )
    assert code == 0
    spf = json.loads(out)["spf"]
    assert spf["result"] == "pass"
    assert spf["mechanism"] == "include:emailcenterpro.com"
    assert spf["records_used"][1] == {
        "domain": "emailcenterpro.com",
        "record": "v=spf1 ip4:203.0.113.0/24 -all",
    }


def test_null_sender_checks_helo(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, *SAMPLE_ARGS, "--mail-from", "", "--dns-zone", str(ZONE), "--json")
    assert code == 0
    spf = json.loads(out)["spf"]
    assert (spf["identity"], spf["sender"], spf["result"]) == ("helo", "postmaster@mail.sample.com", "none")


def test_message_from_stdin(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sys, "stdin", type("In", (), {"buffer": SAMPLE.open("rb")})())
    code, out, _ = run(capsys, "-", "--ip", "69.36.226.12", "--helo", "m", "--dns-zone", str(ZONE), "--json")
    assert code == 0
    assert json.loads(out)["spf"]["result"] == "pass"


def test_live_nameserver(dns_server: DnsTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    dns_server.load_zone(ZONE.read_text())
    code, out, _ = run(capsys, *SAMPLE_ARGS, "--nameserver", dns_server.nameserver_arg, "--json")
    assert code == 0
    assert json.loads(out)["spf"]["result"] == "pass"
    assert dns_server.count("sample.com", "TXT") >= 1


def test_dns_timeout_is_temperror_and_bounded(
    dns_server: DnsTestServer, capsys: pytest.CaptureFixture[str]
) -> None:
    dns_server.load_zone(ZONE.read_text())
    dns_server.drop("sample.com", "TXT")
    started = time.monotonic()
    args = [*SAMPLE_ARGS, "--nameserver", dns_server.nameserver_arg, "--dns-timeout", "0.5", "--json"]
    code, out, _ = run(capsys, *args)
    assert code == 0
    assert time.monotonic() - started < 10
    assert code == 0
    assert json.loads(out)["spf"]["result"] == "temperror"


def test_servfail_is_temperror(dns_server: DnsTestServer, capsys: pytest.CaptureFixture[str]) -> None:
    dns_server.load_zone(ZONE.read_text())
    dns_server.servfail("sample.com", "TXT")
    code, out, _ = run(capsys, *SAMPLE_ARGS, "--nameserver", dns_server.nameserver_arg, "--json")
    assert code == 0
    assert json.loads(out)["spf"]["result"] == "temperror"


def test_records_published_by_dns_records_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What ``dns records`` tells a postmaster to publish is what ``verify`` then accepts."""
    assert main(["keygen", "example.org", "--selector", "s1", "--keys-dir", str(tmp_path / "keys")]) == 0
    assert (
        main(["dns", "records", "example.org", "--keys-dir", str(tmp_path / "keys"), "--ip", "192.0.2.25"])
        == 0
    )
    zone = tmp_path / "example.org.zone"
    zone.write_text(capsys.readouterr().out)
    message = tmp_path / "m.eml"
    message.write_bytes(b"From: a@example.org\r\nSubject: hi\r\n\r\nhello\r\n")
    base = [
        str(message),
        "--helo",
        "mail.example.org",
        "--mail-from",
        "a@example.org",
        "--dns-zone",
        str(zone),
    ]
    _, out, _ = run(capsys, *base, "--ip", "192.0.2.25", "--json")
    assert json.loads(out)["spf"]["result"] == "pass"
    assert json.loads(out)["senderid"]["result"] == "pass"
    _, out, _ = run(capsys, *base, "--ip", "192.0.2.26", "--json")
    assert json.loads(out)["spf"]["result"] == "softfail"


ZONE_ARGS = ["--dns-zone", str(ZONE)]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--ip", "999.1.1.1", "--helo", "h", "--mail-from", "a@b.c", *ZONE_ARGS],
            "is not an IPv4 or IPv6 address",
        ),
        (
            ["--ip", "192.0.2.1", "--helo", "h", "--mail-from", "a b@c d", *ZONE_ARGS],
            "is not a valid address",
        ),
        (
            ["--ip", "192.0.2.1", "--helo", "h", "--mail-from", "nodomain@", *ZONE_ARGS],
            "is not a valid address",
        ),
        (
            ["--ip", "192.0.2.1", "--helo", "bad helo", "--mail-from", "a@b.c", *ZONE_ARGS],
            "is not a host name",
        ),
        (
            ["--ip", "192.0.2.1", "--helo", "h", "--mail-from", "a@b.c", "--nameserver", "ns.example"],
            "IP address",
        ),
    ],
)
def test_bad_arguments(capsys: pytest.CaptureFixture[str], args: list[str], message: str) -> None:
    code, _, err = run(capsys, str(SAMPLE), *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_bad_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, str(tmp_path / "missing.eml"), "--ip", "192.0.2.1", "--helo", "h", "--mail-from", ""
    )
    assert code == 2 and "cannot read" in err
    broken = tmp_path / "broken.zone"
    broken.write_text("$TTL 60\nexample.com. IN TXT\n")
    code, _, err = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(broken))
    assert code == 2 and "broken.zone" in err and len(err.strip().splitlines()) == 1
    code, _, err = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(tmp_path / "nope.zone"))
    assert code == 2 and "cannot read zone file" in err


def test_no_return_path_needs_mail_from(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    message = tmp_path / "m.eml"
    message.write_bytes(b"From: a@example.org\r\n\r\nbody\r\n")
    code, _, err = run(capsys, str(message), "--ip", "192.0.2.1", "--helo", "h", "--dns-zone", str(ZONE))
    assert code == 2 and "Return-Path" in err


def test_garbage_message_still_reports(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Binary junk is a message with no PRA: Sender ID permerror, SPF still evaluated, no crash."""
    junk = tmp_path / "junk"
    junk.write_bytes(bytes(range(256)) * 4)
    code, out, _ = run(
        capsys,
        str(junk),
        "--ip",
        "69.36.226.12",
        "--helo",
        "h",
        "--mail-from",
        "a@sample.com",
        "--dns-zone",
        str(ZONE),
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    assert code == 0
    assert document["spf"]["result"] == "pass"
    assert document["senderid"]["result"] == "permerror"
    assert document["defects"]


def test_console_script_runs() -> None:
    """The installed entry point, as the README uses it."""
    completed = subprocess.run(
        [sys.executable, "-m", "mailtoaster", "verify", *SAMPLE_ARGS, "--dns-zone", str(ZONE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith("SPF check:          pass\nSender-ID check:    pass\n")


def test_body_length_and_testing_key_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A signature with l= from a t=y key, and a P.S. appended after signing: the text report, the JSON
    and Authentication-Results say t=y and how much is unsigned, and the signature does not pass."""
    key = load_private_key(ROOT / "examples" / "keys" / "sample.com" / "default")
    zone = tmp_path / "testing.zone"
    record = dkim_record_text(key.public_key()).replace("v=DKIM1; ", "v=DKIM1; t=y; ")
    strings = " ".join(f'"{record[i : i + 200]}"' for i in range(0, len(record), 200))
    zone.write_text(ZONE.read_text() + f"testing._domainkey.sample.com. IN TXT {strings}\n")
    message = b"From: jsmith@sample.com\r\nSubject: partial\r\n\r\nSigned part.\r\n"
    covered = len(canon.body_relaxed(Message.parse(message).body))
    body_hash = base64.b64encode(engine.body_hash(Message.parse(message).body, "relaxed", "sha256")).decode()
    unsigned = (
        "DKIM-Signature: v=1; a=rsa-sha256; c=relaxed/relaxed; d=sample.com; s=testing; "
        f"h=From:Subject; l={covered}; bh={body_hash}; b="
    ).encode()
    data = engine.header_hash_input(Message.parse(message).headers, ["From", "Subject"], unsigned, "relaxed")
    signature = base64.b64encode(engine.sign_bytes(key, "rsa-sha256", data))
    path = tmp_path / "partial.eml"
    path.write_bytes(unsigned + signature + b"\r\n" + message + b"P.S. added later\r\n")
    args = [
        str(path),
        "--ip",
        "69.36.226.12",
        "--helo",
        "mail.sample.com",
        "--mail-from",
        "jsmith@sample.com",
    ]
    args += ["--dns-zone", str(zone)]
    code, out, err = run(capsys, *args)
    assert code == 0, err
    assert "DKIM check:         policy" in out.splitlines()
    assert "the key is in testing mode (t=y)" in out
    assert f"l={covered}: 18 body octets are not signed" in out
    assert "l= leaves 18 body octets unsigned" in out.splitlines()[-1]
    assert "key in testing mode \\(t=y\\)" in out.splitlines()[-1]  # parentheses escaped in a comment
    _, out, _ = run(capsys, *args, "--json")
    entry = json.loads(out)["dkim"][0]
    assert (entry["result"], entry["testing"], entry["body_length"], entry["unsigned_body_octets"]) == (
        "policy",
        True,
        covered,
        18,
    )
    dmarc = json.loads(out)["dmarc"]
    assert (dmarc["result"], dmarc["spf_aligned"], dmarc["dkim_aligned"]) == ("pass", True, False)
    assert dmarc["dkim_domains"] == []  # the l= signature is not counted as a DKIM pass


# -- the spam filter's verdict ----------------------------------------------------------------------


def _spam_args(path: Path, sender: str, *extra: str) -> list[str]:
    return [
        str(path),
        "--ip",
        "192.0.2.7",
        "--helo",
        "mx.example.net",
        "--mail-from",
        sender,
        "--dns-zone",
        str(ZONE),
        *extra,
    ]


def test_without_a_filter_there_is_no_spam_verdict(capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(ZONE))
    assert "SpamAssassin" not in out and "X-Spam" not in out
    _, out, _ = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(ZONE), "--json")
    assert "spam" not in json.loads(out)


def test_with_a_data_directory_the_filter_scores_the_message(
    tmp_path: Path, trained_spam_store: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.spamtraining import HAM_SENDER, SPAM_SENDER, ham_message, install_trained, spam_message

    data_dir = tmp_path / "var"
    install_trained(trained_spam_store, data_dir)
    spam, ham = tmp_path / "spam.eml", tmp_path / "ham.eml"
    spam.write_bytes(spam_message(3000))
    ham.write_bytes(ham_message(3000))

    code, out, err = run(capsys, *_spam_args(spam, SPAM_SENDER, "--data-dir", str(data_dir)))
    assert code == 0, err
    lines = out.splitlines()
    assert lines[len(SUMMARY) - 1 : len(SUMMARY) + 1] == [
        "ARC check:          none",
        "SpamAssassin check: spam",
    ]
    assert "SpamAssassin details" in lines and "X-Spam-Flag: YES" in lines
    assert any(line.startswith("X-Spam-Status: Yes, score=") for line in lines)

    code, out, err = run(capsys, *_spam_args(ham, HAM_SENDER, "--data-dir", str(data_dir), "--json"))
    assert code == 0, err
    spam_json = json.loads(out)["spam"]
    assert spam_json["result"] == "ham" and spam_json["required"] == 5.0
    assert "BAYES_00" in spam_json["tests"] and "NO_AUTH" in spam_json["tests"]  # SPF none here
    assert spam_json["fields"]["X-Spam-Status"].startswith("No, score=")


def test_the_configured_store_and_threshold_are_used(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from tests.redisserver import free_port

    config = tmp_path / "serve.toml"
    config.write_text(f'[server]\ndata_dir = "{tmp_path / "var"}"\n\n[spam]\nrequired = 0.5\n')
    code, out, err = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(ZONE), "--config", str(config), "--json")
    assert code == 0, err
    assert json.loads(out)["spam"]["required"] == 0.5
    assert not (tmp_path / "var").exists()  # verifying makes no database

    config.write_text(f'[spam]\nstore = "redis://127.0.0.1:{free_port()}/0"\ntimeout = 1\n')
    code, out, err = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(ZONE), "--config", str(config))
    assert (code, out) == (2, "")
    assert len(err.splitlines()) == 1 and "Redis at 127.0.0.1:" in err


def test_a_user_needs_a_filter(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, *SAMPLE_ARGS, "--dns-zone", str(ZONE), "--user", "alice@example.org")
    assert (code, out) == (2, "") and "--user" in err and len(err.splitlines()) == 1
