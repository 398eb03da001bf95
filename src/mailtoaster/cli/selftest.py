"""``mailtoaster selftest DOMAIN``: the postmaster's end-to-end check after a change.

A local user of DOMAIN sends a message through the running server's submission port to the
server's own reflector, which answers into that user's Maildir; the report is printed. Exit 0 when
every summary line is ``pass`` (``ham`` for the spam filter, ``none`` allowed for ARC), 1 when one
is not, 2 when the test could not be run (bad options, server unreachable, no report in time).

The password is read from a prompt or, with ``--password-stdin``, from the first line of standard
input; never from an argument, which any user could read in ``ps``.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from pathlib import Path
from typing import Any

from mailtoaster.cli.common import CliError, read_password
from mailtoaster.config import Config, ConfigError, load_config, with_overrides
from mailtoaster.reflector.selftest import (
    SelftestError,
    SelftestPlan,
    failures,
    is_loopback,
    reflector_address,
    run_selftest,
    summary,
)
from mailtoaster.store import DIRECTORY_FILE, MAIL_DIR, Directory, DirectoryError, InvalidAddressError, User

DEFAULT_TIMEOUT = 60.0
UNSPECIFIED_ADDRESSES = {"0.0.0.0": "127.0.0.1", "::": "::1"}
"""A server listening on every address is reached on loopback."""


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "selftest",
        help="send a message to this server's own reflector and print the report",
        description="Send a message from a local user of DOMAIN through the running server's submission "
        "port (STARTTLS and AUTH) to the server's own reflector (check-auth-USER=DOMAIN@DOMAIN), wait for "
        "the report in that user's Maildir and print it. Run it on the server's machine. Exit 0 when "
        "every check passes, 1 when one does not, 2 when the test could not be run.",
    )
    parser.add_argument("domain", metavar="DOMAIN", help="the local domain to test, e.g. example.com")
    parser.add_argument("--config", metavar="FILE", help="the server's TOML configuration")
    parser.add_argument("--data-dir", metavar="DIR", help="the server's data directory (default ./var)")
    parser.add_argument(
        "--host", metavar="HOST", help="where the server listens (default: its first bind address)"
    )
    parser.add_argument(
        "--port", type=int, metavar="N", help="the submission port (default: [server] submission_port)"
    )
    parser.add_argument(
        "--user", metavar="ADDR", help="the sender, a user of DOMAIN (default: its first user)"
    )
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the user's password from the first line of standard input instead of prompting",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=DEFAULT_TIMEOUT,
        metavar="SECONDS",
        help=f"how long to wait for the report (default {DEFAULT_TIMEOUT:g})",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    config = _config(args)
    if not config.reflector.enabled:
        raise CliError("the reflector is off in this configuration ([reflector] enabled = false)")
    if not 0 < args.timeout <= 3600:
        raise CliError(f"--timeout {args.timeout:g}: expected more than 0 and at most 3600 seconds")
    user = _sender(config.data_dir, args.domain, args.user)
    password = read_password(args.password_stdin, f"Password for {user.email}: ")
    host = args.host or UNSPECIFIED_ADDRESSES.get(config.server.bind[0], config.server.bind[0])
    plan = SelftestPlan(
        host=host,
        port=_port(args.port, config),
        user=user.email,
        password=password,
        reflector=reflector_address(config.reflector.local_part, user.email),
        maildir=user.maildir,
        timeout=args.timeout,
        verify_tls=not is_loopback(host),
    )
    try:
        text = asyncio.run(run_selftest(plan))
    except SelftestError as error:
        raise CliError(str(error)) from None
    return _verdict(text)


def _verdict(text: str) -> int:
    lines = summary(text)
    if not lines:
        raise CliError("the answer has no summary of results: is it the reflector's?")
    print(text, end="" if text.endswith("\n") else "\n")
    failed = failures(lines)
    if failed:
        print(f"mailtoaster selftest: not every check passed: {'; '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def _config(args: argparse.Namespace) -> Config:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise CliError(str(error)) from None
    return with_overrides(config, "server", data_dir=args.data_dir)


def _port(given: int | None, config: Config) -> int:
    port = given if given is not None else config.server.submission_port
    if not 0 < port <= 65535:
        raise CliError(f"submission port {port} is not a port number (give --port)")
    return port


def _sender(data_dir: Path, domain: str, address: str | None) -> User:
    """The user who sends the test: ``--user`` (of DOMAIN), else DOMAIN's first user."""
    path = data_dir / DIRECTORY_FILE
    if not path.is_file():
        raise CliError(f"no directory at {path} (give the server's --data-dir or --config)")
    try:
        with Directory.open(path, mail_root=data_dir / MAIL_DIR) as directory:
            return _find_sender(directory, domain, address)
    except (DirectoryError, InvalidAddressError) as error:
        raise CliError(str(error)) from None


def _find_sender(directory: Directory, domain: str, address: str | None) -> User:
    found = directory.get_domain(domain)
    if found is None:
        raise CliError(f"{domain} is not a local domain of this server")
    if address is None:
        users = directory.list_users(found.name)
        if not users:
            raise CliError(f"{found.name} has no users: add one, or give --user")
        return users[0]
    user = directory.get_user(address)
    if user is None:
        raise CliError(f"{address} is not a user of this server")
    if user.address.domain != found.name:
        raise CliError(f"{address} is not a user of {found.name}")
    return user
