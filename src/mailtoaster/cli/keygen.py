"""``mailtoaster keygen``: make a DKIM key, store it, print the record to publish."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from mailtoaster.cli.common import CliError
from mailtoaster.dns.types import RRType
from mailtoaster.keys import DEFAULT_KEYS_DIR, DEFAULT_RSA_BITS, KeyStoreError, KeyType, create_key
from mailtoaster.records import DEFAULT_TTL, DnsRecord, bind_line


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "keygen",
        help="generate a DKIM signing key and print its DNS record",
        description="Generate a DKIM key, store it as KEYS_DIR/DOMAIN/SELECTOR (mode 0600) and print "
        "the TXT record to publish at SELECTOR._domainkey.DOMAIN.",
    )
    parser.add_argument("domain", metavar="DOMAIN", help="the signing domain (d=)")
    parser.add_argument("--selector", required=True, metavar="NAME", help="the selector (s=), e.g. 2024a")
    parser.add_argument(
        "--type",
        dest="key_type",
        choices=[t.value for t in KeyType],
        default=KeyType.RSA.value,
        help="key algorithm (default rsa; ed25519 is RFC 8463, not yet verified everywhere)",
    )
    parser.add_argument(
        "--bits", metavar="N", help=f"RSA key size, 1024 to 8192 (default {DEFAULT_RSA_BITS})"
    )
    parser.add_argument(
        "--keys-dir",
        metavar="DIR",
        default=str(DEFAULT_KEYS_DIR),
        help=f"key store directory (default {DEFAULT_KEYS_DIR})",
    )
    parser.add_argument("--force", action="store_true", help="replace an existing key with this selector")
    parser.set_defaults(func=run)


def parse_bits(text: str | None, key_type: KeyType) -> int | None:
    if text is None:
        return None
    if key_type is KeyType.ED25519:
        raise CliError("--bits applies to RSA keys only (Ed25519 keys have a fixed size)")
    try:
        return int(text)
    except ValueError:
        raise CliError(f"--bits must be a whole number, not {text!r}") from None


def run(args: argparse.Namespace) -> int:
    key_type = KeyType(args.key_type)
    bits = parse_bits(args.bits, key_type)
    try:
        key = create_key(
            args.keys_dir, args.domain, args.selector, key_type=key_type, bits=bits, force=args.force
        )
    except (ValueError, KeyStoreError) as exc:
        raise CliError(str(exc)) from exc
    if key.bits is not None and key.bits < DEFAULT_RSA_BITS:
        print(
            f"mailtoaster keygen: warning: RFC 8301 recommends keys of {DEFAULT_RSA_BITS} bits or more",
            file=sys.stderr,
        )
    record = DnsRecord(key.record_name, RRType.TXT, DEFAULT_TTL, key.dkim_record)
    print(f"; {key.description} DKIM key written to {key.path}; publish:")
    print(bind_line(record))
    return 0
