"""``mailtoaster sign``: sign a message with the domain's keys and print it.

Without ``--selector`` every key the domain has in the store signs, so a domain with an RSA and an
Ed25519 key gets both signatures (an Ed25519 signature alone fails at some large providers).
DomainKeys (``--domainkeys``) signs first, because it covers only the fields below its own; DKIM
signs next; an ARC set (``--arc``) is added last, as a forwarder would, and covers the rest; the chain the
message already has is validated first, with keys from DNS (``--dns-zone``/``--nameserver``).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from cryptography.hazmat.primitives.asymmetric import rsa

from mailtoaster.auth.dkim import DkimSigner, SigningError, sign_dkim
from mailtoaster.auth.dkim.canon import to_crlf
from mailtoaster.cli.common import CliError, add_dns_options, read_input, resolver_from_args
from mailtoaster.keys import DEFAULT_KEYS_DIR, KeyStoreError, StoredKey, list_keys, load_key, validate_domain

CANONICALIZATIONS = ("relaxed/relaxed", "relaxed/simple", "simple/relaxed", "simple/simple")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "sign",
        help="sign a message with DKIM (and optionally DomainKeys and ARC)",
        description="Sign a message with the keys in KEYS_DIR/DOMAIN and print the signed message. "
        "Without --selector, every key of the domain signs (RSA and Ed25519 alike).",
    )
    parser.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="the message (default: stdin)")
    parser.add_argument("--domain", required=True, metavar="D", help="the signing domain (d=)")
    parser.add_argument(
        "--selector", action="append", metavar="S", help="sign with this key only (repeatable)"
    )
    parser.add_argument(
        "--keys-dir",
        metavar="DIR",
        default=str(DEFAULT_KEYS_DIR),
        help=f"key store directory (default {DEFAULT_KEYS_DIR})",
    )
    parser.add_argument(
        "--canonicalization",
        choices=CANONICALIZATIONS,
        default="relaxed/relaxed",
        help="DKIM c= (default relaxed/relaxed)",
    )
    parser.add_argument(
        "--domainkeys", action="store_true", help="also add a DomainKeys (RFC 4870) signature, RSA keys only"
    )
    parser.add_argument(
        "--arc",
        action="store_true",
        help="also add an ARC set (RFC 8617) as a forwarder does; RSA keys only",
    )
    parser.add_argument("--authserv-id", metavar="ID", help="this server's authserv-id, required with --arc")
    add_dns_options(parser)
    parser.set_defaults(func=run)


def signing_keys(keys_dir: str, domain: str, selectors: list[str] | None) -> list[StoredKey]:
    try:
        domain = validate_domain(domain)
        if selectors:
            return [load_key(keys_dir, domain, selector) for selector in selectors]
        keys = list_keys(keys_dir, domain)
    except (KeyStoreError, ValueError, OSError) as exc:
        raise CliError(str(exc)) from exc
    if not keys:
        raise CliError(f"no keys for {domain} in {keys_dir} (make one with: mailtoaster keygen {domain} ...)")
    return keys


def _rsa_key(keys: list[StoredKey], purpose: str) -> StoredKey:
    for key in keys:
        if isinstance(key.private_key, rsa.RSAPrivateKey):
            return key
    raise CliError(f"{purpose} needs an RSA key; {keys[0].domain} has only Ed25519 keys here")


def sign(raw: bytes, args: argparse.Namespace) -> bytes:
    """The signed message, in CRLF form with the original's line endings restored on output."""
    keys = signing_keys(args.keys_dir, args.domain, args.selector)
    if args.arc and not args.authserv_id:
        raise CliError("--arc needs --authserv-id (the name this server uses in Authentication-Results)")
    message = to_crlf(raw)
    try:
        if args.domainkeys:
            message = _add_domainkeys(message, _rsa_key(keys, "--domainkeys"), args.domain)
        signers = [
            DkimSigner(args.domain, key.selector, key.private_key, args.canonicalization) for key in keys
        ]
        message = b"".join(sign_dkim(message, signers)) + message
        if args.arc:
            message = _add_arc(message, _rsa_key(keys, "--arc"), args.domain, args)
    except SigningError as exc:
        raise CliError(str(exc)) from exc
    return message if b"\r\n" in raw or b"\n" not in raw else message.replace(b"\r\n", b"\n")


def _add_domainkeys(message: bytes, key: StoredKey, domain: str) -> bytes:
    from mailtoaster.auth.domainkeys import DomainKeysSignError, sign_domainkeys

    assert isinstance(key.private_key, rsa.RSAPrivateKey)
    try:
        return sign_domainkeys(message, domain, key.selector, key.private_key) + message
    except DomainKeysSignError as exc:
        raise CliError(f"DomainKeys: {exc}") from exc


def _add_arc(message: bytes, key: StoredKey, domain: str, args: argparse.Namespace) -> bytes:
    """Validate the chain the message already has (its keys come from DNS), then add the next set.

    The ARC-Authentication-Results copies the message's Authentication-Results fields that carry
    ``--authserv-id``: the verdicts this server reached when the message came in.
    """
    from mailtoaster.auth.arc import ArcSigningError, add_arc_set, seal_arc

    resolver = resolver_from_args(args)
    try:
        outcome, fields = asyncio.run(
            seal_arc(message, resolver, domain=domain, selector=key.selector, private_key=key.private_key,
                     authserv_id=args.authserv_id)
        )  # fmt: skip
    except ArcSigningError as exc:
        raise CliError(f"ARC: {exc}") from exc
    if not fields:
        raise CliError(f"ARC: not sealed, the chain has already failed ({outcome.reason})")
    return add_arc_set(message, fields)


def run(args: argparse.Namespace) -> int:
    sys.stdout.buffer.write(sign(read_input(args.file), args))
    sys.stdout.buffer.flush()
    return 0
