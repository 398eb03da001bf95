"""DKIM signs and verifies per second: mailtoaster next to dkimpy and to `openssl speed`'s raw rates.

For a 3 KB and a 100 KB message (generated, the same every run), with RSA-2048 and Ed25519 keys:
mailtoaster's ``sign_message`` and ``verify_dkim(Message.parse(raw), resolver)`` (key records in a
StaticResolver, so no real DNS, and the key caches warm), the bare ``check_signature`` step on a
message, signature and key parsed beforehand, dkimpy's ``dkim.sign``/``dkim.verify`` on the same
messages, the ``cryptography`` primitives on a bare digest (the floor under any DKIM code in this
process), and ``openssl speed rsa2048 ed25519``. Then the targets, each marked PASS or MISS.

One process, one thread, wall time, the best of 5 rounds per cell. Run by hand from the repository root:

    .venv/bin/python bench/dkim.py [--quick] [--seconds N] [--profile]

``--profile`` adds cProfile tables for mailtoaster's 3 KB sign and verify paths.
A figure to keep an eye on, not a test: nothing here fails a build.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import cProfile
import importlib
import os
import platform
import pstats
import random
import re
import shutil
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import ModuleType

import cryptography
from cryptography.hazmat.backends.openssl import backend as crypto_backend
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519, padding, rsa
from cryptography.hazmat.primitives.asymmetric.utils import Prehashed

from mailtoaster.auth.dkim import (
    DkimResult,
    DkimSigner,
    default_signed_headers,
    load_public_key,
    parse_key_record,
    parse_signature,
    sign_message,
    verify_dkim,
)
from mailtoaster.auth.dkim.engine import PrivateKey
from mailtoaster.auth.dkim.verify import DkimVerifyOptions, check_signature
from mailtoaster.dns import RRType, StaticResolver
from mailtoaster.keys import dkim_record_text
from mailtoaster.message import Message

# This file is named like dkimpy's module: keep its folder off the path so `dkim` is dkimpy.
_HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _HERE]

DOMAIN = "example.com"
SELECTOR = "bench"
TIMESTAMP = 1_700_000_000
SIZES = (("3 KB", 3 * 1024), ("100 KB", 100 * 1024))
ALGORITHMS = ("RSA-2048", "Ed25519")
SIGN_TARGET_SHARE = 0.70
VERIFY_TARGETS = {"3 KB": 5_000.0, "100 KB": 1_000.0}


def machine() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", load average {:.2f} {:.2f} {:.2f}".format(*os.getloadavg()) if hasattr(os, "getloadavg") else ""
    return (
        f"{platform.node()}: {cpu}, {os.cpu_count()} cores{load}, {platform.system()} {platform.release()}, "
        f"Python {platform.python_version()}"
    )


def revision() -> str:
    """The commit measured, and whether the DKIM code differs from it (others edit the same checkout)."""
    root = _HERE.parent
    try:
        head = subprocess.run(
            ["git", "-C", str(root), "log", "-1", "--format=%h %s"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
        dirty = subprocess.run(
            [
                "git",
                "-C",
                str(root),
                "status",
                "--porcelain",
                "--",
                "src/mailtoaster/auth/dkim",
                "src/mailtoaster/message.py",
            ],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        return "unknown revision"
    head = head if len(head) <= 72 else head[:69] + "..."
    return f"{head or 'unknown revision'}{' + uncommitted changes to the DKIM code' if dirty else ''}"


# --- the messages ------------------------------------------------------------------------------------

_TEXT = (
    "the relay queue held forty messages overnight while the secondary exchanger was rebuilt and "
    "every sender retried on schedule so nothing bounced but the backlog took an hour to drain after "
    "we restored service please check the figures attached to the ticket before the review on "
    "thursday because finance wants the delivery latency broken down by destination domain and by "
    "hour of day including deferrals greylisting and the occasional timeout from large providers "
    "whose limits changed last month without notice we also need to rotate the signing keys publish "
    "new selectors and retire the old records once the caches have expired"
)
_WORDS = _TEXT.split()


def make_message(size: int, seed: int) -> bytes:
    """A plain-text reply of about ``size`` octets (never more), CRLF line endings, deterministic.

    Headers as a mail client and two relays write them; a ``format=flowed`` body whose soft line
    breaks leave a trailing space (so relaxed canonicalisation has work to do), a quoted part and a
    signature block.
    """
    rng = random.Random(seed)
    msgid = f"<{TIMESTAMP}.{seed:06d}.bench@{DOMAIN}>"
    parent = f"<{TIMESTAMP - 86_400}.{seed:06d}.thread@example.net>"
    headers = [
        "Return-Path: <alice@example.com>",
        "Received: from mail.example.com (mail.example.com [192.0.2.25])\r\n"
        "\tby mx.example.net (mailtoaster) with ESMTPS id 4F2k9Q1xZz\r\n"
        "\tfor <bob@example.net>; Tue, 14 Nov 2023 22:13:20 +0000",
        "Received: from [198.51.100.7] (helo=laptop.example.com)\r\n"
        "\tby mail.example.com with ESMTPSA id 1r3xQe-0004kD-2b; Tue, 14 Nov 2023 22:13:19 +0000",
        "From: Alice Example <alice@example.com>",
        "To: Bob Example <bob@example.net>, carol@example.org",
        "Cc: Dave Operator <dave@example.org>",
        "Subject: Re: delivery latency after the exchanger rebuild",
        "Date: Tue, 14 Nov 2023 22:13:18 +0000",
        f"Message-ID: {msgid}",
        f"In-Reply-To: {parent}",
        f"References: <{TIMESTAMP - 172_800}.{seed:06d}.thread@example.net>\r\n {parent}",
        "MIME-Version: 1.0",
        'Content-Type: text/plain; charset="us-ascii"; format=flowed',
        "Content-Transfer-Encoding: 7bit",
        "User-Agent: Example Mail 4.2",
        "List-Id: Relay operators <relay-ops.lists.example.com>",
    ]
    head = "".join(line + "\r\n" for line in headers) + "\r\n"
    closing = ["", "Regards,", "Alice", "", "-- ", "Alice Example, mail operations, example.com"]
    budget = size - len(head) - sum(len(line) + 2 for line in closing)
    body: list[str] = []
    used = 0

    def add(line: str) -> bool:
        nonlocal used
        if used + len(line) + 2 > budget:
            return False
        body.append(line)
        used += len(line) + 2
        return True

    add("Hi Bob,")
    add("")
    quoted = True
    while True:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(25, 90))]
        text = " ".join(words).capitalize() + "."
        prefix = "> " if quoted else ""
        quoted = rng.random() < 0.15
        lines = textwrap.wrap(text, 72 - len(prefix))
        # format=flowed (RFC 3676): every line but a paragraph's last ends in a space.
        flowed = [prefix + line + " " for line in lines[:-1]] + [prefix + lines[-1]]
        if not all(add(line) for line in [*flowed, ""]):
            break
    return (head + "".join(line + "\r\n" for line in body + closing)).encode("ascii")


# --- keys ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Key:
    name: str
    private_key: PrivateKey
    record: bytes
    """The key record's text, as DNS would hand it over (its strings joined)."""
    dkimpy_key: bytes
    """What dkimpy's sign wants: PEM for RSA, base64 of the 32-byte seed for Ed25519."""
    dkimpy_algorithm: bytes


