"""Runners for real DKIM / DomainKeys implementations, so tests can check interoperation, not just RFC text.

Three peers, each driven the way a mail system drives it:

* **Mail::DKIM** (Perl, Debian ``libmail-dkim-perl``) through ``peer_scripts/mail_dkim.pl``: it
  signs with ``Mail::DKIM::Signer`` (DKIM ``rsa-sha256``/``rsa-sha1``, and DomainKeys through a
  ``Mail::DKIM::DkSignature`` policy: this version has no separate DomainKeys signer and no Ed25519)
  and verifies with ``Mail::DKIM::Verifier`` (DKIM-Signature and DomainKey-Signature alike),
  reporting every signature's result as JSON. One Perl process serves a whole test module.
* **OpenDKIM** (Debian ``opendkim``): the ``opendkim`` filter in its test mode (``-t``), which runs
  a message through the real milter code path. ``opendkim-testmsg`` is not used: it signs only
  ``rsa-sha1 relaxed/simple`` and has no way to point its verifier at our DNS server.
* **dkimpy** (Python, from PyPI, in-process; Ed25519 needs PyNaCl).

Keys are served the way each peer expects: Mail::DKIM (Net::DNS) and OpenDKIM (libunbound, with
``Nameservers 127.0.0.1@PORT``) query a :class:`~tests.dnsserver.DnsTestServer` on loopback that serves
the :class:`KeyZone`; dkimpy gets the same records through its ``dnsfunc`` hook, and mailtoaster
through a :class:`~mailtoaster.dns.StaticResolver` built from the same zone.

A missing peer skips the test with the reason, except under ``CI=true``, where it fails: CI must not
go green without the interop tests having run (``scripts/test`` installs the Debian packages).
"""

from __future__ import annotations

import base64
import functools
import importlib
import json
import os
import re
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from mailtoaster.auth.dkim.canon import to_crlf
from mailtoaster.dns import RRType, StaticResolver, normalise_name
from mailtoaster.keys import PrivateKey, dkim_record_text
from tests.dnsserver import DnsTestServer

PEER_SCRIPTS = Path(__file__).resolve().parent / "peer_scripts"
MAIL_DKIM_SCRIPT = PEER_SCRIPTS / "mail_dkim.pl"
PEER_TIMEOUT = 60
"""Seconds a peer process may run: a hang must end the test, not the suite (never asserted on)."""
_TXT_CHUNK = 255


class PeerError(RuntimeError):
    """A peer program failed in a way that is not a verification result (crash, bad usage)."""


# -- availability ---------------------------------------------------------------------------------


def _ci() -> bool:
    return os.environ.get("CI", "").lower() == "true"


def require(problem: str | None) -> None:
    """Skip the calling test when ``problem`` says a peer is missing; fail instead under ``CI=true``."""
    if problem is None:
        return
    if _ci():
        pytest.fail(f"{problem}; CI=true requires every interop peer (scripts/test installs them)")
    pytest.skip(f"{problem} (./scripts/test installs every peer the suite uses)")


@functools.cache
def mail_dkim_problem() -> str | None:
    """None when Perl's Mail::DKIM can be run, else why not."""
    if shutil.which("perl") is None:
        return "perl is not installed"
    modules = ["Mail::DKIM::Verifier", "Mail::DKIM::Signer", "Mail::DKIM::TextWrap", "Net::DNS", "JSON::PP"]
    command = ["perl", *(f"-M{module}" for module in modules), "-e1"]
    done = subprocess.run(command, capture_output=True, timeout=PEER_TIMEOUT, check=False)
    if done.returncode != 0:
        return "Perl Mail::DKIM is not installed: " + done.stderr.decode(errors="replace").splitlines()[0]
    return None


def opendkim_binary() -> str | None:
    """Where ``opendkim`` is (Debian puts it in /usr/sbin, which a non-root PATH may lack)."""
    found = shutil.which("opendkim")
    if found is None and Path("/usr/sbin/opendkim").exists():
        found = "/usr/sbin/opendkim"
    return found


@functools.cache
def opendkim_problem() -> str | None:
    """None when the ``opendkim`` filter (with Ed25519 support) can be run, else why not."""
    binary = opendkim_binary()
    if binary is None:
        return "OpenDKIM (opendkim) is not installed"
    done = subprocess.run([binary, "-V"], capture_output=True, timeout=PEER_TIMEOUT, check=False)
    if b"ed25519-sha256" not in done.stdout + done.stderr:
        return "this OpenDKIM has no ed25519-sha256 support"
    return None


