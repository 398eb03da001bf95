"""DKIM signing keys on disk, in qmail's ``domainkeys/<domain>/<selector>`` layout.

Each private key is one unencrypted PKCS#8 PEM file named exactly after its selector, inside a
directory per domain. The domain directory is mode 0700 and the key 0600: the key store is the only
secret the signer needs, and nothing else on the machine should be able to read it.
"""

from __future__ import annotations

import base64
import enum
import os
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeAlias

from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailtoaster.keys.names import validate_domain, validate_selector

DEFAULT_KEYS_DIR = Path("var/keys")
DEFAULT_RSA_BITS = 2048
MIN_RSA_BITS = 1024
"""RFC 8301 §3.2: signers MUST use RSA keys of at least 1024 bits (and SHOULD use 2048)."""
MAX_RSA_BITS = 8192
"""Beyond this generation takes minutes and the record no longer fits a DNS answer comfortably."""
RSA_BITS_STEP = 256
"""Key sizes are whole multiples of this (1024, 1280, ..., 2048, 3072, 4096): odd sizes gain nothing
and are more likely a typo."""
PUBLIC_EXPONENT = 65537
KEY_FILE_MODE = 0o600
DOMAIN_DIR_MODE = 0o700
_MAX_KEY_FILE_BYTES = 64 * 1024
"""An 8192-bit PKCS#8 PEM is about 6.5 KB; anything far larger is not a key."""

PrivateKey: TypeAlias = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey
PublicKey: TypeAlias = rsa.RSAPublicKey | ed25519.Ed25519PublicKey


class KeyType(enum.StrEnum):
    RSA = "rsa"
    ED25519 = "ed25519"


class KeyStoreError(Exception):
    """A key file cannot be written or read; the message names the file and the reason."""


class KeyExistsError(KeyStoreError):
    """Refused to replace an existing key (pass ``force=True`` to replace it)."""


@dataclass(frozen=True)
class StoredKey:
    """One private key of the store and where it lives."""

    domain: str
    selector: str
    path: Path
    private_key: PrivateKey = field(repr=False, compare=False)

    @property
    def key_type(self) -> KeyType:
        return key_type_of(self.private_key)

    @property
    def bits(self) -> int | None:
        """The RSA modulus size; None for Ed25519, whose size is fixed."""
        return self.private_key.key_size if isinstance(self.private_key, rsa.RSAPrivateKey) else None

    @property
    def description(self) -> str:
        return f"{self.bits}-bit RSA" if self.bits is not None else "Ed25519"

    @property
    def record_name(self) -> str:
        """Where the public key is published: ``<selector>._domainkey.<domain>`` (RFC 6376 §3.6.2.1)."""
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def dkim_record(self) -> str:
        return dkim_record_text(self.private_key.public_key())


def key_type_of(key: PrivateKey | PublicKey) -> KeyType:
    if isinstance(key, rsa.RSAPrivateKey | rsa.RSAPublicKey):
        return KeyType.RSA
    return KeyType.ED25519


def _refuse_short_rsa(bits: int) -> None:
    if bits < MIN_RSA_BITS:
        raise ValueError(
            f"RSA keys shorter than {MIN_RSA_BITS} bits are refused: RFC 8301 forbids signing with them "
            f"and verifiers must treat their signatures as invalid (use {DEFAULT_RSA_BITS})"
        )


def check_rsa_bits(bits: int) -> None:
    """Raise ValueError unless ``bits`` is a size worth generating."""
    _refuse_short_rsa(bits)
    if bits > MAX_RSA_BITS:
        raise ValueError(f"RSA keys longer than {MAX_RSA_BITS} bits are refused (use {DEFAULT_RSA_BITS})")
    if bits % RSA_BITS_STEP:
        raise ValueError(
            f"RSA key size {bits} is not a multiple of {RSA_BITS_STEP} bits (use 1024, 2048, 3072 or 4096)"
        )


