"""The nightly Junk sweep: learn what users left in Junk as spam, and optionally delete it.

The toaster's cron job did this with ``find ~/Maildir/.Junk/cur -mtime +4 | sa-learn --spam`` and
then ``-delete``: a message that has sat in Junk for days without its owner taking it out is spam by
the owner's own judgement, and learning it for that user trains the filter on exactly the mail that
got through the rules. Optionally, mail kept in INBOX for a long time is learned as ham (what the
user did *not* throw away), which keeps the filter balanced.

Here the Junk folder includes its Maildir++ subfolders (``.Junk.Whatever``, where some users file
spam by hand), both ``cur/`` and ``new/`` (a spam never opened stays in ``new/``), and age is the
file's modification time, as with ``find -mtime``: delivery sets it and IMAP flag changes (a rename)
keep it. Nothing else is touched: Trash, Sent and every other folder are left alone.

The learner is injected (``learn(data, label, user) -> LearnOutcome``, the spam filter's own
outcome), so this module does not run the classifier: the CLI wires it to the spam filter, tests to a
fake. A learner that raises :class:`~mailtoaster.spam.store.TokenStoreUnavailable` stops the sweep
(every later message would fail the same way, and nothing that was not learned is ever deleted); any
other error counts against that one message and the sweep goes on.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field, fields
from pathlib import Path

from mailtoaster.spam.filter import LearnOutcome
from mailtoaster.spam.sources import MessageSourceError, is_maildir, maildir_files
from mailtoaster.spam.store import Label, TokenStoreUnavailable
from mailtoaster.store import JUNK_FOLDER, FolderNameError, User, folder_directory_name

INBOX = "INBOX"


Learner = Callable[[bytes, Label, str], LearnOutcome]
"""``learn(raw message, label, user address)``, as :meth:`SpamFilter.learn
<mailtoaster.spam.filter.SpamFilter.learn>` does it."""

_COUNTED = {
    LearnOutcome.LEARNED: "learned",
    LearnOutcome.ALREADY: "already_known",
    LearnOutcome.MOVED: "moved",
}
"""The tally each outcome of learning adds to (a sweep never forgets, so the other outcomes never
come back from a learner; one that does is an error of that message)."""


@dataclass(frozen=True)
class SweepOptions:
    older_than: float
    """Seconds: Junk messages whose file is at least this old are learned (and deleted)."""
    delete: bool = False
    junk_folder: str = JUNK_FOLDER
    ham_folder: str | None = None
    """A folder to learn ham from (``INBOX``: the Maildir's own cur/ and new/), or None."""
    ham_older_than: float | None = None
    dry_run: bool = False
    """Count what would be done; read, learn and delete nothing."""


@dataclass
class Counts:
    """One user's (or the total) tally. ``found``: messages old enough. In a dry run only ``found`` and
    ``deleted`` (what would be deleted) are counted: nothing is read or learned."""

    found: int = 0
    learned: int = 0
    already_known: int = 0
    moved: int = 0
    deleted: int = 0
    errors: int = 0

    def add(self, other: Counts) -> None:
        for item in fields(self):
            setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))

    def count(self, outcome: LearnOutcome) -> None:
        name = _COUNTED.get(outcome)
        if name is None:
            raise ValueError(f"unexpected learn outcome {outcome.value!r}")
        setattr(self, name, getattr(self, name) + 1)

    def as_dict(self) -> dict[str, int]:
        return {item.name: getattr(self, item.name) for item in fields(self)}

    @property
    def busy(self) -> bool:
        return any(self.as_dict().values())


@dataclass
class UserSweep:
    user: str
    spam: Counts = field(default_factory=Counts)
    ham: Counts = field(default_factory=Counts)
    problems: list[str] = field(default_factory=list)
    """One line per error: which file, what went wrong."""

    @property
    def busy(self) -> bool:
        return self.spam.busy or self.ham.busy


@dataclass
class SweepReport:
    users: list[UserSweep]
    dry_run: bool
    aborted: str | None = None
    """Why the sweep stopped early (the token store became unavailable); the counts are up to there."""

    def total(self, kind: Label) -> Counts:
        """The sum over users of ``spam`` or ``ham``."""
        total = Counts()
        for user in self.users:
            total.add(getattr(user, kind))
        return total

    @property
    def errors(self) -> int:
        return self.total("spam").errors + self.total("ham").errors


def sweep(
    users: Iterable[User],
    learn: Learner,
    options: SweepOptions,
    *,
    clock: Callable[[], float] = time.time,
) -> SweepReport:
    """Sweep every user's Junk (and, if asked, learn their old INBOX mail as ham). Stops at the first
    :class:`TokenStoreUnavailable` (see ``SweepReport.aborted``); other errors are counted per user."""
    now = clock()
    report = SweepReport(users=[], dry_run=options.dry_run)
    for user in users:
        result = UserSweep(user.email)
        report.users.append(result)
        try:
            sweep_user(result, user.maildir, learn, options, now)
        except TokenStoreUnavailable as exc:
            report.aborted = str(exc)
            break
    return report


def sweep_user(result: UserSweep, maildir: Path, learn: Learner, options: SweepOptions, now: float) -> None:
    """One user's sweep into ``result``; ``maildir`` is the user's Maildir++ root, as the directory
    knows it. Raises :class:`TokenStoreUnavailable` from the learner, with ``result`` counted so far."""
    spam = _Pass("spam", now - options.older_than, learn, options.delete, options.dry_run, result)
    for folder in junk_folders(maildir, options.junk_folder, result):
        spam.folder(folder)
    if options.ham_folder is not None and options.ham_older_than is not None:
        ham_folder = _folder_path(maildir, options.ham_folder, result)
        if ham_folder is not None and is_maildir(ham_folder):
            # Ham is never deleted: it is the mail the user keeps.
            ham = _Pass("ham", now - options.ham_older_than, learn, False, options.dry_run, result)
            ham.folder(ham_folder)


def junk_folders(maildir: Path, junk_folder: str, result: UserSweep) -> list[Path]:
    """The Junk folder and its Maildir++ subfolders (``.Junk``, ``.Junk.Sub``...) that exist, sorted.
    Never the INBOX, and never a folder that merely starts with the same letters (``.JunkMail``)."""
    junk = _folder_path(maildir, junk_folder, result)
    if junk is None or junk == maildir:
        return []
    try:
        names = sorted(entry.name for entry in os.scandir(maildir) if entry.is_dir())
    except FileNotFoundError:
        return []
    except OSError as exc:
        _problem(result.spam, result, f"{maildir}: {exc.strerror or exc}")
        return []
    wanted = junk.name
    return [
        maildir / name
        for name in names
        if (name == wanted or name.startswith(wanted + ".")) and is_maildir(maildir / name)
    ]


def _folder_path(maildir: Path, name: str, result: UserSweep) -> Path | None:
    if name.upper() == INBOX:
        return maildir
    try:
        return maildir / folder_directory_name(name)
    except FolderNameError as exc:
        _problem(result.spam, result, str(exc))
        return None


@dataclass
class _Pass:
    """Learning one class for one user: what to learn, from when, and where the counts go."""

    label: Label
    cutoff: float
    learn: Learner
    delete: bool
    dry_run: bool
    result: UserSweep

    @property
    def counts(self) -> Counts:
        return self.result.spam if self.label == "spam" else self.result.ham

    def folder(self, folder: Path) -> None:
        try:
            for path in _old_files(folder, self.cutoff):
                self.counts.found += 1
                if self.dry_run:
                    self.counts.deleted += self.delete
                else:
                    self.message(path)
        except MessageSourceError as exc:
            _problem(self.counts, self.result, str(exc))

    def message(self, path: Path) -> None:
        counts, result = self.counts, self.result
        try:
            data = path.read_bytes()
        except FileNotFoundError:
            counts.found -= 1  # moved or expunged since it was listed: not ours to count
            return
        except OSError as exc:
            _problem(counts, result, f"{path}: {exc.strerror or exc}")
            return
        try:
            counts.count(self.learn(data, self.label, result.user))
        except TokenStoreUnavailable:
            raise
        except Exception as exc:
            _problem(counts, result, f"{path}: cannot learn: {type(exc).__name__}: {exc}")
            return
        if self.delete:
            self._delete(path)

    def _delete(self, path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return  # the user's client removed it meanwhile: gone either way
        except OSError as exc:
            _problem(self.counts, self.result, f"{path}: cannot delete: {exc.strerror or exc}")
            return
        self.counts.deleted += 1


def _old_files(folder: Path, cutoff: float) -> Iterator[Path]:
    """Message files of ``folder`` modified before ``cutoff``; files gone meanwhile are skipped (the
    user's IMAP client may move or expunge mail while the sweep runs)."""
    for path in maildir_files(folder):
        try:
            if os.stat(path).st_mtime < cutoff:
                yield path
        except FileNotFoundError:
            continue


def _problem(counts: Counts, result: UserSweep, text: str) -> None:
    counts.errors += 1
    result.problems.append(text)
