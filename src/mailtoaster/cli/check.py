"""``mailtoaster check``: ask DNS what a mail domain publishes and say what to fix, record by record.

Exit status: 0 all good, 1 warnings, 2 errors (bad input, a usage error, also exits 2).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from typing import Any

from mailtoaster.cli.common import CliError, add_dns_options, resolver_from_args
from mailtoaster.doctor import DoctorReport, check_domain, render_json, render_text
from mailtoaster.keys import DEFAULT_KEYS_DIR


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "check",
        help="check a mail domain's DNS records (MX, reverse DNS, SPF, DKIM, DomainKeys, ADSP, DMARC)",
        description="Query DNS for DOMAIN's mail records and report each finding as ok, warning or "
        "error, with the record to publish (BIND and tinydns form) for every problem. Every key in the "
        "key store for DOMAIN must be published. Exit status: 0 all good, 1 warnings, 2 errors.",
    )
    parser.add_argument("domain", metavar="DOMAIN")
    parser.add_argument(
        "--ip",
        action="append",
        default=[],
        metavar="SERVER_IP",
        help="an address the mail server sends from (repeatable): SPF must authorise it and its reverse "
        "DNS must be forward-confirmed",
    )
    parser.add_argument(
        "--keys-dir",
        metavar="DIR",
        default=str(DEFAULT_KEYS_DIR),
        help=f"key store directory (default {DEFAULT_KEYS_DIR})",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON document instead of text")
    add_dns_options(parser)
    parser.set_defaults(func=run)


async def _check(args: argparse.Namespace) -> DoctorReport:
    resolver = resolver_from_args(args)
    try:
        return await check_domain(args.domain, resolver, ips=args.ip, keys_dir=args.keys_dir)
    except ValueError as exc:
        raise CliError(str(exc)) from exc


def run(args: argparse.Namespace) -> int:
    report = asyncio.run(_check(args))
    sys.stdout.write(render_json(report) if args.json else render_text(report))
    return report.exit_code
