"""``mailtoaster serve``: run the mail server (embedded default without a configuration file)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from typing import Any

from mailtoaster.cli.common import CliError
from mailtoaster.config import Config, ConfigError, load_config, with_overrides


def register(subparsers: Any) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="run the mail server",
        description="Run the mail server: SMTP, submission, local delivery, the outbound queue and IMAP. "
        "With no configuration file it listens on 127.0.0.1 and keeps its data under ./var.",
    )
    parser.add_argument("--config", metavar="FILE", help="TOML configuration (see docs/configuration.md)")
    parser.add_argument("--data-dir", metavar="DIR", help="data directory (default ./var)")
    parser.add_argument("--rules", metavar="FILE", help="client rules in tcprules format (tcp.smtp)")
    parser.add_argument("--bind", metavar="ADDR", action="append", help="listen address (repeatable)")
    parser.add_argument("--smtp-port", type=int, metavar="N", help="SMTP port (default 2525)")
    parser.add_argument(
        "--submission-port", type=int, metavar="N", help="submission, STARTTLS (default 5870)"
    )
    parser.add_argument("--smtps-port", type=int, metavar="N", help="submission, implicit TLS (default 4650)")
    parser.add_argument("--imap-port", type=int, metavar="N", help="IMAP, STARTTLS (default 1430; 0: off)")
    parser.add_argument(
        "--imaps-port", type=int, metavar="N", help="IMAP, implicit TLS (default 9930; 0: off)"
    )
    parser.add_argument("--hostname", metavar="NAME", help="this server's name (default: the FQDN)")
    dns = parser.add_mutually_exclusive_group()
    dns.add_argument("--dns-zone", metavar="FILE", help="answer DNS queries from this BIND master file")
    dns.add_argument("--nameserver", metavar="HOST[:PORT]", action="append", help="DNS server to ask")
    parser.add_argument("--log-level", default="info", choices=("debug", "info", "warning", "error"))
    # What the main process passes to the worker processes it starts (docs/smtp.md, worker processes).
    parser.add_argument("--worker-sockets", help=argparse.SUPPRESS)
    parser.add_argument("--worker-of", type=int, help=argparse.SUPPRESS)
    parser.set_defaults(func=run)


_PASSED_ON = (
    "config",
    "data_dir",
    "rules",
    "smtp_port",
    "submission_port",
    "smtps_port",
    "imap_port",
    "imaps_port",
    "hostname",
)


def worker_command(args: argparse.Namespace) -> list[str]:
    """The command line of a worker process: this one's options, so that it reads the same
    configuration. Listening ports go too, though the worker binds nothing: they are part of what it
    prints and logs."""
    command = [sys.executable, "-m", "mailtoaster", "serve", "--log-level", args.log_level]
    for name in _PASSED_ON:
        value = getattr(args, name)
        if value is not None:
            command += [f"--{name.replace('_', '-')}", str(value)]
    for name in ("bind", "nameserver"):
        for value in getattr(args, name) or ():
            command += [f"--{name}", value]
    if args.dns_zone is not None:
        command += ["--dns-zone", args.dns_zone]
    return command


def config_from_args(args: argparse.Namespace) -> Config:
    try:
        config = load_config(args.config)
    except ConfigError as error:
        raise CliError(str(error)) from error
    config = with_overrides(
        config,
        "server",
        data_dir=args.data_dir,
        bind=tuple(args.bind) if args.bind else None,
        smtp_port=args.smtp_port,
        submission_port=args.submission_port,
        smtps_port=args.smtps_port,
        hostname=args.hostname,
    )
    config = with_overrides(config, "rules", file=args.rules)
    for name in ("imap_port", "imaps_port"):
        port = getattr(args, name)
        if port is not None and not 0 <= port <= 65535:
            raise CliError(f"--{name.replace('_', '-')} {port} is not a port number")
    config = with_overrides(config, "imap", imap_port=args.imap_port, imaps_port=args.imaps_port)
    nameservers = tuple(args.nameserver) if args.nameserver else None
    config = with_overrides(config, "dns", zone_file=args.dns_zone, nameservers=nameservers)
    for name in ("smtp_port", "submission_port", "smtps_port"):
        port = getattr(config.server, name)
        if not 0 <= port <= 65535:
            raise CliError(f"--{name.replace('_', '-')} {port} is not a port number")
    return config


def run(args: argparse.Namespace) -> int:
    config = config_from_args(args)
    logging.basicConfig(
        level=args.log_level.upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.log_level != "debug":
        # aiosmtpd logs a dozen INFO lines per message (every command); ours is one line per
        # transaction with the verdicts in it, which is the one a postmaster greps.
        logging.getLogger("mail.log").setLevel(logging.WARNING)
    return asyncio.run(_serve(config, args))


async def _serve(config: Config, args: argparse.Namespace) -> int:
    from mailtoaster.server import StartupError
    from mailtoaster.server.workers import run_main, run_worker

    try:
        if args.worker_sockets is not None and args.worker_of is not None:
            return await run_worker(config, args.worker_sockets, args.worker_of)
        return await run_main(
            config, worker_command(args), lambda server: print(server.welcome(), flush=True)
        )
    except StartupError as error:
        raise CliError(str(error)) from error