def make_keys() -> list[Key]:
    rsa_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed_key = ed25519.Ed25519PrivateKey.generate()
    rsa_pem = rsa_key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    ed_seed = ed_key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    return [
        Key("RSA-2048", rsa_key, dkim_record_text(rsa_key.public_key()).encode(), rsa_pem, b"rsa-sha256"),
        Key(
            "Ed25519",
            ed_key,
            dkim_record_text(ed_key.public_key()).encode(),
            base64.b64encode(ed_seed),
            b"ed25519-sha256",
        ),
    ]


def resolver_for(key: Key) -> StaticResolver:
    resolver = StaticResolver()
    # Split into 255-octet character-strings, as a published TXT record must be.
    strings = tuple(key.record[i : i + 255] for i in range(0, len(key.record), 255))
    resolver.add(f"{SELECTOR}._domainkey.{DOMAIN}", RRType.TXT, strings)
    return resolver


# --- timing -------------------------------------------------------------------------------------------


ROUNDS = 5
"""Each cell is timed in this many rounds and the best one kept: other work on the machine only ever
slows a round down, so the fastest is the closest to what the code costs."""


def rate(call: Callable[[], object], seconds: float) -> float:
    """Calls per second of wall time: the best of ROUNDS rounds sharing ``seconds``, after a warm-up call."""
    call()
    best = 0.0
    for _ in range(ROUNDS):
        count, start = 0, time.perf_counter()
        deadline = start + seconds / ROUNDS
        while True:
            call()
            count += 1
            now = time.perf_counter()
            if now >= deadline:
                break
        best = max(best, count / (now - start))
    return best


