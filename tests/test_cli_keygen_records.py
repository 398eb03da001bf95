"""``mailtoaster keygen`` and ``mailtoaster dns records``, run in-process."""

from __future__ import annotations

import base64
import stat
from pathlib import Path

import dns.name
import dns.zone
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailtoaster.cli import main
from mailtoaster.dns import RRType, parse_zone_text
from mailtoaster.keys import load_key
from tests.clirun import assert_usage_error, run


def p_value(text: str) -> bytes:
    return base64.b64decode(text.split("p=", 1)[1].rstrip('"').replace('" "', ""))


def test_keygen_rsa_writes_key_and_prints_record(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(capsys, "keygen", "Sample.com", "--selector", "s2024", "--keys-dir", str(tmp_path))
    assert code == 0, err
    path = tmp_path / "sample.com" / "s2024"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    pem = path.read_bytes()
    assert pem.startswith(b"-----BEGIN PRIVATE KEY-----")
    private = serialization.load_pem_private_key(pem, password=None)
    assert isinstance(private, rsa.RSAPrivateKey) and private.key_size == 2048
    comment, line = out.splitlines()
    assert comment.startswith(";") and str(path) in comment
    assert line.startswith('s2024._domainkey.sample.com. 3600 IN TXT "v=DKIM1; k=rsa; p=')
    zone = dns.zone.from_text(out, origin=dns.name.root, relativize=False, check_origin=False)
    (rdata,) = list(zone.find_rdataset("s2024._domainkey.sample.com.", "TXT"))
    published = serialization.load_der_public_key(p_value(b"".join(rdata.strings).decode()))
    assert isinstance(published, rsa.RSAPublicKey)
    assert published.public_numbers() == private.public_key().public_numbers()


def test_keygen_ed25519(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "keygen", "sample.com", "--selector", "ed", "--type", "ed25519", "--keys-dir", str(tmp_path)
    )
    assert code == 0
    line = out.splitlines()[1]
    assert line.startswith('ed._domainkey.sample.com. 3600 IN TXT "v=DKIM1; k=ed25519; p=')
    raw = p_value(line)
    assert len(raw) == 32
    stored = load_key(tmp_path, "sample.com", "ed").private_key
    assert isinstance(stored, ed25519.Ed25519PrivateKey)
    assert raw == stored.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def test_keygen_1024_warns_but_works(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(
        capsys, "keygen", "sample.com", "--selector", "s", "--bits", "1024", "--keys-dir", str(tmp_path)
    )
    assert code == 0
    assert "RFC 8301" in err
    assert load_key(tmp_path, "sample.com", "s").bits == 1024


def test_keygen_refuses_to_overwrite(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    args = ("keygen", "sample.com", "--selector", "s1", "--type", "ed25519", "--keys-dir", str(tmp_path))
    assert run(capsys, *args)[0] == 0
    path = tmp_path / "sample.com" / "s1"
    before = path.read_bytes()
    assert_usage_error(*run(capsys, *args), "already exists")
    assert path.read_bytes() == before
    code, _, _ = run(capsys, *args, "--force")
    assert code == 0
    assert path.read_bytes() != before
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--bits", "512"], "RFC 8301"),
        (["--bits", "1023"], "RFC 8301"),
        (["--bits", "16384"], "8192"),
        (["--bits", "2000"], "multiple"),
        (["--bits", "lots"], "whole number"),
        (["--type", "ed25519", "--bits", "2048"], "RSA keys only"),
    ],
)
def test_keygen_bad_sizes(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    result = run(capsys, "keygen", "sample.com", "--selector", "s1", "--keys-dir", str(tmp_path), *extra)
    assert_usage_error(*result, fragment)
    assert not (tmp_path / "sample.com" / "s1").exists()


@pytest.mark.parametrize(
    ("domain", "selector", "fragment"),
    [
        ("../etc", "s1", "invalid domain"),
        ("sample.com", "../../x", "invalid selector"),
        ("bad_domain.com", "s1", "invalid domain"),
        ("sample.com", "a/b", "invalid selector"),
        ("sample.com", "s1\n.x", "invalid selector"),
    ],
)
def test_keygen_bad_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], domain: str, selector: str, fragment: str
) -> None:
    result = run(capsys, "keygen", domain, "--selector", selector, "--keys-dir", str(tmp_path))
    assert_usage_error(*result, fragment)
    assert list(tmp_path.iterdir()) == []


def test_keygen_unusable_keys_dir(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys_dir = str(tmp_path / ("x" * 300))
    result = run(
        capsys, "keygen", "sample.com", "--selector", "s1", "--keys-dir", keys_dir, "--type", "ed25519"
    )
    assert_usage_error(*result, "File name too long")


def test_dns_records_classic_tinydns_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        capsys,
        "dns",
        "records",
        "sample.com",
        "--ip",
        "69.36.226.12",
        "--format",
        "tinydns",
        "--keys-dir",
        str(tmp_path),
    )
    assert code == 0
    assert "'sample.com:v=spf1 ip4\\07269.36.226.12 ~all:3600" in out.splitlines()
    assert "'_dmarc.sample.com:v=DMARC1; p=quarantine:3600" in out.splitlines()
    assert "no DKIM keys" in err  # and therefore no "all mail is signed" policies
    assert "_domainkey" not in out