def dkimpy() -> Any:
    """dkimpy's ``dkim`` module, imported by name: bench/dkim.py has the same name, and mypy's
    whole-project run would otherwise take that file for it (dkimpy has no type hints anyway)."""
    return importlib.import_module("dkim")


@functools.cache
def dkimpy_problem() -> str | None:
    """None when dkimpy with Ed25519 support (PyNaCl) can be imported, else why not."""
    try:
        dkimpy()
        importlib.import_module("nacl.signing")
    except ImportError as error:
        return f"dkimpy with Ed25519 support is not installed ({error}); pip install 'dkimpy[ed25519]'"
    return None


# -- keys and their DNS records -------------------------------------------------------------------


@dataclass(frozen=True)
class PeerKey:
    """A signing key with the name its public key is published under."""

    domain: str
    selector: str
    private_key: PrivateKey

    @property
    def name(self) -> str:
        return f"{self.selector}._domainkey.{self.domain}"

    @property
    def is_ed25519(self) -> bool:
        return isinstance(self.private_key, ed25519.Ed25519PrivateKey)

    @property
    def algorithm(self) -> str:
        return "ed25519-sha256" if self.is_ed25519 else "rsa-sha256"

    @property
    def record(self) -> str:
        """``v=DKIM1; k=...; p=...``: DomainKeys verifiers read it too (they ignore ``v=``)."""
        return dkim_record_text(self.private_key.public_key())

    def pem(self) -> bytes:
        """PEM every peer reads: PKCS#1 (``BEGIN RSA PRIVATE KEY``, what Mail::DKIM's
        Crypt::OpenSSL::RSA wants) for RSA, PKCS#8 for Ed25519 (OpenDKIM)."""
        key_format = (
            serialization.PrivateFormat.PKCS8
            if self.is_ed25519
            else serialization.PrivateFormat.TraditionalOpenSSL
        )
        return self.private_key.private_bytes(
            serialization.Encoding.PEM, key_format, serialization.NoEncryption()
        )

    def dkimpy_private(self) -> bytes:
        """dkimpy's form: PEM for RSA, the base64 32-byte seed for Ed25519."""
        if isinstance(self.private_key, ed25519.Ed25519PrivateKey):
            seed = self.private_key.private_bytes(
                serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
            )
            return base64.b64encode(seed)
        return self.pem()


def rsa_key(domain: str, selector: str, bits: int = 2048) -> PeerKey:
    return PeerKey(domain, selector, rsa.generate_private_key(public_exponent=65537, key_size=bits))


def ed25519_key(domain: str, selector: str) -> PeerKey:
    return PeerKey(domain, selector, ed25519.Ed25519PrivateKey.generate())


def _txt_strings(value: str) -> tuple[bytes, ...]:
    data = value.encode("ascii")
    return tuple(data[i : i + _TXT_CHUNK] for i in range(0, len(data), _TXT_CHUNK)) or (b"",)


def _zone_quote(chunk: bytes) -> str:
    return '"' + chunk.decode("ascii").replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass
class KeyZone:
    """TXT records (name → value), served alike to every verifier so they all see the same DNS."""

    records: dict[str, str] = field(default_factory=dict)

    def add(self, name: str, value: str) -> None:
        self.records[normalise_name(name)] = value

    def add_key(self, key: PeerKey) -> None:
        self.add(key.name, key.record)

    def zone_text(self) -> str:
        """BIND master-file text, values split into 255-octet strings as DNS requires."""
        lines = []
        for name, value in sorted(self.records.items()):
            strings = " ".join(_zone_quote(chunk) for chunk in _txt_strings(value))
            lines.append(f"{name}. 300 IN TXT {strings}")
        return "\n".join(lines) + "\n"

    def resolver(self) -> StaticResolver:
        """For mailtoaster."""
        resolver = StaticResolver()
        for name, value in self.records.items():
            resolver.add(name, RRType.TXT, _txt_strings(value))
        return resolver

    def dnsfunc(self, name: bytes, timeout: int = 5) -> bytes | None:
        """For dkimpy: the TXT value of ``name``, or None (dkimpy's "no record")."""
        value = self.records.get(normalise_name(name.decode("ascii")))
        return None if value is None else value.encode("ascii")


# -- what verifiers say ---------------------------------------------------------------------------