def generate_private_key(key_type: KeyType = KeyType.RSA, bits: int | None = None) -> PrivateKey:
    """A fresh key: RSA of ``bits`` (default 2048) or Ed25519 (RFC 8463, which takes no size)."""
    if key_type is KeyType.ED25519:
        if bits is not None:
            raise ValueError("Ed25519 keys have a fixed size: do not give a number of bits")
        return ed25519.Ed25519PrivateKey.generate()
    size = DEFAULT_RSA_BITS if bits is None else bits
    check_rsa_bits(size)
    return rsa.generate_private_key(public_exponent=PUBLIC_EXPONENT, key_size=size)


def key_path(keys_dir: str | Path, domain: str, selector: str) -> Path:
    """``<keys_dir>/<domain>/<selector>`` after validating both names (so no path can escape)."""
    return Path(keys_dir) / validate_domain(domain) / validate_selector(selector)


def private_key_pem(key: PrivateKey) -> bytes:
    """Unencrypted PKCS#8 PEM (``BEGIN PRIVATE KEY``), the form every DKIM signer reads."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def write_key(
    keys_dir: str | Path, domain: str, selector: str, key: PrivateKey, *, force: bool = False
) -> StoredKey:
    """Store ``key`` as ``<keys_dir>/<domain>/<selector>`` (mode 0600, domain directory 0700).

    The file is written under a temporary name and then linked (or, with ``force``, renamed) into
    place, so a crash never leaves a half-written key and an existing key is never replaced unless
    ``force`` is given (:class:`KeyExistsError` otherwise). RSA keys under 1024 bits are refused
    (ValueError), as :func:`generate_private_key` refuses to make them.
    """
    path = key_path(keys_dir, domain, selector)
    if isinstance(key, rsa.RSAPrivateKey):
        _refuse_short_rsa(key.key_size)  # a key made elsewhere (cryptography makes none this short)
    _prepare_domain_dir(path.parent)
    if not force:
        _refuse_existing(path)
    if path.is_dir():
        raise KeyStoreError(f"cannot write key {path}: it is a directory")
    temporary = path.with_name(f".{path.name}.tmp-{secrets.token_hex(6)}")
    try:
        _write_private_file(temporary, private_key_pem(key))
        if force:
            os.replace(temporary, path)
        else:
            os.link(temporary, path)
    except FileExistsError as exc:
        raise KeyExistsError(f"key {path} already exists (use --force to replace it)") from exc
    except OSError as exc:
        raise KeyStoreError(f"cannot write key {path}: {exc.strerror or exc}") from exc
    finally:
        temporary.unlink(missing_ok=True)
    return StoredKey(path.parent.name, path.name, path, key)


def _refuse_existing(path: Path) -> None:
    """KeyExistsError if ``path`` exists; KeyStoreError if the file system cannot say."""
    try:
        exists = path.exists()
    except OSError as exc:
        raise KeyStoreError(f"cannot check for key {path}: {exc.strerror or exc}") from exc
    if exists:
        raise KeyExistsError(f"key {path} already exists (use --force to replace it)")


def _prepare_domain_dir(directory: Path) -> None:
    try:
        directory.parent.mkdir(parents=True, exist_ok=True)
        directory.mkdir(mode=DOMAIN_DIR_MODE, exist_ok=True)
        directory.chmod(DOMAIN_DIR_MODE)  # mkdir's mode is filtered by the umask; an old dir may be wider
    except OSError as exc:
        raise KeyStoreError(f"cannot create key directory {directory}: {exc.strerror or exc}") from exc


def _write_private_file(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, KEY_FILE_MODE)
    try:
        os.fchmod(fd, KEY_FILE_MODE)  # exact mode whatever the umask
        with os.fdopen(fd, "wb", closefd=False) as stream:
            stream.write(data)
            stream.flush()
            os.fsync(fd)
    finally:
        os.close(fd)


def create_key(
    keys_dir: str | Path,
    domain: str,
    selector: str,
    *,
    key_type: KeyType = KeyType.RSA,
    bits: int | None = None,
    force: bool = False,
) -> StoredKey:
    """Generate a key and store it; names and size are checked before the (slow) generation."""
    path = key_path(keys_dir, domain, selector)
    if not force:
        _refuse_existing(path)
    key = generate_private_key(key_type, bits)
    return write_key(keys_dir, domain, selector, key, force=force)


def load_private_key(path: str | Path) -> PrivateKey:
    """Read an unencrypted PEM private key (PKCS#8, or the PKCS#1 ``BEGIN RSA PRIVATE KEY`` form older
    qmail tools wrote) and check it is RSA or Ed25519."""
    path = Path(path)
    return _parse_private_key(_read_key_file(path), path)


def _read_key_file(path: Path) -> bytes:
    """At most one byte more than a key file may hold, so a caller can tell a file is too large."""
    try:
        with path.open("rb") as stream:
            return stream.read(_MAX_KEY_FILE_BYTES + 1)
    except OSError as exc:
        raise KeyStoreError(f"cannot read key {path}: {exc.strerror or exc}") from exc


def _parse_private_key(data: bytes, path: Path) -> PrivateKey:
    if len(data) > _MAX_KEY_FILE_BYTES:
        raise KeyStoreError(f"cannot read key {path}: file too large to be a private key")
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except TypeError as exc:
        raise KeyStoreError(f"cannot read key {path}: it is encrypted (signers need it unencrypted)") from exc
    except (ValueError, UnsupportedAlgorithm) as exc:
        raise KeyStoreError(f"cannot read key {path}: not a PEM private key") from exc
    if not isinstance(key, rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey):
        raise KeyStoreError(f"cannot use key {path}: {type(key).__name__} is neither RSA nor Ed25519")
    return key


def load_key(keys_dir: str | Path, domain: str, selector: str) -> StoredKey:
    path = key_path(keys_dir, domain, selector)
    return StoredKey(path.parent.name, path.name, path, load_private_key(path))


def list_keys(keys_dir: str | Path, domain: str) -> list[StoredKey]:
    """The keys of ``domain``, sorted by selector; none if the domain has no directory.

    Files that are not private keys (``public.txt``, ``<selector>.pub``, editor backups, our own
    temporary files) are skipped; a file that looks like a private key but does not load is an error,
    because silently dropping a key would silently drop its DNS record.
    """
    directory = Path(keys_dir) / validate_domain(domain)
    try:
        entries = sorted(directory.iterdir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise KeyStoreError(f"cannot list keys in {directory}: {exc.strerror or exc}") from exc
    keys = []
    for entry in entries:
        selector = _key_selector(entry)
        if selector is None:
            continue
        data = _read_key_file(entry)
        if b"PRIVATE KEY-----" in data[:_MAX_KEY_FILE_BYTES]:
            keys.append(StoredKey(directory.name, selector, entry, _parse_private_key(data, entry)))
    return keys


def _key_selector(entry: Path) -> str | None:
    """The selector a file in a domain directory stands for, or None for what cannot be a key file
    (dot files, directories, names that are not selectors such as ``public.txt~``)."""
    if entry.name.startswith(".") or not entry.is_file():
        return None
    try:
        return validate_selector(entry.name)
    except ValueError:
        return None


def public_key_base64(public_key: PublicKey) -> str:
    """The ``p=`` value: DER SubjectPublicKeyInfo for RSA (RFC 6376 §3.6.1), the raw 32-byte key for
    Ed25519 (RFC 8463 §4.2)."""
    if isinstance(public_key, rsa.RSAPublicKey):
        der = public_key.public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.b64encode(der).decode("ascii")
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def dkim_record_text(public_key: PublicKey) -> str:
    """The DKIM key record (RFC 6376 §3.6.1): ``v=DKIM1; k=rsa|ed25519; p=<base64>``."""
    return f"v=DKIM1; k={key_type_of(public_key)}; p={public_key_base64(public_key)}"


def domainkeys_record_text(public_key: PublicKey) -> str:
    """The DomainKeys key record (RFC 4870 §3.2.3): ``k=rsa; p=<base64>``, RSA only.

    DomainKeys verifiers ignore tags they do not recognise, so the DKIM record (with ``v=DKIM1``)
    serves them too and is what ``dns records`` publishes; this form is for DomainKeys-only setups.
    """
    if not isinstance(public_key, rsa.RSAPublicKey):
        raise ValueError("DomainKeys (RFC 4870) supports RSA keys only")
    return f"k=rsa; p={public_key_base64(public_key)}"
