"""``mailtoaster learn``, ``mailtoaster score`` and ``mailtoaster spam stats``: the spam filter by hand.

``learn`` is ``sa-learn``: teach the filter messages (a file, a Maildir folder, an mbox) as spam or
ham, or make it forget them. ``score`` shows what the filter thinks of messages, ``spam stats`` what
it has learned. All work on the token store the server uses: the data directory's
``DIR/spam/tokens.sqlite``, or what ``[spam] store`` in the server's configuration file names (a Redis).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any, TextIO

from mailtoaster.cli.common import CliError
from mailtoaster.config import Config, ConfigError, SpamSettings, load_config
from mailtoaster.spam import LearnOutcome, SpamFilter, SpamScore, TokenStoreUnavailable
from mailtoaster.spam.location import describe, is_redis, open_filter, sqlite_path
from mailtoaster.spam.sources import MessageSourceError, UnreadableMessage, iter_messages
from mailtoaster.spam.store import Label

BATCH = 500
"""Messages learned per transaction: one commit per batch, not per message."""


def register(subparsers: Any) -> None:
    learn: argparse.ArgumentParser = subparsers.add_parser(
        "learn",
        help="teach the spam filter messages as spam or ham, or forget them (like sa-learn)",
        description="Learn messages as spam or ham, or forget them. Each PATH is a message file, a "
        "Maildir folder (its cur/ and new/), an mbox file, or a directory of message files. A message "
        "learned before as the other class moves over; learned as the same class, nothing changes.",
    )
    kind = learn.add_mutually_exclusive_group(required=True)
    kind.add_argument("--spam", dest="label", action="store_const", const="spam", help="learn as spam")
    kind.add_argument("--ham", dest="label", action="store_const", const="ham", help="learn as ham")
    kind.add_argument("--forget", dest="label", action="store_const", const="forget", help="forget them")
    learn.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    _common(learn)
    learn.set_defaults(func=run_learn)

    score: argparse.ArgumentParser = subparsers.add_parser(
        "score",
        help="show the spam score of messages",
        description="Score each message as the server would (without the authentication checks): "
        "the points, the verdict, the rules that hit and the most telling tokens.",
    )
    score.add_argument("paths", nargs="+", metavar="PATH", type=Path)
    score.add_argument("--json", action="store_true", help="one JSON object per message, one per line")
    score.add_argument("--tokens", type=int, default=8, metavar="N", help="telling tokens shown (default 8)")
    _common(score)
    score.set_defaults(func=run_score)

    spam: argparse.ArgumentParser = subparsers.add_parser(
        "spam", help="look after the spam filter", description="Look after the spam filter."
    )
    actions = spam.add_subparsers(dest="spam_action", metavar="ACTION", required=True)
    stats = actions.add_parser("stats", help="what the filter has learned, and its database size")
    stats.add_argument("--json", action="store_true", help="print JSON instead of text")
    _common(stats, user=False)
    stats.set_defaults(func=run_stats)


def _common(parser: argparse.ArgumentParser, *, user: bool = True) -> None:
    add_store_options(parser)
    if user:
        parser.add_argument(
            "--user", metavar="ADDR", help="that user's own filter (learning also counts globally)"
        )


def add_store_options(parser: argparse._ActionsContainer) -> None:
    """``--config FILE`` and ``--data-dir DIR``: which filter, found as the server finds it."""
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the server's TOML configuration: its data directory and [spam] settings (the store, "
        "a Redis for instance; the threshold)",
    )
    parser.add_argument(
        "--data-dir",
        metavar="DIR",
        type=Path,
        help="the server's data directory, over the configuration's (default ./var); the filter is "
        "DIR/spam/tokens.sqlite unless [spam] store names another",
    )


@dataclass(frozen=True)
class SpamSetup:
    """Where the filter is, as ``--config`` and ``--data-dir`` say."""

    data_dir: Path
    settings: SpamSettings

    @property
    def where(self) -> str:
        return describe(self.settings.store, self.data_dir)

    def open(self, *, create: bool) -> SpamFilter:
        """The filter; without ``create`` a missing SQLite file is an empty store in memory (scoring
        and statistics never make a database as a side effect). Bad store: CliError."""
        try:
            return open_filter(self.settings, self.data_dir, create=create)
        except TokenStoreUnavailable as exc:
            raise CliError(str(exc)) from exc


def spam_setup(args: argparse.Namespace) -> SpamSetup:
    config = read_config(args.config)
    data_dir = args.data_dir if args.data_dir is not None else config.data_dir
    return SpamSetup(Path(data_dir), config.spam)


def read_config(path: str | None) -> Config:
    try:
        return load_config(path)
    except ConfigError as exc:
        raise CliError(str(exc)) from exc


def _check_paths(paths: Sequence[Path]) -> None:
    for path in paths:
        if not path.exists():
            raise CliError(f"{path}: no such file or directory")


# learn ----------------------------------------------------------------------------------------------


class Progress:
    """A one-line counter on standard error, only when it is a terminal (never in logs or pipes)."""

    def __init__(self, stream: TextIO = sys.stderr) -> None:
        self.stream = stream
        self.active = stream.isatty()
        self.shown = 0.0

    def update(self, done: int, counts: Counter[str], *, final: bool = False) -> None:
        if not self.active:
            return
        now = time.monotonic()
        if not final and now - self.shown < 0.1:
            return
        self.shown = now
        detail = ", ".join(f"{name} {count}" for name, count in counts.items())
        self.stream.write(f"\r{done} messages ({detail})\x1b[K")
        if final:
            self.stream.write("\n")
        self.stream.flush()


def run_learn(args: argparse.Namespace) -> int:
    _check_paths(args.paths)
    label: Label | None = None if args.label == "forget" else args.label
    counts: Counter[str] = Counter()
    unreadable: list[str] = []
    progress = Progress()
    spam_filter = spam_setup(args).open(create=True)
    done = 0
    try:
        messages = _messages(args.paths, unreadable)
        while True:  # one transaction per BATCH messages, read one at a time
            before = done
            for outcome in spam_filter.learn_many(islice(messages, BATCH), label, args.user):
                counts[outcome.value] += 1
                done += 1
                progress.update(done, counts)
            if done == before:
                break
        progress.update(done, counts, final=True)
    except TokenStoreUnavailable as exc:
        raise CliError(str(exc)) from exc
    finally:
        spam_filter.close()
    for line in unreadable:
        print(f"mailtoaster learn: unreadable: {line}", file=sys.stderr)
    print(learn_summary(counts, len(unreadable), label))
    return 0


def learn_summary(counts: Counter[str], unreadable: int, label: Label | None) -> str:
    """``learned 10, already learned 2, moved 1, unreadable 0`` (forget: forgotten / not learned)."""
    if label is None:
        shown = [LearnOutcome.FORGOTTEN, LearnOutcome.NOT_LEARNED]
    else:
        shown = [LearnOutcome.LEARNED, LearnOutcome.ALREADY, LearnOutcome.MOVED]
    parts = [f"{outcome.value} {counts[outcome.value]}" for outcome in shown]
    parts.append(f"unreadable {unreadable}")
    return ", ".join(parts)


def _messages(paths: Sequence[Path], unreadable: list[str]) -> Iterator[bytes]:
    def skip(problem: UnreadableMessage) -> None:
        unreadable.append(str(problem))

    for path in paths:
        try:
            for _name, data in iter_messages(path, on_unreadable=skip):
                yield data
        except MessageSourceError as exc:
            raise CliError(str(exc)) from exc


# score ----------------------------------------------------------------------------------------------


def run_score(args: argparse.Namespace) -> int:
    _check_paths(args.paths)
    spam_filter = spam_setup(args).open(create=False)
    try:
        first = True
        for path in args.paths:
            try:
                for name, data in iter_messages(path, on_unreadable=_report_unreadable):
                    score = spam_filter.score(data, args.user)
                    if args.json:
                        print(json.dumps(score_json(name, score, args.tokens), ensure_ascii=False))
                    else:
                        print(("" if first else "\n") + "\n".join(score_lines(name, score, args.tokens)))
                    first = False
            except MessageSourceError as exc:
                raise CliError(str(exc)) from exc
    except TokenStoreUnavailable as exc:
        raise CliError(str(exc)) from exc
    finally:
        spam_filter.close()
    return 0


def _report_unreadable(problem: UnreadableMessage) -> None:
    print(f"mailtoaster score: unreadable: {problem}", file=sys.stderr)


def score_lines(name: str, score: SpamScore, tokens: int) -> list[str]:
    bayes = "not enough learned" if score.bayes is None else f"{score.bayes:.4f}"
    lines = [
        f"{name}: {score.points:.1f} points, {score.verdict} (required {score.required:.1f})",
        "  tests:  " + (", ".join(f"{hit.name} {hit.points:+g}" for hit in score.hits) or "none"),
        f"  bayes:  {bayes}",
    ]
    for clue in score.telling[:tokens]:
        lines.append(f"  token:  {clue.probability:.3f}  {clue.token!r}  (spam {clue.spam}, ham {clue.ham})")
    return lines


def score_json(name: str, score: SpamScore, tokens: int) -> dict[str, object]:
    return {
        "path": name,
        "score": round(score.points, 3),
        "required": score.required,
        "verdict": score.verdict,
        "tests": score.tests,
        "hits": [{"name": hit.name, "points": hit.points} for hit in score.hits],
        "bayes": None if score.bayes is None else round(score.bayes, 6),
        "tokens": [
            {
                "token": clue.token,
                "probability": round(clue.probability, 4),
                "spam": clue.spam,
                "ham": clue.ham,
            }
            for clue in score.telling[:tokens]
        ],
    }


# spam stats -----------------------------------------------------------------------------------------


def run_stats(args: argparse.Namespace) -> int:
    setup = spam_setup(args)
    spam_filter = setup.open(create=False)
    try:
        stats = spam_filter.store.stats()
    except TokenStoreUnavailable as exc:
        raise CliError(str(exc)) from exc
    finally:
        spam_filter.close()
    location = setup.settings.store
    exists = is_redis(location) or sqlite_path(location, setup.data_dir).exists()
    if args.json:
        print(
            json.dumps(
                {
                    "database": setup.where,
                    "exists": exists,
                    "spam": stats.totals.spam,
                    "ham": stats.totals.ham,
                    "tokens": stats.tokens,
                    "users": stats.users,
                    "size_bytes": stats.size_bytes,
                },
                indent=2,
            )
        )
        return 0
    print(f"database:      {setup.where}" + ("" if exists else " (none yet: nothing learned)"))
    print(f"spam learned:  {stats.totals.spam}")
    print(f"ham learned:   {stats.totals.ham}")
    print(f"tokens:        {stats.tokens}")
    print(f"user filters:  {stats.users}")
    print(f"size:          {_size(stats.size_bytes)}")
    return 0


def _size(octets: int) -> str:
    if octets < 1024:
        return f"{octets} bytes"
    if octets < 1024 * 1024:
        return f"{octets / 1024:.1f} KiB"
    return f"{octets / 1024 / 1024:.1f} MiB"