@dataclass(frozen=True)
class PeerVerdict:
    """One signature's result as a peer reported it, in the peer's own words (lower case)."""

    kind: str
    """``dkim`` or ``domainkeys``."""
    result: str
    """``pass``, ``fail``, ``invalid``, ``neutral``, ``permerror``, ``temperror``, ``none``..."""
    detail: str = ""
    domain: str = ""
    selector: str = ""

    @property
    def passed(self) -> bool:
        return self.result == "pass"


# -- the peers ------------------------------------------------------------------------------------


class MailDkimProcess:
    """One long-running ``mail_dkim.pl serve``: Perl, Net::DNS and Mail::DKIM start once for a whole
    test module instead of once per message (which made the interop tests several times slower)."""

    def __init__(self, server: DnsTestServer, workdir: Path) -> None:
        self._errors = workdir / "mail-dkim.stderr"
        command = ["perl", str(MAIL_DKIM_SCRIPT), "serve", "--nameserver", server.host]
        command += ["--port", str(server.port)]
        errors = os.open(self._errors, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        try:
            pipe = subprocess.PIPE
            self._process = subprocess.Popen(command, stdin=pipe, stdout=pipe, stderr=errors)
        finally:
            os.close(errors)  # the child has its own copy

    def request(self, command: str, options: dict[str, Any], message: bytes) -> dict[str, Any]:
        """Send one request, wait for its answer; a peer that hangs is killed after PEER_TIMEOUT."""
        stdin, stdout = self._process.stdin, self._process.stdout
        assert stdin is not None and stdout is not None
        header = json.dumps({"command": command, "options": options, "length": len(message)})
        watchdog = threading.Timer(PEER_TIMEOUT, self._process.kill)
        watchdog.start()
        try:
            stdin.write(header.encode("ascii") + b"\n" + message)
            stdin.flush()
            line = stdout.readline()
        finally:
            watchdog.cancel()
        if not line:
            raise PeerError(f"Mail::DKIM stopped: {self._stderr()}")
        answer: dict[str, Any] = json.loads(line)
        if "error" in answer:
            raise PeerError(f"Mail::DKIM {command} failed: {answer['error']}")
        return answer

    def _stderr(self) -> str:
        return self._errors.read_text(encoding="utf-8", errors="replace")

    def close(self) -> None:
        if self._process.stdin is not None:
            self._process.stdin.close()
        try:
            self._process.wait(PEER_TIMEOUT)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        if self._process.stdout is not None:
            self._process.stdout.close()


class Peers:
    """Every peer, sharing one :class:`KeyZone` served by one DNS server on 127.0.0.1.

    Call :meth:`publish` after adding keys to the zone (the DNS server then serves them).
    Messages may be given with LF or CRLF line endings; peers get CRLF, as on the wire.
    """

    def __init__(self, server: DnsTestServer, workdir: Path, zone: KeyZone | None = None) -> None:
        self.server = server
        self.zone = zone or KeyZone()
        self.workdir = workdir
        workdir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._key_files: dict[PeerKey, Path] = {}
        self._mail_dkim_process: MailDkimProcess | None = None

    def close(self) -> None:
        """Stop the long-running peer processes."""
        if self._mail_dkim_process is not None:
            self._mail_dkim_process.close()
            self._mail_dkim_process = None

    def __enter__(self) -> Peers:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def add_key(self, key: PeerKey) -> PeerKey:
        self.zone.add_key(key)
        self.publish()
        return key

    def publish(self) -> None:
        self.server.load_zone(self.zone.zone_text())

    def resolver(self) -> StaticResolver:
        """mailtoaster's view of the same zone."""
        return self.zone.resolver()

    # -- Mail::DKIM --

    def mail_dkim_verify(self, message: bytes, *, strict: bool = False) -> list[PeerVerdict]:
        """Mail::DKIM::Verifier's result for every DKIM-Signature and DomainKey-Signature."""
        report = self._mail_dkim().request("verify", {"strict": strict}, to_crlf(message))
        return [
            PeerVerdict(
                kind=entry["type"],
                result=str(entry["result"]).lower(),
                detail=str(entry.get("detail") or ""),
                domain=str(entry.get("domain") or ""),
                selector=str(entry.get("selector") or ""),
            )
            for entry in report["signatures"]
        ]

    def mail_dkim_sign(
        self,
        message: bytes,
        key: PeerKey,
        *,
        method: str = "relaxed/relaxed",
        algorithm: str = "rsa-sha256",
        headers: Sequence[str] | None = None,
        domainkeys: bool = False,
    ) -> bytes:
        """``message`` (CRLF) with Mail::DKIM's DKIM-Signature, or DomainKey-Signature, prepended.

        DomainKeys takes ``method`` ``nofws`` or ``simple`` and ``algorithm`` ``rsa-sha1``.
        """
        if key.is_ed25519:
            raise ValueError("Mail::DKIM 1.20230212 cannot sign with Ed25519")
        message = to_crlf(message)
        options: dict[str, str] = {
            "type": "domainkeys" if domainkeys else "dkim",
            "algorithm": algorithm,
            "method": method,
            "domain": key.domain,
            "selector": key.selector,
            "key": str(self._key_file(key)),
        }
        if headers is not None:
            options["headers"] = ":".join(headers)
        answer = self._mail_dkim().request("sign", options, message)
        return to_crlf(str(answer["signature"]).encode("ascii")) + message

    def _mail_dkim(self) -> MailDkimProcess:
        require(mail_dkim_problem())
        if self._mail_dkim_process is None:
            self._mail_dkim_process = MailDkimProcess(self.server, self.workdir)
        return self._mail_dkim_process

    # -- OpenDKIM --

    def opendkim_verify(self, message: bytes) -> list[PeerVerdict]:
        """OpenDKIM's result for every DKIM-Signature, read from the Authentication-Results it adds
        (empty when OpenDKIM evaluated none)."""
        require(opendkim_problem())
        config = self._config(
            "verify",
            [
                "Mode v",
                f"Nameservers {self.server.host}@{self.server.port}",
                "AlwaysAddARHeader yes",
                "AuthservID interop.test",
                "MaximumSignaturesToVerify 10",
            ],
        )
        output = self._opendkim(config, message, verbose=True)
        return _opendkim_verdicts(output)

    def opendkim_sign(
        self,
        message: bytes,
        key: PeerKey,
        *,
        canonicalization: str = "relaxed/relaxed",
        headers: Sequence[str] | None = None,
    ) -> bytes:
        """``message`` (CRLF) with OpenDKIM's DKIM-Signature prepended (rsa-sha256 or ed25519-sha256,
        after the key). Any From domain is signed with ``key`` (a wildcard SigningTable)."""
        require(opendkim_problem())
        message = to_crlf(message)
        keytable = self._write("keytable", f"signer {key.domain}:{key.selector}:{self._key_file(key)}\n")
        signingtable = self._write("signingtable", "* signer\n")
        lines = [
            "Mode s",
            f"KeyTable file:{keytable}",
            f"SigningTable refile:{signingtable}",
            f"SignatureAlgorithm {key.algorithm}",
            f"Canonicalization {canonicalization}",
        ]
        if headers is not None:
            lines.append(f"SignHeaders {','.join(headers)}")
        output = self._opendkim(self._config("sign", lines), message, verbose=False)
        return _opendkim_signature(output) + message

    def _opendkim(self, config: Path, message: bytes, *, verbose: bool) -> str:
        with tempfile.NamedTemporaryFile(dir=self.workdir, suffix=".eml", delete=False) as handle:
            handle.write(to_crlf(message))
        try:
            command = [opendkim_binary() or "opendkim", "-x", str(config), "-t", handle.name]
            command += ["-vv"] if verbose else []
            return _run(command, b"").decode("utf-8", errors="replace")
        finally:
            os.unlink(handle.name)

    def _config(self, name: str, lines: list[str]) -> Path:
        common = ["Syslog no", "RequireSafeKeys false", "MinimumKeyBits 1024"]
        return self._write(f"opendkim-{name}.conf", "\n".join([*common, *lines]) + "\n")

    # -- dkimpy --

    def dkimpy_verify(self, message: bytes) -> list[bool]:
        """dkimpy's pass/fail for every DKIM-Signature, in header order (dkimpy says no more)."""
        require(dkimpy_problem())
        return dkimpy_verify(message, self.zone)

    def dkimpy_sign(
        self,
        message: bytes,
        key: PeerKey,
        *,
        canonicalization: str = "relaxed/simple",
        headers: Sequence[str] | None = None,
    ) -> bytes:
        require(dkimpy_problem())
        return dkimpy_sign(message, key, canonicalization=canonicalization, headers=headers)

    # -- files --

    def _key_file(self, key: PeerKey) -> Path:
        if key not in self._key_files:
            path = self.workdir / f"{key.selector}.{key.domain}.pem"
            path.write_bytes(key.pem())
            path.chmod(0o600)
            self._key_files[key] = path
        return self._key_files[key]

    def _write(self, name: str, text: str) -> Path:
        path = self.workdir / name
        path.write_text(text, encoding="ascii")
        return path


def dkimpy_verify(message: bytes, zone: KeyZone) -> list[bool]:
    """dkimpy's pass/fail for every DKIM-Signature of ``message``, in header order."""
    message = to_crlf(message)
    count = sum(1 for name, _ in dkimpy().DKIM(message).headers if name.lower() == b"dkim-signature")
    return [_dkimpy_verify_one(message, index, zone) for index in range(count)]


def _dkimpy_verify_one(message: bytes, index: int, zone: KeyZone) -> bool:
    """``dkim.verify`` for signature ``index`` (it only checks the first); errors are a failure, as
    ``dkim.verify`` counts them."""
    dkim = dkimpy()
    try:
        return bool(dkim.DKIM(message).verify(idx=index, dnsfunc=zone.dnsfunc))
    except dkim.DKIMException:
        return False


def dkimpy_sign(
    message: bytes,
    key: PeerKey,
    *,
    canonicalization: str = "relaxed/simple",
    headers: Sequence[str] | None = None,
) -> bytes:
    """``message`` (CRLF) with dkimpy's DKIM-Signature prepended (algorithm after the key)."""
    message = to_crlf(message)
    header_canon, _, body_canon = canonicalization.partition("/")
    signature: bytes = dkimpy().sign(
        message,
        key.selector.encode("ascii"),
        key.domain.encode("ascii"),
        key.dkimpy_private(),
        canonicalize=(header_canon.encode("ascii"), (body_canon or "simple").encode("ascii")),
        signature_algorithm=key.algorithm.encode("ascii"),
        include_headers=None if headers is None else [name.encode("ascii") for name in headers],
    )
    return signature + message


# -- parsing peer output --------------------------------------------------------------------------

_AR_INSERT = re.compile(r"### INSHEADER: idx=\d+ hname='Authentication-Results' hvalue='(.*?)'\n", re.S)
_AR_COMMENT = re.compile(r"\([^()]*\)")
_AR_DKIM = re.compile(r"(?:^|;)\s*dkim=(\w+)([^;]*)")
_AR_PROPERTY = re.compile(r"header\.([ds])=(\S+)")
_AR_REASON = re.compile(r'reason="([^"]*)"')
_SIGNATURE = re.compile(r"^DKIM-Signature:.*?(?=^\S|\Z)", re.S | re.M)


def _opendkim_verdicts(output: str) -> list[PeerVerdict]:
    """Per-signature results from the Authentication-Results field OpenDKIM's test mode inserts."""
    match = _AR_INSERT.search(output)
    if match is None and "message not signed" in output:
        return []  # what OpenDKIM says when it evaluated no signature at all, so it adds no field
    if match is None:
        raise PeerError(f"OpenDKIM added no Authentication-Results field:\n{output}")
    verdicts = []
    without_comments = _AR_COMMENT.sub("", match.group(1))  # "(2048-bit key; unprotected)" has a ";"
    for result, rest in _AR_DKIM.findall(without_comments):
        found = dict(_AR_PROPERTY.findall(rest))
        reason = _AR_REASON.search(rest)
        verdicts.append(
            PeerVerdict(
                kind="dkim",
                result=result.lower(),
                detail=reason.group(1) if reason else "",
                domain=found.get("d", ""),
                selector=found.get("s", ""),
            )
        )
    return [verdict for verdict in verdicts if verdict.result != "none"]


def _opendkim_signature(output: str) -> bytes:
    """The DKIM-Signature field that OpenDKIM's test mode prints, CRLF-terminated."""
    match = _SIGNATURE.search(output.replace("\r\n", "\n"))
    if match is None:
        raise PeerError(f"OpenDKIM made no signature:\n{output}")
    return to_crlf(match.group(0).rstrip("\n").encode("ascii") + b"\n")


def _run(command: list[str], stdin: bytes) -> bytes:
    """Run a peer and return its standard output; a non-zero exit is a :class:`PeerError`."""
    done = subprocess.run(command, input=stdin, capture_output=True, timeout=PEER_TIMEOUT, check=False)
    if done.returncode != 0:
        raise PeerError(
            f"{' '.join(command)} exited {done.returncode}:\n{done.stderr.decode(errors='replace')}"
        )
    return done.stdout
