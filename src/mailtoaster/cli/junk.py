"""``mailtoaster junk sweep``: the nightly cron job that learns every user's old Junk as spam.

The logic is :mod:`mailtoaster.spam.sweep`; this module parses the options, asks the directory for the
users and their Maildirs, wires the learner to the spam filter and prints the summary.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailtoaster.cli.common import CliError
from mailtoaster.cli.spam import add_store_options, spam_setup
from mailtoaster.config import ConfigError, SpamSettings, parse_duration
from mailtoaster.spam.filter import LearnOutcome
from mailtoaster.spam.location import open_filter
from mailtoaster.spam.store import Label, TokenStoreUnavailable
from mailtoaster.spam.sweep import (
    INBOX,
    Counts,
    Learner,
    SweepOptions,
    SweepReport,
    UserSweep,
    sweep,
)
from mailtoaster.store import (
    DIRECTORY_FILE,
    JUNK_FOLDER,
    Directory,
    DirectoryError,
    FolderNameError,
    folder_directory_name,
)

DEFAULT_OLDER_THAN = "5d"
DEFAULT_HAM_OLDER_THAN = "30d"
EXIT_ERRORS = 1
"""Some messages could not be read, learned or deleted (listed on standard error)."""
EXIT_TEMPFAIL = 75
"""EX_TEMPFAIL: the token store is unavailable; run again later."""


def register(subparsers: Any) -> None:
    parser: argparse.ArgumentParser = subparsers.add_parser(
        "junk",
        help="learn from the users' Junk folders (the nightly sweep)",
        description="Work on every user's Junk folder.",
    )
    actions = parser.add_subparsers(dest="junk_action", metavar="ACTION", required=True)
    command: argparse.ArgumentParser = actions.add_parser(
        "sweep",
        help="learn old Junk mail as spam (and delete it), optionally old INBOX mail as ham",
        description="For every user of every domain: learn the messages in the Junk folder and its "
        "subfolders whose files are older than --older-than as spam for that user, and delete them "
        "with --delete. With --learn-ham-from, learn messages older than --ham-older-than in that "
        "folder as ham. Meant for cron or a systemd timer; exits 1 when some messages failed, 75 when "
        "the token store is unavailable.",
    )
    add_store_options(command)
    command.add_argument(
        "--older-than",
        metavar="AGE",
        default=DEFAULT_OLDER_THAN,
        help=f"learn Junk messages at least this old: 30m, 12h, 5d (default {DEFAULT_OLDER_THAN})",
    )
    command.add_argument("--delete", action="store_true", help="delete the Junk messages once learned")
    command.add_argument(
        "--junk-folder",
        metavar="NAME",
        default=JUNK_FOLDER,
        help=f"the folder holding spam; its subfolders count too (default {JUNK_FOLDER})",
    )
    command.add_argument(
        "--learn-ham-from",
        metavar="FOLDER",
        help=f"also learn old messages in this folder as ham ({INBOX}, or a folder name); never deleted",
    )
    command.add_argument(
        "--ham-older-than",
        metavar="AGE",
        help=f"the age for --learn-ham-from (default {DEFAULT_HAM_OLDER_THAN})",
    )
    command.add_argument("--dry-run", action="store_true", help="count what would be done; change nothing")
    command.add_argument("--json", action="store_true", help="print the summary as JSON")
    command.set_defaults(func=run_sweep)


def run_sweep(args: argparse.Namespace) -> int:
    options = sweep_options(args)
    setup = spam_setup(args)
    with open_directory(setup.data_dir) as directory:
        try:
            users = directory.list_users()
        except DirectoryError as exc:
            raise CliError(str(exc)) from exc
    if options.dry_run:
        report = sweep(users, _never_learn, options)
    else:
        try:
            with open_learner(setup.data_dir, setup.settings) as learn:
                report = sweep(users, learn, options)
        except TokenStoreUnavailable as exc:
            print(f"mailtoaster junk: error: {exc}; nothing was swept, run it again", file=sys.stderr)
            return EXIT_TEMPFAIL
    print_report(report, options, as_json=args.json)
    for user in report.users:
        for problem in user.problems:
            print(f"mailtoaster junk: {user.user}: {problem}", file=sys.stderr)
    if report.aborted is not None:
        print(f"mailtoaster junk: error: {report.aborted}; sweep stopped, run it again", file=sys.stderr)
        return EXIT_TEMPFAIL
    return EXIT_ERRORS if report.errors else 0


def sweep_options(args: argparse.Namespace) -> SweepOptions:
    """The options, checked: durations parsed, ham options only together, Junk never learned as ham."""
    if args.ham_older_than is not None and args.learn_ham_from is None:
        raise CliError("--ham-older-than needs --learn-ham-from FOLDER")
    ham_folder = args.learn_ham_from
    if args.junk_folder.upper() == INBOX:
        raise CliError("--junk-folder INBOX: the inbox is not a spam folder")
    _check_folder(args.junk_folder, "--junk-folder")
    if ham_folder is not None:
        _check_folder(ham_folder, "--learn-ham-from")
        junk = args.junk_folder.lower()
        if ham_folder.lower() == junk or ham_folder.lower().startswith(junk + "."):
            raise CliError(f"--learn-ham-from {ham_folder}: the Junk folder holds spam, not ham")
    return SweepOptions(
        older_than=_duration(args.older_than, "--older-than"),
        delete=args.delete,
        junk_folder=args.junk_folder,
        ham_folder=ham_folder,
        ham_older_than=(
            _duration(args.ham_older_than or DEFAULT_HAM_OLDER_THAN, "--ham-older-than")
            if ham_folder is not None
            else None
        ),
        dry_run=args.dry_run,
    )


def _check_folder(name: str, option: str) -> None:
    """Refuse a folder name the store could not have made (``INBOX.Junk``, ``a..b``) once, here,
    rather than as an error for every user."""
    if name.upper() == INBOX:
        return
    try:
        folder_directory_name(name)
    except FolderNameError as exc:
        raise CliError(f"{option}: {exc}") from exc


def _duration(text: str, option: str) -> float:
    try:
        return parse_duration(text, option)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


@contextmanager
def open_directory(data_dir: Path) -> Iterator[Directory]:
    """The existing directory of ``data_dir``: a sweep never creates one (a wrong --data-dir would
    otherwise sweep an empty new directory and report success)."""
    path = data_dir / DIRECTORY_FILE
    if not path.is_file():
        raise CliError(f"no directory at {path} (is --data-dir {data_dir} the server's data directory?)")
    try:
        directory = Directory.open(path)
    except DirectoryError as exc:
        raise CliError(str(exc)) from exc
    try:
        yield directory
    finally:
        directory.close()


@contextmanager
def open_learner(data_dir: Path, settings: SpamSettings) -> Iterator[Learner]:
    """The spam filter the server uses (``[spam] store``, by default in ``data_dir``), as the sweep's
    learner (raises TokenStoreUnavailable).

    One store commit per message, not batches: a message is deleted only after its learning is
    committed, so a crash can never lose a message that was not learned."""
    spam_filter = open_filter(settings, data_dir)
    try:
        yield spam_filter.learn
    finally:
        spam_filter.close()


def _never_learn(data: bytes, label: Label, user: str) -> LearnOutcome:
    raise AssertionError("a dry run learns nothing")


# -- output ---------------------------------------------------------------------------------------


def print_report(report: SweepReport, options: SweepOptions, *, as_json: bool) -> None:
    if as_json:
        print(json.dumps(report_json(report, options), indent=2))
        return
    ham = options.ham_folder is not None
    for user in report.users:
        if user.busy or user.problems:
            print(_line(user.user, user.spam, user.ham, report.dry_run, ham))
    count = len(report.users)
    swept = f"total ({count} user{'' if count == 1 else 's'})"
    print(_line(swept, report.total("spam"), report.total("ham"), report.dry_run, ham))


def _line(who: str, spam: Counts, ham: Counts, dry_run: bool, with_ham: bool) -> str:
    text = f"{who}: spam {_counts(spam, dry_run)}"
    if with_ham:
        text += f"; ham {_counts(ham, dry_run)}"
    return text


def _counts(counts: Counts, dry_run: bool) -> str:
    if dry_run:
        return f"would learn {counts.found}, would delete {counts.deleted}"
    return (
        f"{counts.found} old, {counts.learned} learned, {counts.already_known} already known, "
        f"{counts.moved} moved, {counts.deleted} deleted, {counts.errors} errors"
    )


def report_json(report: SweepReport, options: SweepOptions) -> dict[str, object]:
    return {
        "dry_run": report.dry_run,
        "older_than_seconds": options.older_than,
        "delete": options.delete,
        "junk_folder": options.junk_folder,
        "ham_folder": options.ham_folder,
        "ham_older_than_seconds": options.ham_older_than,
        "users": [_user_json(user) for user in report.users],
        "total": {"spam": report.total("spam").as_dict(), "ham": report.total("ham").as_dict()},
        "aborted": report.aborted,
    }


def _user_json(user: UserSweep) -> dict[str, object]:
    return {
        "user": user.user,
        "spam": user.spam.as_dict(),
        "ham": user.ham.as_dict(),
        "problems": user.problems,
    }