def verify_rate(signed: bytes, resolver: StaticResolver, seconds: float) -> float:
    """``verify_dkim(Message.parse(signed), resolver)`` per second as :func:`rate` counts, all inside one
    event loop (one coroutine awaiting each verification in turn)."""

    async def timed() -> float:
        await verify_dkim(Message.parse(signed), resolver)
        best = 0.0
        for _ in range(ROUNDS):
            count, start = 0, time.perf_counter()
            deadline = start + seconds / ROUNDS
            while True:
                await verify_dkim(Message.parse(signed), resolver)
                count += 1
                now = time.perf_counter()
                if now >= deadline:
                    break
            best = max(best, count / (now - start))
        return best

    return asyncio.run(timed())


def ours_verdict(signed: bytes, record: bytes) -> str:
    """Why mailtoaster does not pass ``signed`` with the key in ``record``, or "" when it does."""
    resolver = StaticResolver()
    resolver.add(f"{SELECTOR}._domainkey.{DOMAIN}", RRType.TXT, (record,))
    verdicts = asyncio.run(verify_dkim(Message.parse(signed), resolver))
    if len(verdicts) != 1 or verdicts[0].result is not DkimResult.PASS:
        return "; ".join(f"{v.result.value} ({v.reason})" for v in verdicts) or "no verdict"
    return ""


# --- openssl speed ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OpensslRates:
    version: str
    rates: dict[tuple[str, str], float]
    """(algorithm name as in ALGORITHMS, "sign" or "verify") -> operations per second."""


def openssl_speed(seconds: int) -> OpensslRates | str:
    """``openssl speed -mr -seconds N rsa2048 ed25519``, parsed; a string says why there is nothing."""
    exe = shutil.which("openssl")
    if exe is None:
        return "openssl is not installed (not on PATH): no raw rates to compare with"
    command = [exe, "speed", "-mr", "-seconds", str(seconds), "rsa2048", "ed25519"]
    try:
        version = subprocess.run([exe, "version"], capture_output=True, text=True, check=False).stdout
        done = subprocess.run(command, capture_output=True, text=True, timeout=20 * seconds + 60, check=False)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"openssl speed failed: {error}"
    output = done.stdout + done.stderr
    rates: dict[tuple[str, str], float] = {}
    # Machine-readable lines: "+F2:<n>:2048:<sign/s>:<verify/s>", "+F6:<n>:253:Ed25519:<sign/s>:<verify/s>".
    for match in re.finditer(r"^\+F2:\d+:2048:([\d.]+):([\d.]+)", output, re.MULTILINE):
        rates[("RSA-2048", "sign")], rates[("RSA-2048", "verify")] = map(float, match.groups())
    for match in re.finditer(r"^\+F6:\d+:\d+:Ed25519:([\d.]+):([\d.]+)", output, re.MULTILINE):
        rates[("Ed25519", "sign")], rates[("Ed25519", "verify")] = map(float, match.groups())
    if not rates:
        return f"could not read `{' '.join(command[1:])}` (exit {done.returncode}): {output.strip()[-200:]!r}"
    return OpensslRates(version.strip() or "openssl", rates)


# --- the measurements ---------------------------------------------------------------------------------


Table = dict[tuple[str, str, str], dict[str, float]]
"""(algorithm, "sign"/"verify", row label) -> {size label: rate}; the size label "-" is size-free."""

OURS_SIGN = "mailtoaster  sign_message"
OURS_VERIFY = "mailtoaster  verify_dkim(Message.parse(raw))"
OURS_CHECK = "mailtoaster  check_signature (pre-parsed)"
DKIMPY_SIGN = "dkimpy       dkim.sign"
DKIMPY_VERIFY = "dkimpy       dkim.verify"
FLOOR_SIGN = "cryptography sign a bare SHA-256 digest"
FLOOR_VERIFY = "cryptography verify a bare SHA-256 digest"
OPENSSL = "openssl speed (raw operation)"


def measure(keys: list[Key], messages: dict[str, bytes], seconds: float) -> Table:
    dkimpy: ModuleType | None
    try:
        dkimpy = importlib.import_module("dkim")
    except ImportError:
        dkimpy = None
    table: Table = {}
    for key in keys:
        for size, raw in messages.items():
            print(f"  {key.name:<8} {size:>6} ...", flush=True)
            for (operation, label), value in measure_message(key, raw, dkimpy, seconds).items():
                table.setdefault((key.name, operation, label), {})[size] = value
        sign_floor, verify_floor = primitive_rates(key.private_key, seconds)
        table[(key.name, "sign", FLOOR_SIGN)] = {"-": sign_floor}
        table[(key.name, "verify", FLOOR_VERIFY)] = {"-": verify_floor}
    return table


def measure_message(
    key: Key, raw: bytes, dkimpy: ModuleType | None, seconds: float
) -> dict[tuple[str, str], float]:
    """(operation, row label) -> rate for one key and one message, every signature checked first."""
    signer = DkimSigner(DOMAIN, SELECTOR, key.private_key)
    signed = sign_message(raw, [signer], timestamp=TIMESTAMP)
    problem = ours_verdict(signed, key.record)
    if problem:
        raise SystemExit(f"{key.name}: mailtoaster does not verify its own signature: {problem}")
    message = Message.parse(signed)
    field = message.headers[0]
    signature = parse_signature(field)
    record = parse_key_record(key.record.decode())
    public_key = load_public_key(record)
    options = DkimVerifyOptions()
    rates = {
        ("sign", OURS_SIGN): rate(lambda: sign_message(raw, [signer], timestamp=TIMESTAMP), seconds),
        ("verify", OURS_VERIFY): verify_rate(signed, resolver_for(key), seconds),
        ("verify", OURS_CHECK): rate(
            lambda: check_signature(message, 0, field, signature, record, public_key, options), seconds
        ),
    }
    if dkimpy is None:
        return rates
    names = [name.encode("ascii") for name in default_signed_headers(Message.parse(raw))]
    problem = ours_verdict(dkimpy_sign(dkimpy, key, raw, names), key.record)
    if problem:
        raise SystemExit(f"{key.name}: mailtoaster does not verify dkimpy's signature: {problem}")
    if not dkimpy_verify(dkimpy, key, signed):
        raise SystemExit(f"{key.name}: dkimpy does not verify mailtoaster's signature")
    rates[("sign", DKIMPY_SIGN)] = rate(lambda: dkimpy_sign(dkimpy, key, raw, names), seconds)
    rates[("verify", DKIMPY_VERIFY)] = rate(lambda: dkimpy_verify(dkimpy, key, signed), seconds)
    return rates


def dkimpy_sign(dkimpy: ModuleType, key: Key, raw: bytes, names: list[bytes]) -> bytes:
    """dkimpy's signature on ``raw`` over the same h= list as ours, prepended (as sign_message does)."""
    field: bytes = dkimpy.sign(
        raw,
        SELECTOR.encode(),
        DOMAIN.encode(),
        key.dkimpy_key,
        canonicalize=(b"relaxed", b"relaxed"),
        signature_algorithm=key.dkimpy_algorithm,
        include_headers=names,
    )
    return field + raw


def dkimpy_verify(dkimpy: ModuleType, key: Key, signed: bytes) -> bool:
    return bool(dkimpy.verify(signed, dnsfunc=lambda name, timeout=5: key.record))


def primitive_rates(private_key: PrivateKey, seconds: float) -> tuple[float, float]:
    """Sign and verify of one SHA-256 digest: the cost no DKIM code in this process can go under."""
    digest = bytes(range(32))
    if isinstance(private_key, ed25519.Ed25519PrivateKey):
        ed_public = private_key.public_key()
        ed_signature = private_key.sign(digest)
        return (
            rate(lambda: private_key.sign(digest), seconds),
            rate(lambda: ed_public.verify(ed_signature, digest), seconds),
        )
    rsa_public = private_key.public_key()
    prehashed = Prehashed(hashes.SHA256())
    rsa_signature = private_key.sign(digest, padding.PKCS1v15(), prehashed)
    return (
        rate(lambda: private_key.sign(digest, padding.PKCS1v15(), prehashed), seconds),
        rate(lambda: rsa_public.verify(rsa_signature, digest, padding.PKCS1v15(), prehashed), seconds),
    )


# --- the report ---------------------------------------------------------------------------------------


