"""The ``mailtoaster`` command. Thin: parse arguments, call the packages, print.

Each subcommand lives in its own module with ``register(subparsers)``, which adds its parser and
sets ``func`` to a function taking the parsed arguments and returning the exit code.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from mailtoaster import __version__
from mailtoaster.cli import (
    check,
    directory,
    dns_records,
    junk,
    keygen,
    queue,
    selftest,
    serve,
    sign,
    spam,
    verify,
)
from mailtoaster.cli.common import EXIT_USAGE, CliError

EXIT_INTERNAL = 70  # EX_SOFTWARE from sysexits.h

SUBCOMMANDS = (verify, sign, keygen, dns_records, check, serve, directory, queue, junk, spam, selftest)


class _ArgumentParser(argparse.ArgumentParser):
    """argparse with the project's error format: one line and exit 2, not the usage text first.

    Subcommand parsers are made with the class of their parent, so all of them behave alike.
    """

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(
        prog="mailtoaster",
        description="A complete mail server for a small organisation.",
    )
    parser.add_argument("--version", action="version", version=f"mailtoaster {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except CliError as exc:
        print(f"mailtoaster {args.command}: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except Exception as exc:
        if os.environ.get("MAILTOASTER_DEBUG"):
            raise
        print(
            f"mailtoaster {args.command}: internal error: {type(exc).__name__}: {exc} "
            "(set MAILTOASTER_DEBUG=1 for the traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL
