"""What every subcommand shares: the error that means "bad input, exit 2", the DNS options, input files."""

from __future__ import annotations

import argparse
import getpass
import sys
from pathlib import Path

from mailtoaster.dns import Resolver, ZoneFileError, load_zone_file

EXIT_USAGE = 2


class CliError(Exception):
    """Bad input from the user: printed as one line, exit code 2."""


def add_dns_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--dns-zone",
        metavar="FILE",
        help="answer DNS queries from this BIND master file (offline, for tests)",
    )
    group.add_argument(
        "--nameserver",
        metavar="HOST[:PORT]",
        action="append",
        help="ask this DNS server (repeatable; default: the system's resolvers)",
    )
    parser.add_argument(
        "--dns-timeout",
        metavar="SECONDS",
        type=float,
        default=5.0,
        help="time bound for each DNS query (default 5)",
    )


def resolver_from_args(args: argparse.Namespace) -> Resolver:
    if args.dns_zone:
        try:
            return load_zone_file(args.dns_zone)
        except ZoneFileError as exc:
            raise CliError(str(exc)) from exc
    from mailtoaster.dns.live import LiveResolver, ResolverConfigError, check_timeout, parse_nameserver

    servers = None
    if args.nameserver:
        try:
            servers = [parse_nameserver(text) for text in args.nameserver]
        except ValueError as exc:
            raise CliError(str(exc)) from exc
    try:
        check_timeout(args.dns_timeout)
    except ValueError as exc:
        raise CliError(f"--dns-timeout {exc}") from exc
    try:
        return LiveResolver(servers, timeout=args.dns_timeout)
    except ResolverConfigError as exc:
        raise CliError(str(exc)) from exc


def read_input(path: str | None) -> bytes:
    """Read a message from a file or, for ``-`` or no path, from standard input."""
    if path in (None, "-"):
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CliError(f"cannot read {path}: {exc.strerror or exc}") from exc


def read_password(from_stdin: bool, prompt: str = "Password: ", *, confirm: bool = False) -> str:
    """A password from the first line of standard input (``--password-stdin``) or asked on the
    terminal (twice with ``confirm``, when setting one), never from an argument anyone can read in
    ``ps``."""
    if from_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
        if not password:
            raise CliError("no password on standard input (its first line is the password)")
        return password
    try:
        first = getpass.getpass(prompt)
        second = getpass.getpass("Password again: ") if confirm else first
    except EOFError:
        raise CliError("no password given (no terminal? use --password-stdin)") from None
    if first != second:
        raise CliError("the two passwords differ")
    if not first:
        raise CliError("the password is empty")
    return first
