"""The key store: names, sizes, files and modes, loading, listing, and the public-key records."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

from mailtoaster.keys import (
    KeyExistsError,
    KeyStoreError,
    KeyType,
    check_rsa_bits,
    create_key,
    dkim_record_text,
    domainkeys_record_text,
    generate_private_key,
    key_path,
    list_keys,
    load_key,
    load_private_key,
    private_key_pem,
    validate_domain,
    validate_selector,
    write_key,
)


@pytest.fixture(scope="module")
def rsa_key() -> rsa.RSAPrivateKey:
    key = generate_private_key(KeyType.RSA, 2048)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


RSA_512_PEM = b"""\
-----BEGIN PRIVATE KEY-----
MIIBVQIBADANBgkqhkiG9w0BAQEFAASCAT8wggE7AgEAAkEA4Y1nv4ScV9CBALBc
CdbddYcfLlZKrE4UqcYAFTjXE2coV0ZdZVrx1a8vK7nEcf7XSES4YKLcScgykAS4
s1rjiQIDAQABAkEAkeZfexJz85XrLJ/oGXFEtdafA+FL0mN7mEp9GT04WtKD9Fra
dJBECahKeyOC1wzGo7h+f0rfvrWHH6py9obGkQIhAPCwmqkaifv82KKh4hD/xUzY
ft4SDicI2Z19Wzns8TAtAiEA7+ZNUGD/ihxG04iCENmUetwWu/avVSM85MPPlvwG
vk0CIDx+puDJ4tSLAIgf2AodvyFJaNm4AAafmtKSp1Mv0o8hAiEA03nFNdIL8gez
N83iOlBTX2qcb92p+fcyOseSO5q3pxECIC6CxfAKxezx2gOgVixgcr8PWaB2kvE3
zl/vJSfDFK93
-----END PRIVATE KEY-----
"""
"""A 512-bit RSA key (cryptography refuses to generate one), as older tools wrote them."""


def record_tags(text: str) -> dict[str, str]:
    """Parse a tag=value list (RFC 6376 §3.2) independently of the code under test."""
    tags = {}
    for part in text.split(";"):
        if part.strip():
            name, _, value = part.partition("=")
            tags[name.strip()] = value.strip()
    return tags


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


# --- names -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["Example.COM", "example.com.", "mail-1.example.co.uk", "xn--bcher-kva.de"])
def test_valid_domains_are_normalised(name: str) -> None:
    assert validate_domain(name) == name.lower().rstrip(".")


@pytest.mark.parametrize(
    "name",
    [
        "",
        "..",
        "../etc",
        "example..com",
        "a/b.com",
        "example.com/..",
        "-bad.com",
        "bad-.com",
        "localhost",
        "exa mple.com",
        " example.com",
        "_dmarc.example.com",
        "é.example.com",
        "a" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
        "example\n.com",
        "sub\n.example.com",
    ],
)
def test_invalid_domains_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid domain"):
        validate_domain(name)


@pytest.mark.parametrize("name", ["..", ".", "a/b", "../x", "x/", "", "sel_1", "-x", "x\x00", "s1\n.x"])
def test_invalid_selectors_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid selector"):
        validate_selector(name)


def test_dotted_selectors_are_legal_dkim() -> None:
    assert validate_selector("2024.Eng") == "2024.eng"


def test_key_path_cannot_escape_the_store(tmp_path: Path) -> None:
    assert key_path(tmp_path, "example.com", "s1") == tmp_path / "example.com" / "s1"
    with pytest.raises(ValueError):
        key_path(tmp_path, "..", "s1")
    with pytest.raises(ValueError):
        key_path(tmp_path, "example.com", "../../etc/passwd")


# --- sizes -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("bits", [512, 768, 1023])
def test_rsa_shorter_than_1024_is_refused_citing_rfc8301(bits: int) -> None:
    with pytest.raises(ValueError, match="RFC 8301"):
        generate_private_key(KeyType.RSA, bits)


@pytest.mark.parametrize("bits", [8448, 16384, 1000, 2047, 2050])
def test_absurd_or_odd_rsa_sizes_are_refused(bits: int) -> None:
    with pytest.raises(ValueError):
        check_rsa_bits(bits)


@pytest.mark.parametrize("bits", [1024, 1536, 2048, 3072, 4096, 8192])
def test_usual_rsa_sizes_are_accepted(bits: int) -> None:
    check_rsa_bits(bits)


def test_default_rsa_size_is_2048(rsa_key: rsa.RSAPrivateKey) -> None:
    key = generate_private_key()
    assert isinstance(key, rsa.RSAPrivateKey)
    assert key.key_size == 2048
    assert key.public_key().public_numbers().e == 65537


def test_ed25519_takes_no_size() -> None:
    assert isinstance(generate_private_key(KeyType.ED25519), ed25519.Ed25519PrivateKey)
    with pytest.raises(ValueError, match="fixed size"):
        generate_private_key(KeyType.ED25519, 2048)


# --- writing -----------------------------------------------------------------------------------------


def test_write_creates_private_file_and_directory(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    store = tmp_path / "deep" / "keys"
    stored = write_key(store, "Example.com", "s1", rsa_key)
    assert stored.path == store / "example.com" / "s1"
    assert mode(stored.path) == 0o600
    assert mode(stored.path.parent) == 0o700
    assert stored.path.read_bytes().startswith(b"-----BEGIN PRIVATE KEY-----\n")  # PKCS#8, unencrypted
    assert sorted(p.name for p in stored.path.parent.iterdir()) == ["s1"]  # no temporary left behind


def test_modes_do_not_depend_on_the_umask(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    old = os.umask(0)
    try:
        stored = write_key(tmp_path, "example.com", "s1", rsa_key)
    finally:
        os.umask(old)
    assert mode(stored.path) == 0o600
    assert mode(stored.path.parent) == 0o700


def test_existing_domain_directory_is_tightened(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    (tmp_path / "example.com").mkdir(mode=0o755)
    (tmp_path / "example.com").chmod(0o755)
    write_key(tmp_path, "example.com", "s1", rsa_key)
    assert mode(tmp_path / "example.com") == 0o700


def test_no_overwrite_without_force(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    first = write_key(tmp_path, "example.com", "s1", rsa_key)
    before = first.path.read_bytes()
    other = generate_private_key(KeyType.ED25519)
    with pytest.raises(KeyExistsError, match="already exists"):
        write_key(tmp_path, "example.com", "s1", other)
    with pytest.raises(KeyExistsError):
        create_key(tmp_path, "example.com", "s1", key_type=KeyType.ED25519)
    assert first.path.read_bytes() == before
    replaced = write_key(tmp_path, "example.com", "s1", other, force=True)
    assert replaced.key_type is KeyType.ED25519
    assert mode(replaced.path) == 0o600
    assert load_key(tmp_path, "example.com", "s1").key_type is KeyType.ED25519


def test_write_refuses_rsa_shorter_than_1024(tmp_path: Path) -> None:
    small = serialization.load_pem_private_key(RSA_512_PEM, password=None)
    assert isinstance(small, rsa.RSAPrivateKey) and small.key_size == 512
    with pytest.raises(ValueError, match="RFC 8301"):
        write_key(tmp_path, "example.com", "old", small)
    assert not (tmp_path / "example.com" / "old").exists()


def test_create_key_checks_names_before_generating(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="invalid domain"):
        create_key(tmp_path, "../x", "s1")
    assert list(tmp_path.iterdir()) == []


def test_unusable_store_path_is_a_key_store_error(tmp_path: Path) -> None:
    """An OS error while checking for an existing key (here: a name too long for the file system)."""
    with pytest.raises(KeyStoreError, match="File name too long"):
        create_key(tmp_path / ("x" * 300), "example.com", "s1", key_type=KeyType.ED25519)


# --- loading and listing -----------------------------------------------------------------------------


def test_load_detects_the_type(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    write_key(tmp_path, "example.com", "big", rsa_key)
    create_key(tmp_path, "example.com", "small", key_type=KeyType.ED25519)
    big = load_key(tmp_path, "example.com", "big")
    small = load_key(tmp_path, "example.com", "small")
    assert (big.key_type, big.bits, big.description) == (KeyType.RSA, 2048, "2048-bit RSA")
    assert (small.key_type, small.bits, small.description) == (KeyType.ED25519, None, "Ed25519")
    assert big.record_name == "big._domainkey.example.com"
    assert isinstance(big.private_key, rsa.RSAPrivateKey)
    assert big.private_key.private_numbers() == rsa_key.private_numbers()


def test_load_accepts_pkcs1_from_older_tools(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    path = tmp_path / "old"
    path.write_bytes(
        rsa_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.TraditionalOpenSSL,
            serialization.NoEncryption(),
        )
    )
    assert path.read_bytes().startswith(b"-----BEGIN RSA PRIVATE KEY-----")
    loaded = load_private_key(path)
    assert isinstance(loaded, rsa.RSAPrivateKey)
    assert loaded.private_numbers() == rsa_key.private_numbers()


def test_load_refuses_encrypted_other_types_and_garbage(tmp_path: Path) -> None:
    key = generate_private_key(KeyType.ED25519)
    encrypted = tmp_path / "encrypted"
    encrypted.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(b"secret"),
        )
    )
    with pytest.raises(KeyStoreError, match="encrypted"):
        load_private_key(encrypted)
    ecdsa = tmp_path / "ecdsa"
    ecdsa.write_bytes(private_key_pem(ec.generate_private_key(ec.SECP256R1())))  # type: ignore[arg-type]
    with pytest.raises(KeyStoreError, match="neither RSA nor Ed25519"):
        load_private_key(ecdsa)
    garbage = tmp_path / "garbage"
    garbage.write_text("-----BEGIN PRIVATE KEY-----\nnot base64\n-----END PRIVATE KEY-----\n")
    with pytest.raises(KeyStoreError, match="not a PEM private key"):
        load_private_key(garbage)
    with pytest.raises(KeyStoreError, match="cannot read key"):
        load_private_key(tmp_path / "missing")


def test_list_keys_skips_files_that_are_not_keys(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    write_key(tmp_path, "example.com", "s2", rsa_key)
    create_key(tmp_path, "example.com", "s1", key_type=KeyType.ED25519)
    domain_dir = tmp_path / "example.com"
    (domain_dir / "public.txt").write_text("v=DKIM1; k=rsa; p=...\n")
    (domain_dir / "s2.pub").write_bytes(
        rsa_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    (domain_dir / ".s3.tmp-0123").write_bytes(private_key_pem(rsa_key))
    (domain_dir / "s2~").write_bytes(private_key_pem(rsa_key))
    (domain_dir / "subdir").mkdir()
    keys = list_keys(tmp_path, "example.com")
    assert [(k.selector, k.key_type) for k in keys] == [("s1", KeyType.ED25519), ("s2", KeyType.RSA)]
    assert all(k.domain == "example.com" for k in keys)


def test_list_keys_of_unknown_domain_is_empty(tmp_path: Path) -> None:
    assert list_keys(tmp_path, "example.org") == []
    assert list_keys(tmp_path / "nowhere", "example.org") == []


def test_list_keys_reports_a_broken_key(tmp_path: Path) -> None:
    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "s1").write_text("-----BEGIN PRIVATE KEY-----\ntruncated")
    with pytest.raises(KeyStoreError, match="s1"):
        list_keys(tmp_path, "example.com")


def test_list_keys_skips_a_large_file_that_is_no_key(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    """A big file with a selector-like name (notes, a log) is not a key: skipped, not an error."""
    write_key(tmp_path, "example.com", "s1", rsa_key)
    (tmp_path / "example.com" / "notes").write_bytes(b"x" * 200_000)
    assert [k.selector for k in list_keys(tmp_path, "example.com")] == ["s1"]


def test_list_keys_refuses_an_oversized_key_file(tmp_path: Path, rsa_key: rsa.RSAPrivateKey) -> None:
    (tmp_path / "example.com").mkdir()
    (tmp_path / "example.com" / "s1").write_bytes(private_key_pem(rsa_key) + b"#" * 100_000)
    with pytest.raises(KeyStoreError, match="too large"):
        list_keys(tmp_path, "example.com")


# --- public records ----------------------------------------------------------------------------------


def test_rsa_record_holds_the_subject_public_key_info(rsa_key: rsa.RSAPrivateKey) -> None:
    text = dkim_record_text(rsa_key.public_key())
    assert text.startswith("v=DKIM1; k=rsa; p=")
    tags = record_tags(text)
    public = serialization.load_der_public_key(base64.b64decode(tags["p"], validate=True))
    assert isinstance(public, rsa.RSAPublicKey)
    assert public.public_numbers() == rsa_key.public_key().public_numbers()


def test_ed25519_record_holds_the_raw_32_byte_key() -> None:
    key = generate_private_key(KeyType.ED25519)
    text = dkim_record_text(key.public_key())
    assert text.startswith("v=DKIM1; k=ed25519; p=")
    raw = base64.b64decode(record_tags(text)["p"], validate=True)
    assert len(raw) == 32
    expected = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert raw == expected
    assert (
        ed25519.Ed25519PublicKey.from_public_bytes(raw).public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        == expected
    )


def test_domainkeys_record_is_rsa_only_without_version(rsa_key: rsa.RSAPrivateKey) -> None:
    text = domainkeys_record_text(rsa_key.public_key())
    assert text.startswith("k=rsa; p=")
    assert "v=" not in text
    assert record_tags(text)["p"] == record_tags(dkim_record_text(rsa_key.public_key()))["p"]
    with pytest.raises(ValueError, match="RSA"):
        domainkeys_record_text(generate_private_key(KeyType.ED25519).public_key())


def test_stored_key_record_signs_and_verifies(tmp_path: Path) -> None:
    """The published key really is the stored key's: a signature by one verifies with the other."""
    stored = create_key(tmp_path, "example.com", "s1", key_type=KeyType.ED25519)
    raw = base64.b64decode(record_tags(stored.dkim_record)["p"])
    loaded = load_key(tmp_path, "example.com", "s1").private_key
    assert isinstance(loaded, ed25519.Ed25519PrivateKey)
    ed25519.Ed25519PublicKey.from_public_bytes(raw).verify(loaded.sign(b"message"), b"message")
