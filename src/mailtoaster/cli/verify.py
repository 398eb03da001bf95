"""``mailtoaster verify``: every authentication check on one message, as a receiving server sees it."""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import re
import socket
from typing import Any

from mailtoaster.cli.common import CliError, add_dns_options, read_input, resolver_from_args
from mailtoaster.cli.spam import add_store_options, spam_setup
from mailtoaster.dns import IPAddress
from mailtoaster.message import Message
from mailtoaster.spam import SpamScore, TokenStoreUnavailable
from mailtoaster.verify import Envelope, VerifyReport, render_json, render_text, verify_message

_BAD_ADDRESS_CHARS = re.compile(r"[\x00-\x20\x7f<>()\[\],;\\]")
_HOSTNAME = re.compile(r"^(?:\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_](?:[A-Za-z0-9_\-.]*[A-Za-z0-9_.])?)$")


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "verify",
        help="run every authentication check (SPF, Sender ID, DomainKeys, DKIM, ADSP, DMARC, ARC)",
        description=(
            "Check a message as a receiving server would: SPF for the envelope sender (or HELO for "
            "the null sender), Sender ID for the purported responsible address, every DomainKeys and "
            "DKIM signature, ADSP and DMARC for the author's domain, and the ARC chain. Prints a "
            "summary line per check, the details, and the Authentication-Results header."
        ),
    )
    parser.add_argument("file", nargs="?", default="-", metavar="FILE|-", help="the message (default: stdin)")
    parser.add_argument("--ip", required=True, help="the connecting client's IP address")
    parser.add_argument("--helo", required=True, metavar="NAME", help="the name the client gave in HELO/EHLO")
    parser.add_argument(
        "--mail-from",
        metavar="ADDR",
        help="the MAIL FROM reverse-path; '' is the null sender (default: the message's Return-Path)",
    )
    parser.add_argument(
        "--authserv-id",
        metavar="NAME",
        default=None,
        help="this server's name in Authentication-Results and Received-SPF (default: the host's FQDN)",
    )
    parser.add_argument("--json", action="store_true", help="print one JSON object keyed by check name")
    add_dns_options(parser)
    spam = parser.add_argument_group(
        "spam filter", "with either option, the message is also scored as the server would score it"
    )
    add_store_options(spam)
    spam.add_argument(
        "--user", metavar="ADDR", help="score with that user's own filter, once it has learned enough"
    )
    parser.set_defaults(func=run)


def parse_ip(text: str) -> IPAddress:
    try:
        return ipaddress.ip_address(text.strip())
    except ValueError:
        raise CliError(f"--ip: {text!r} is not an IPv4 or IPv6 address") from None


def parse_mail_from(text: str) -> str:
    """Accept ``addr``, ``<addr>`` or ``''``/``<>`` (the null sender); refuse what no SMTP server
    would take as a reverse-path."""
    address = text.strip()
    if address.startswith("<") and address.endswith(">"):
        address = address[1:-1]
    if not address:
        return ""
    local, at, domain = address.rpartition("@")
    if not at or not domain or _BAD_ADDRESS_CHARS.search(domain) or any(ord(c) < 0x21 for c in local):
        raise CliError(f"--mail-from: {text!r} is not a valid address (want local@domain, or '' for <>)")
    return address


def parse_helo(text: str) -> str:
    if not _HOSTNAME.match(text):
        raise CliError(f"--helo: {text!r} is not a host name or address literal")
    return text


def _return_path(message: Message) -> str:
    header = message.get("Return-Path")
    if header is None:
        raise CliError("no --mail-from given and the message has no Return-Path header")
    return header.value


async def _verify(args: argparse.Namespace) -> str:
    if args.user is not None and args.config is None and args.data_dir is None:
        raise CliError("--user scores with that user's spam filter: give --data-dir or --config too")
    data = read_input(args.file)
    message = Message.parse(data)
    mail_from = parse_mail_from(args.mail_from if args.mail_from is not None else _return_path(message))
    envelope = Envelope(parse_ip(args.ip), parse_helo(args.helo), mail_from)
    resolver = resolver_from_args(args)
    authserv_id = args.authserv_id or socket.getfqdn() or "localhost"
    report = await verify_message(message, envelope, resolver, authserv_id)
    spam = _spam_score(args, data, report)
    return render_json(report, spam) if args.json else render_text(report, spam)


def _spam_score(args: argparse.Namespace, data: bytes, report: VerifyReport) -> SpamScore | None:
    """The spam filter's score with the authentication results, when ``--config`` or ``--data-dir``
    says where the filter is; None without either (the report is about authentication then)."""
    if args.config is None and args.data_dir is None:
        return None
    spam_filter = spam_setup(args).open(create=False)
    try:
        return spam_filter.score(data, args.user, report)
    except TokenStoreUnavailable as exc:
        raise CliError(str(exc)) from exc
    finally:
        spam_filter.close()


def run(args: argparse.Namespace) -> int:
    print(asyncio.run(_verify(args)), end="")
    return 0