async def test_dns_records_bind_after_keygen(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = str(tmp_path)
    keygen = ("keygen", "sample.com", "--keys-dir", keys, "--selector")
    assert run(capsys, *keygen, "big", "--bits", "3072")[0] == 0
    assert run(capsys, *keygen, "ed", "--type", "ed25519")[0] == 0
    code, out, err = run(
        capsys,
        "dns",
        "records",
        "sample.com",
        "--keys-dir",
        keys,
        "--ip",
        "192.0.2.25",
        "--ip",
        "2001:db8::25",
        "--include",
        "_spf.relay.example.net",
        "--all",
        "fail",
        "--sender-id",
        "--dmarc-policy",
        "reject",
        "--dmarc-rua",
        "dmarc@sample.com",
        "--mx-host",
        "mx.sample.com",
        "--ttl",
        "900",
    )
    assert code == 0, err
    assert err == ""
    resolver = parse_zone_text(out)
    txt = (await resolver.lookup("sample.com", RRType.TXT)).texts()
    assert sorted(txt) == [
        b"spf2.0/mfrom,pra ip4:192.0.2.25 ip6:2001:db8::25 include:_spf.relay.example.net -all",
        b"v=spf1 ip4:192.0.2.25 ip6:2001:db8::25 include:_spf.relay.example.net -all",
    ]
    dmarc = await resolver.lookup("_dmarc.sample.com", RRType.TXT)
    assert dmarc.texts() == [b"v=DMARC1; p=reject; rua=mailto:dmarc@sample.com"]
    assert dmarc.ttl == 3600  # the static resolver's own TTL; the file's TTL is checked below
    for selector in ("big", "ed"):
        answer = await resolver.lookup(f"{selector}._domainkey.sample.com", RRType.TXT)
        (text,) = answer.texts()
        assert text.decode() == load_key(keys, "sample.com", selector).dkim_record
    assert (await resolver.lookup("_domainkey.sample.com", RRType.TXT)).texts() == [b"o=-;"]
    assert (await resolver.lookup("_adsp._domainkey.sample.com", RRType.TXT)).texts() == [b"dkim=all"]
    assert [str(a) for a in (await resolver.lookup("mx.sample.com", RRType.A)).addresses()] == ["192.0.2.25"]
    zone = dns.zone.from_text(out, origin=dns.name.root, relativize=False, check_origin=False)
    assert {rdataset.ttl for node in zone.nodes.values() for rdataset in node.rdatasets} == {900}


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        (["--ip", "300.1.2.3"], "invalid IP address"),
        (["--ip", "mail.sample.com"], "invalid IP address"),
        (["--ttl", "-5"], "invalid TTL"),
        (["--ttl", "1h"], "--ttl must be a whole number"),
        (["--ttl", "4294967296"], "invalid TTL"),
        (["--include", "bad..example"], "invalid include domain"),
        (["--dmarc-rua", "nobody"], "invalid report address"),
        (["--mx-host=-mx.sample.com"], "invalid mail host"),
    ],
)
def test_dns_records_bad_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str
) -> None:
    result = run(capsys, "dns", "records", "sample.com", "--keys-dir", str(tmp_path), *extra)
    assert_usage_error(*result, fragment)


@pytest.mark.parametrize("domain", ["sample", "../sample.com", "sample..com", "sam ple.com"])
def test_dns_records_bad_domain(tmp_path: Path, capsys: pytest.CaptureFixture[str], domain: str) -> None:
    assert_usage_error(*run(capsys, "dns", "records", domain, "--keys-dir", str(tmp_path)), "invalid domain")


def test_dns_records_broken_key_is_a_usage_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "sample.com").mkdir()
    (tmp_path / "sample.com" / "s1").write_text("-----BEGIN PRIVATE KEY-----\nbroken\n")
    assert_usage_error(*run(capsys, "dns", "records", "sample.com", "--keys-dir", str(tmp_path)), "s1")


@pytest.mark.parametrize(
    ("argv", "prog", "fragment"),
    [
        (["keygen", "sample.com"], "keygen", "--selector"),
        (["keygen", "sample.com", "--selector", "s1", "--type", "dsa"], "keygen", "invalid choice"),
        (["dns", "records", "sample.com", "--format", "xml"], "dns records", "invalid choice"),
        (["dns", "records"], "dns records", "DOMAIN"),
        (["dns"], "dns", "SUBCOMMAND"),
    ],
)
def test_argument_errors_are_one_line_too(
    capsys: pytest.CaptureFixture[str], argv: list[str], prog: str, fragment: str
) -> None:
    """README: every command prints a one-line message and exits with status 2 on bad input."""
    with pytest.raises(SystemExit) as exc:
        main(argv)
    out, err = capsys.readouterr()
    assert_usage_error(int(exc.value.code or 0), out, err, fragment)
    assert err.startswith(f"mailtoaster {prog}: error: ")


def test_dns_needs_a_subcommand(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["dns"])
    assert exc.value.code == 2
