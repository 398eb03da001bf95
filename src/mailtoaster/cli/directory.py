"""``mailtoaster domain|user|alias``: manage the directory (vpopmail's vadddomain, vadduser, valias).

Passwords are read from a prompt (asked twice) or, with ``--password-stdin``, from the first line of
standard input; never from an argument, which any user could read in ``ps``.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from mailtoaster.cli.common import CliError, read_password
from mailtoaster.store import (
    DIRECTORY_FILE,
    UNSET,
    Alias,
    Directory,
    DirectoryError,
    Maildir,
    MaildirError,
    Unset,
    User,
    parse_account,
)

DEFAULT_DATA_DIR = Path("var")
DEFAULT_THRESHOLD_WORD = "default"

Handler = Callable[[Directory, argparse.Namespace], None]


def register(subparsers: argparse._SubParsersAction[Any]) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--data-dir",
        metavar="DIR",
        default=str(DEFAULT_DATA_DIR),
        help=f"the data directory holding {DIRECTORY_FILE} and mail/ (default ./{DEFAULT_DATA_DIR})",
    )
    _register_domain(subparsers, common)
    _register_user(subparsers, common)
    _register_alias(subparsers, common)


def _actions(subparsers: argparse._SubParsersAction[Any], name: str, help_text: str) -> Any:
    parser = subparsers.add_parser(name, help=help_text, description=help_text)
    return parser.add_subparsers(dest="action", metavar="ACTION", required=True)


def _action(
    actions: Any, name: str, help_text: str, common: argparse.ArgumentParser, handler: Handler
) -> argparse.ArgumentParser:
    parser: argparse.ArgumentParser = actions.add_parser(
        name, help=help_text, description=help_text, parents=[common]
    )
    parser.set_defaults(func=lambda args: _run(args, handler))
    return parser


def _register_domain(subparsers: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    actions = _actions(subparsers, "domain", "add, list and remove local mail domains")
    add = _action(actions, "add", "add a local domain", common, _domain_add)
    add.add_argument("name", metavar="NAME", help="the domain, e.g. example.com (IDNA names accepted)")
    _add_threshold_option(add)
    _action(actions, "list", "list the local domains", common, _domain_list)
    remove = _action(
        actions, "del", "remove a domain and its aliases (its mail stays on disk)", common, _domain_del
    )
    remove.add_argument("name", metavar="NAME")
    remove.add_argument("--force", action="store_true", help="remove it even though it still has users")
    change = _action(actions, "set", "change a domain's settings", common, _domain_set)
    change.add_argument("name", metavar="NAME")
    _add_threshold_option(change)


def _register_user(subparsers: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    actions = _actions(subparsers, "user", "add, list and remove mailboxes, change passwords")
    add = _action(actions, "add", "add a user and create the Maildir", common, _user_add)
    add.add_argument("address", metavar="ADDRESS")
    _add_password_option(add)
    _add_user_settings(add)
    passwd = _action(actions, "passwd", "change a user's password", common, _user_passwd)
    passwd.add_argument("address", metavar="ADDRESS")
    _add_password_option(passwd)
    listing = _action(actions, "list", "list users, of one domain or all", common, _user_list)
    listing.add_argument("domain", metavar="DOMAIN", nargs="?")
    remove = _action(actions, "del", "remove a user (the Maildir stays on disk)", common, _user_del)
    remove.add_argument("address", metavar="ADDRESS")
    change = _action(actions, "set", "change a user's quarantine or spam threshold", common, _user_set)
    change.add_argument("address", metavar="ADDRESS")
    _add_user_settings(change)


def _register_alias(subparsers: argparse._SubParsersAction[Any], common: argparse.ArgumentParser) -> None:
    actions = _actions(subparsers, "alias", "forward addresses (and @domain catch-alls) elsewhere")
    add = _action(
        actions, "add", "forward SOURCE to DEST (added to existing destinations)", common, _alias_add
    )
    add.add_argument("source", metavar="SOURCE", help="local@domain, or @domain for the catch-all")
    add.add_argument("destinations", metavar="DEST", nargs="+", help="local or external addresses")
    listing = _action(actions, "list", "list aliases, of one domain or all", common, _alias_list)
    listing.add_argument("domain", metavar="DOMAIN", nargs="?")
    remove = _action(actions, "del", "remove an alias, or only some of its destinations", common, _alias_del)
    remove.add_argument("source", metavar="SOURCE")
    remove.add_argument("destinations", metavar="DEST", nargs="*")


def _add_threshold_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spam-threshold",
        metavar="N",
        help=f"spam score from which mail counts as spam; '{DEFAULT_THRESHOLD_WORD}' to inherit",
    )


def _add_user_settings(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--quarantine",
        choices=["on", "off"],
        help="spam into the Junk folder (on, the default for new users) or the inbox (off)",
    )
    _add_threshold_option(parser)


def _add_password_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--password-stdin",
        action="store_true",
        help="read the password from the first line of standard input instead of prompting",
    )


def _run(args: argparse.Namespace, handler: Handler) -> int:
    with _store_errors():
        directory = Directory.open(Path(args.data_dir) / DIRECTORY_FILE)
    try:
        with _store_errors():
            handler(directory, args)
    finally:
        directory.close()
    return 0


@contextmanager
def _store_errors() -> Iterator[None]:
    try:
        yield
    except (DirectoryError, MaildirError) as exc:
        raise CliError(str(exc)) from exc


def _domain_add(directory: Directory, args: argparse.Namespace) -> None:
    threshold = _parse_threshold(args.spam_threshold)
    domain = directory.add_domain(args.name, spam_threshold=None if threshold is UNSET else threshold)
    print(f"added domain {domain.name}")


def _domain_list(directory: Directory, args: argparse.Namespace) -> None:
    for domain in directory.list_domains():
        users = len(directory.list_users(domain.name))
        print(f"{domain.name}\tusers={users}\tspam-threshold={_threshold_text(domain.spam_threshold)}")


def _domain_del(directory: Directory, args: argparse.Namespace) -> None:
    domain = directory.get_domain(args.name)
    directory.remove_domain(args.name, force=args.force)
    name = domain.name if domain is not None else args.name
    print(f"removed domain {name}; its mail, if any, stays in {directory.mail_root / name}")


def _domain_set(directory: Directory, args: argparse.Namespace) -> None:
    threshold = _parse_threshold(args.spam_threshold)
    if threshold is UNSET:
        raise CliError("nothing to change: give --spam-threshold")
    domain = directory.set_domain_settings(args.name, spam_threshold=threshold)
    print(f"{domain.name}: spam-threshold={_threshold_text(domain.spam_threshold)}")


def _user_add(directory: Directory, args: argparse.Namespace) -> None:
    account = parse_account(args.address)
    if not directory.is_local_domain(account.domain):
        raise CliError(f"{account.domain} is not a local domain: add the domain first")
    if directory.get_user(args.address) is not None:
        raise CliError(f"user {account} exists already")
    password = read_password(args.password_stdin, confirm=True)
    threshold = _parse_threshold(args.spam_threshold)
    user = directory.add_user(
        args.address,
        password,
        quarantine=args.quarantine != "off",
        spam_threshold=None if threshold is UNSET else threshold,
    )
    Maildir(user.maildir).ensure()
    print(f"added user {user.email}, Maildir {user.maildir}")


def _user_passwd(directory: Directory, args: argparse.Namespace) -> None:
    if directory.get_user(args.address) is None:
        raise CliError(f"no user {args.address}")
    directory.set_password(args.address, read_password(args.password_stdin, confirm=True))
    print(f"password of {args.address} changed")


def _user_list(directory: Directory, args: argparse.Namespace) -> None:
    for user in directory.list_users(args.domain):
        print(_user_line(user))


def _user_del(directory: Directory, args: argparse.Namespace) -> None:
    user = directory.get_user(args.address)
    directory.remove_user(args.address)
    if user is not None:
        print(f"removed user {user.email}; the Maildir stays in {user.maildir}")


def _user_set(directory: Directory, args: argparse.Namespace) -> None:
    threshold = _parse_threshold(args.spam_threshold)
    if args.quarantine is None and threshold is UNSET:
        raise CliError("nothing to change: give --quarantine and/or --spam-threshold")
    quarantine = UNSET if args.quarantine is None else args.quarantine == "on"
    print(
        _user_line(directory.set_user_settings(args.address, quarantine=quarantine, spam_threshold=threshold))
    )


def _alias_add(directory: Directory, args: argparse.Namespace) -> None:
    print(_alias_line(directory.add_alias(args.source, args.destinations)))


def _alias_list(directory: Directory, args: argparse.Namespace) -> None:
    for alias in directory.list_aliases(args.domain):
        print(_alias_line(alias))


def _alias_del(directory: Directory, args: argparse.Namespace) -> None:
    directory.remove_alias(args.source, args.destinations or None)
    remaining = directory.get_alias(args.source)
    print(_alias_line(remaining) if remaining is not None else f"removed alias {args.source}")


def _user_line(user: User) -> str:
    quarantine = "on" if user.quarantine else "off"
    return f"{user.email}\tquarantine={quarantine}\tspam-threshold={_threshold_text(user.spam_threshold)}"


def _alias_line(alias: Alias) -> str:
    return f"{alias.source} -> {', '.join(alias.destinations)}"


def _threshold_text(threshold: float | None) -> str:
    return DEFAULT_THRESHOLD_WORD if threshold is None else f"{threshold:g}"


def _parse_threshold(text: str | None) -> float | Unset | None:
    """The ``--spam-threshold`` value: UNSET when absent, None for 'default', else the number."""
    if text is None:
        return UNSET
    if text.lower() == DEFAULT_THRESHOLD_WORD:
        return None
    try:
        return float(text)
    except ValueError:
        raise CliError(
            f"--spam-threshold must be a number or '{DEFAULT_THRESHOLD_WORD}', not {text!r}"
        ) from None
