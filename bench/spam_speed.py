"""Issue 5's speed figures: how fast mailtoaster's spam filter learns and scores, on one core.

    nice -n 19 .venv/bin/python bench/spam_speed.py [--no-peers] [--score-limit N] [--workdir DIR]

Every message of the SpamAssassin public corpus (bench/spamcorpus.py, 6046 messages) is learned into a
fresh SQLite token store twice: once with :meth:`SpamFilter.learn_many` (one transaction per 500
messages, as ``mailtoaster learn`` over a folder or mbox does), and once into another fresh store with
:meth:`SpamFilter.learn`, one message and one transaction at a time (what the nightly Junk sweep and a
single ``mailtoaster learn FILE`` cost per message). Every message is scored with :meth:`SpamFilter.score`
against the batch-learned store (right after learning it, before the one-at-a-time run), one after the
other in this one thread, in :data:`SCORE_PASSES` passes, each on a new connection to the store, so
each pays for reading the store's image on its first message (as a server does once per fold of the
journal): the first pass builds it from the database and writes it to its file, the others load the
file (as a server's other processes, a restarted server or ``mailtoaster score`` do).
Printed: messages per second by the wall clock and by the process's CPU time
(on a machine shared with other work the CPU rate is the one that says what a core can do), the token
database's size on disk, the process's peak resident set size, and the CPU time of one message scored
on a new connection, most of which is reading the image: built from the database, and loaded from its
file. Scoring is judged on its best pass, as
:mod:`timeit` judges: other work on the machine only ever makes a pass slower (on the virtual machines
this was measured on, by up to a third from one minute to the next), and every pass is printed.
Targets: scoring at least 1,000 messages/s, learning at least 500.

When bench/spampeers.py is there, its ``peer_speeds`` measures bogofilter and SpamAssassin on the same
messages and they are printed alongside. Benchmarks print; they never assert.
"""

from __future__ import annotations

import argparse
import importlib
import resource
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import islice
from pathlib import Path

from mailtoaster.spam import SpamFilter, SqliteTokenStore
from spamcorpus import CorpusMessage, load_corpus

BATCH = 500
SCORE_PASSES = 3
SCORE_TARGET = 1000.0
LEARN_TARGET = 500.0


@dataclass(frozen=True)
class Timing:
    count: int
    wall: float
    cpu: float

    @property
    def per_second(self) -> float:
        return self.count / self.wall if self.wall else 0.0

    @property
    def per_cpu_second(self) -> float:
        return self.count / self.cpu if self.cpu else 0.0


def _timed(work: object, count: int) -> Timing:
    wall, cpu = time.perf_counter(), time.process_time()
    assert callable(work)
    work()
    return Timing(count, time.perf_counter() - wall, time.process_time() - cpu)


def learn_all(spam_filter: SpamFilter, messages: Sequence[CorpusMessage]) -> None:
    for label in ("spam", "ham"):
        stream = iter([message.data for message in messages if message.label == label])
        while True:
            done = sum(1 for _outcome in spam_filter.learn_many(islice(stream, BATCH), label))
            if not done:
                break


def learn_one_by_one(spam_filter: SpamFilter, messages: Sequence[CorpusMessage]) -> None:
    for message in messages:
        spam_filter.learn(message.data, message.label)


def score_all(spam_filter: SpamFilter, messages: Sequence[CorpusMessage]) -> None:
    for message in messages:
        spam_filter.score(message.data)


def score_on_new_connection(path: Path, messages: Sequence[CorpusMessage]) -> None:
    """Score the messages on a new connection: the first one reads the store's image."""
    store = SqliteTokenStore(path)
    try:
        score_all(SpamFilter(store), messages)
    finally:
        store.close()


def peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def measure(messages: Sequence[CorpusMessage], workdir: Path, score_limit: int | None) -> list[str]:
    path = workdir / "mailtoaster" / "tokens.sqlite"
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in [*path.parent.glob("tokens.sqlite*"), *path.parent.glob("single.sqlite*")]:
        stale.unlink()
    store = SqliteTokenStore(path)
    spam_filter = SpamFilter(store)
    try:
        learned = _timed(lambda: learn_all(spam_filter, messages), len(messages))
        learn_rss = peak_rss_bytes()
        scored_messages = list(messages)
        if score_limit is not None and score_limit < len(scored_messages):
            step = len(scored_messages) / score_limit
            scored_messages = [scored_messages[int(index * step)] for index in range(score_limit)]
        passes = [
            _timed(lambda: score_on_new_connection(path, scored_messages), len(scored_messages))
            for _pass in range(SCORE_PASSES)
        ]
        scored = max(passes, key=lambda timing: timing.per_cpu_second)
        score_rss = peak_rss_bytes()
        loaded = _timed(lambda: score_on_new_connection(path, scored_messages[:1]), 1)
        for image_file in path.parent.glob(f"{path.name}-image-*"):
            image_file.unlink()
        built = _timed(lambda: score_on_new_connection(path, scored_messages[:1]), 1)
        stats = store.stats()
    finally:
        store.close()
    single_store = SqliteTokenStore(path.with_name("single.sqlite"))
    try:
        single = _timed(lambda: learn_one_by_one(SpamFilter(single_store), messages), len(messages))
    finally:
        single_store.close()
    megabytes = stats.size_bytes / 1e6
    return [
        "== mailtoaster (one thread, SQLite WAL token store)",
        f"  learning: {learned.count} messages in {learned.wall:.1f} s wall, {learned.cpu:.1f} s CPU: "
        f"{learned.per_second:.0f}/s wall, {learned.per_cpu_second:.0f}/s per CPU second "
        f"(target {LEARN_TARGET:.0f}: {_hit(learned, LEARN_TARGET)}; learn_many, 500 per transaction)",
        f"  learning one at a time: {single.wall:.1f} s wall, {single.cpu:.1f} s CPU: "
        f"{single.per_second:.0f}/s wall, {single.per_cpu_second:.0f}/s per CPU second "
        f"(target {LEARN_TARGET:.0f}: {_hit(single, LEARN_TARGET)}; learn, one transaction per message)",
        f"  scoring:  {scored.count} messages in {scored.wall:.1f} s wall, {scored.cpu:.1f} s CPU: "
        f"{scored.per_second:.0f}/s wall, {scored.per_cpu_second:.0f}/s per CPU second "
        f"(target {SCORE_TARGET:.0f}: {_hit(scored, SCORE_TARGET)}; the best of {SCORE_PASSES} passes, "
        f"each on a new connection: {', '.join(f'{timing.per_cpu_second:.0f}' for timing in passes)}/s "
        f"per CPU second); the first message a connection scores reads the store's image: "
        f"{built.cpu:.2f} s CPU for one message on a new connection when it builds the image from the "
        f"database, {loaded.cpu:.2f} s when it loads the image's file",
        f"  token database: {megabytes:.1f} MB, {stats.tokens} tokens, "
        f"{stats.totals.spam} spam + {stats.totals.ham} ham learned",
        f"  peak RSS: {learn_rss / 1e6:.0f} MB after learning, {score_rss / 1e6:.0f} MB after scoring",
    ]


def _hit(timing: Timing, target: float) -> str:
    return "met" if timing.per_cpu_second >= target else "not met"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-peers", action="store_true", help="mailtoaster only")
    parser.add_argument("--score-limit", type=int, help="score an evenly spaced N of the messages")
    parser.add_argument("--workdir", type=Path, help="where the stores go (default: a temporary directory)")
    args = parser.parse_args(argv)
    messages = load_corpus()
    with tempfile.TemporaryDirectory(prefix="spam-speed-") as scratch:
        workdir = args.workdir or Path(scratch)
        print("\n".join(measure(messages, workdir, args.score_limit)))
        if args.no_peers:
            return 0
        try:
            peers = importlib.import_module("spampeers")
        except ModuleNotFoundError:
            print("(bench/spampeers.py is not there: mailtoaster alone)")
            return 0
        speeds = peers.peer_speeds(messages, workdir / "peers", score_limit=args.score_limit)
        formatter = getattr(peers, "format_speeds", None)
        if callable(formatter):
            print(formatter(speeds))
        else:
            for speed in speeds:
                print(speed)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