def report(table: Table, messages: dict[str, bytes], openssl: OpensslRates | str) -> None:
    sizes = list(messages)
    label_width = 48
    print(f"\n{'':<{label_width}}" + "".join(f"{size + ' msg':>14}" for size in sizes))
    print(f"{'':<{label_width}}" + "".join(f"{f'({len(raw):,} B)':>14}" for raw in messages.values()))
    for algorithm in ALGORITHMS:
        for operation in ("sign", "verify"):
            print(f"{algorithm} {'signs' if operation == 'sign' else 'verifies'}/s")
            rows = [
                (label, cells)
                for (alg, op, label), cells in table.items()
                if (alg, op) == (algorithm, operation)
            ]
            if isinstance(openssl, OpensslRates) and (algorithm, operation) in openssl.rates:
                rows.append((OPENSSL, {"-": openssl.rates[(algorithm, operation)]}))
            for label, cells in rows:
                shown = [cells.get(size, cells.get("-")) for size in sizes]
                texts = [f"{value:,.0f}" if value is not None else "-" for value in shown]
                if "-" in cells:
                    texts[1:] = ["(no message)"] + ["" for _ in texts[2:]]
                print(f"  {label:<{label_width - 2}}" + "".join(f"{text:>14}" for text in texts))
    print(f"\ncryptography {cryptography.__version__} on {crypto_backend.openssl_version_text()}")
    if isinstance(openssl, str):
        print(f"openssl speed: {openssl}")
    else:
        print(f"openssl speed: {openssl.version} (the command-line tool)")
    print("\ntargets (mailtoaster's public paths: sign_message, verify_dkim(Message.parse(raw)))")
    for mark, text in targets(table, openssl):
        print(f"  {mark:<5} {text}")


def targets(table: Table, openssl: OpensslRates | str) -> list[tuple[str, str]]:
    marks: list[tuple[str, str]] = []
    ours_sign = table[("RSA-2048", "sign", OURS_SIGN)]["3 KB"]
    if isinstance(openssl, OpensslRates) and ("RSA-2048", "sign") in openssl.rates:
        raw = openssl.rates[("RSA-2048", "sign")]
        share = ours_sign / raw
        marks.append(
            (
                "PASS" if share >= SIGN_TARGET_SHARE else "MISS",
                f"RSA-2048 sign, 3 KB, >= {SIGN_TARGET_SHARE:.0%} of openssl's raw sign rate: "
                f"{ours_sign:,.0f}/s = {share:.0%} of {raw:,.0f}/s (needs {raw * SIGN_TARGET_SHARE:,.0f}/s)",
            )
        )
    else:
        marks.append(("n/a", f"RSA-2048 sign, 3 KB: {ours_sign:,.0f}/s; no openssl rate to compare with"))
    for size, target in VERIFY_TARGETS.items():
        for algorithm in ALGORITHMS:
            got = table[(algorithm, "verify", OURS_VERIFY)][size]
            marks.append(
                (
                    "PASS" if got >= target else "MISS",
                    f"{algorithm} verify, {size}, >= {target:,.0f}/s: {got:,.0f}/s",
                )
            )
    return marks


# --- profiles -----------------------------------------------------------------------------------------


def profile(keys: list[Key], raw: bytes, seconds: float, rows: int = 16) -> None:
    """cProfile of mailtoaster's sign_message and verify_dkim on ``raw``, busiest functions first."""
    for key in keys:
        signer = DkimSigner(DOMAIN, SELECTOR, key.private_key)
        signed = sign_message(raw, [signer], timestamp=TIMESTAMP)
        resolver = resolver_for(key)
        runs: list[tuple[str, Callable[[], float]]] = [
            (
                "sign_message",
                partial(rate, partial(sign_message, raw, [signer], timestamp=TIMESTAMP), seconds),
            ),
            ("verify_dkim(Message.parse(raw))", partial(verify_rate, signed, resolver, seconds)),
        ]
        for what, run in runs:
            profiler = cProfile.Profile()
            profiler.runcall(run)
            print(f"\n=== profile: {key.name} {what}, {len(raw):,} B message (with the profiler's overhead)")
            pstats.Stats(profiler).strip_dirs().sort_stats("tottime").print_stats(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=1.5, help="time per cell (default 1.5)")
    parser.add_argument("--quick", action="store_true", help="0.3 s per cell, openssl speed for 1 s")
    parser.add_argument("--profile", action="store_true", help="also cProfile the 3 KB paths")
    args = parser.parse_args()
    seconds = 0.3 if args.quick else args.seconds
    messages = {label: make_message(size, seed=index) for index, (label, size) in enumerate(SIZES)}
    print(machine())
    print(f"mailtoaster at {revision()}")
    print(
        f"DKIM, relaxed/relaxed; one process, one thread; wall time, best of {ROUNDS} rounds in "
        f"~{seconds:g} s per cell; keys cached, key records in a StaticResolver (no DNS)"
    )
    keys = make_keys()
    table = measure(keys, messages, seconds)
    print("  openssl speed ...", flush=True)
    openssl = openssl_speed(1 if args.quick else 2)
    report(table, messages, openssl)
    if args.profile:
        profile(keys, messages["3 KB"], seconds)


if __name__ == "__main__":
    main()
