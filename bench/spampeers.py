"""The peers of issue 5's spam benchmarks: bogofilter and SpamAssassin, on the same messages as mailtoaster.

bench/spam_accuracy.py and bench/spam_speed.py import this module; run on its own it is a self-check that
prints the peers' figures alone (the accuracy on the fixed split; ``--speed`` adds the speed figures):

    nice -n 19 .venv/bin/python bench/spampeers.py [--speed | --speed-only] [--score-limit N]
        [--workdir DIR] [--no-install]

:func:`ensure_peers` installs Debian's bogofilter, spamassassin, spamd and spamc with apt-get when they are
missing and we are root. A peer whose programs are missing is skipped with one line saying so.

Nothing here reads or writes the machine's own state: every peer works under ``workdir/spampeers/``
(or, for spamd run as root, a private directory of its own, see below) with ``HOME`` pointed there; no
~/.bogofilter, ~/.spamassassin, /etc/bogofilter.cf or /etc/spamassassin/local.cf is read, and the empty
~/.spamassassin that sa-learn 4.x makes for its "global state" test files whatever HOME says is removed
again when it was not there before. Every message is written out once as a file of its own, without its
mbox ``From`` line (:func:`spamcorpus.without_from_line`), and each peer reads those same files. Writing
them is not counted in any peer's time.

bogofilter (``-C -d DIR``: no configuration file, its compiled-in defaults, a word list of its own)
    Learning: every training message registered once, ``bogofilter -s -b`` for the spam and ``-n -b`` for
    the ham (one process per class, the file names on standard input), then the word list's .MSG_COUNT is
    checked. Testing: one ``bogofilter -T -b`` process over the test files. The verdict is bogofilter's
    own: Spam at a spamicity of spam_cutoff (0.99) and more, Ham under ham_cutoff (0.45), Unsure in
    between; Unsure counts as not spam. The score is the spamicity.

SpamAssassin (4.x as Debian ships it)
    The rules the package installs (or sa-update's, where SpamAssassin finds them itself), the plugins that
    /etc/spamassassin/*.pre load (those .pre files are copied into a site configuration directory of our
    own), and our own local.cf instead of the machine's: ``required_score 5.0``, ``use_bayes 1``,
    ``bayes_auto_learn 0``, ``bayes_auto_expire 0`` (expiry would drop tokens by the corpus's 2002 dates),
    ``bayes_path`` in our directory, ``skip_rbl_checks 1``, ``dns_available no``, ``use_razor2 0``,
    ``use_pyzor 0``, ``use_dcc 0``, and every program run with ``-L`` (local tests only), so SpamAssassin
    scores with its score set 2 (Bayes, no network tests). ``spamassassin --lint`` must pass on it.
    Learning: ``sa-learn --spam DIR`` and ``sa-learn --ham DIR`` (one process per class over a directory
    of one file per message, ``--max-size 0`` so that no message is skipped for its size), then
    ``sa-learn --dump magic`` must show at least bayes_min_spam_num and bayes_min_ham_num (200) of each,
    or the run stops with an error: an untrained Bayes answers 0.5 for everything and would look like a
    result. sa-learn learns a message once (by Message-ID, and by a digest of To, Date and body): the
    corpus has 12 spam and 3 ham in the training set that repeat another one, which bogofilter learns
    twice and SpamAssassin once.
    Testing: ``spamd -L -x`` on 127.0.0.1 with one child (``-m 1``, the child never recycled), a copy of
    the trained database, and one ``spamc -x -R`` per test file, one after the other: the per-message
    start of ``spamassassin`` (seconds of Perl and rule compiling) would otherwise be what is measured.
    Run as root, spamd serves as ``nobody`` (it will not scan as root), so its configuration, database
    and helper home are copied into a private directory under the system's temporary directory that
    ``nobody`` can reach, removed afterwards.

    "SpamAssassin rules + Bayes": SpamAssassin's own verdict (``_YESNO_``: score >= required_score 5.0).
    The score is SpamAssassin's score.

    "SpamAssassin Bayes only": the same configuration and the same trained database, plus a file that
    sets ``score RULE 0`` for every rule but the BAYES_* ones (its __ sub-rules included; a zero score
    disables a rule), the rule names read from SpamAssassin's own parsed configuration. SpamAssassin has
    no verdict of Bayes alone (the BAYES_* scores top out at 4.0, under 5.0), so the verdict is the Bayes
    probability (the ``_BAYES_`` tag, 4 decimals) above :data:`BAYES_ONLY_CUTOFF` (0.5): whatever leans
    to spam. Exactly 0.5 is SpamAssassin's "no opinion" (it reports 0.5 when it cannot use Bayes on a
    message: too few tokens it knows), and counts as not spam, as bogofilter's Unsure does. (On the
    fixed split, the 6 ham an "at least 0.5" cut called spam were all such no-opinion answers, as were
    14 spam.) The number of no-opinion answers is printed. The score is that probability. Each
    message's probability must equal the one
    the rules + Bayes run reported for it (the same database, the same tokens): a difference is printed.

    Both SpamAssassin peers' seconds count the one sa-learn run they share, then their own spamd start
    and scan. Writing the configuration, the lint and reading the rule names are not counted.

Speed (:func:`peer_speeds`): each peer learns every message given (spam, then ham, as above) and then
scores them (or an evenly spaced ``score_limit`` of them) one stream at a time, as above: bogofilter in one
process, SpamAssassin through spamd + spamc, one spamc process per message (starting spamc from
Python costs a few milliseconds, a scan 50 to 200), spamd's start timed apart and not counted in the
rate. Rates are messages per wall-clock second, process starts included; the CPU time (user + system)
is printed beside them, since on a shared machine the wall time also holds other programs' turns:
for bogofilter and sa-learn their own (``wait4``), for scoring with spamd the CPU time spamd's
processes used over the scan (``/proc``) plus that of every spamc. The database size is the files of the word
list or Bayes database after learning (bogofilter's wordlist.db; SpamAssassin's bayes_toks and
bayes_seen). Peak RSS is the kernel's high-water mark: from ``wait4`` for bogofilter and sa-learn, and
the largest VmHWM of spamd's parent and child (``/proc``) for scoring; spamd's child shares most of its
pages with the parent it forked from, so this is one process's peak, not their sum.

Run it under ``nice -n 19`` on a shared machine: it is CPU-bound for minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import pwd
import re
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
if str(HERE) not in sys.path:
    sys.path.append(str(HERE))  # appended: bench/ must not shadow installed modules (bench/dkim.py, ...)

from spamcorpus import CorpusMessage, load_corpus, split, without_from_line  # noqa: E402

BOGOFILTER = "bogofilter"
SA_BAYES = "SpamAssassin Bayes only"
SA_RULES = "SpamAssassin rules + Bayes"

BAYES_ONLY_CUTOFF = 0.5
""""SpamAssassin Bayes only" calls a message spam when its Bayes probability is above this (exactly 0.5 is
SpamAssassin's answer when it cannot use Bayes on a message)."""

SPAMC_MAX_SIZE = 16 * 1024 * 1024
"""spamc's size limit (default 500 KB, above which it passes a message unscanned): larger than any message."""

SPAMD_START_SECONDS = 180.0
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
SITE_CONFIG_DIRS = (
    Path("/etc/spamassassin"),
    Path("/etc/mail/spamassassin"),
    Path("/usr/local/etc/mail/spamassassin"),
)

PACKAGES: dict[str, tuple[str, ...]] = {
    "bogofilter": ("bogofilter",),
    "spamassassin": ("spamassassin", "sa-learn"),
    "spamd": ("spamd",),
    "spamc": ("spamc",),
}
"""Debian package -> the programs of it that are used."""

Log = Callable[[str], None]


def _stderr(line: str) -> None:
    print(f"spampeers: {line}", file=sys.stderr, flush=True)


class PeerUnavailable(Exception):
    """A peer's programs are not installed: the peer is skipped, with one line saying so."""


class PeerError(RuntimeError):
    """A peer ran and failed, or did not learn: its figures would be wrong, so the run stops."""


@dataclass
class PeerResult:
    name: str
    """"bogofilter", "SpamAssassin Bayes only", "SpamAssassin rules + Bayes"."""
    false_positives: int
    """Ham called spam."""
    false_negatives: int
    """Spam not called spam."""
    ham: int
    """Ham in the test set."""
    spam: int
    scores: list[tuple[str, float]]
    """(label, the peer's own score) per test message, in the test set's order, for a histogram."""
    seconds: float
    """Wall time of the whole run of that peer (train + test)."""
    method: str = ""
    """One line: how the verdict and the score were had."""


@dataclass
class PeerSpeed:
    name: str
    method: str
    """One line: how learning and scoring were driven."""
    learned: int
    learn_seconds: float
    scored: int
    score_seconds: float
    startup_seconds: float
    """A server's start before scoring (spamd), not counted in score_seconds; 0 for bogofilter."""
    database_bytes: int
    learn_peak_rss: int
    """Bytes."""
    score_peak_rss: int
    """Bytes."""
    learn_cpu_seconds: float = 0.0
    """CPU time (user + system) of the learning processes."""
    score_cpu_seconds: float = 0.0
    """CPU time of the scoring: bogofilter's process; spamd's processes and every spamc process."""

    @property
    def learn_per_second(self) -> float:
        return self.learned / self.learn_seconds if self.learn_seconds > 0 else 0.0

    @property
    def score_per_second(self) -> float:
        return self.scored / self.score_seconds if self.score_seconds > 0 else 0.0

    @property
    def learn_per_cpu_second(self) -> float:
        return self.learned / self.learn_cpu_seconds if self.learn_cpu_seconds > 0 else 0.0

    @property
    def score_per_cpu_second(self) -> float:
        return self.scored / self.score_cpu_seconds if self.score_cpu_seconds > 0 else 0.0


# -- programs and packages ---------------------------------------------------------------------------


def _which(program: str) -> str | None:
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    return shutil.which(program, path=search)


def _missing_packages() -> list[str]:
    return [package for package, programs in PACKAGES.items() if any(_which(p) is None for p in programs)]


def ensure_peers(log: Log = _stderr) -> list[str]:
    """Installs bogofilter, spamassassin, spamd and spamc via apt-get when missing and root.

    Returns the Debian packages still missing afterwards (empty when every peer can run). On a machine
    with systemd, installing Debian's spamd package also enables and starts its own spamd service; the
    benchmark never uses that one (it runs its own spamd on another port).
    """
    missing = _missing_packages()
    if not missing:
        return []
    if os.geteuid() != 0 or _which("apt-get") is None:
        log(f"missing {', '.join(missing)}: as root, apt-get install {' '.join(missing)}")
        return missing
    log(f"installing {' '.join(missing)} with apt-get ...")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends"]

    def attempt(packages: list[str]) -> bool:
        done = subprocess.run([*install, *packages], env=env, capture_output=True, text=True, check=False)
        return done.returncode == 0

    if not attempt(missing):
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True, check=False)
        # Before Debian 12, spamd was part of the spamassassin package: no package of its own.
        if not attempt(missing) and "spamd" in missing:
            attempt([package for package in missing if package != "spamd"])
    still = _missing_packages()
    if still:
        log(f"apt-get could not install {', '.join(still)}")
    return still


# -- running programs --------------------------------------------------------------------------------


@dataclass
class _Ran:
    returncode: int
    seconds: float
    peak_rss: int
    stdout: str = ""
    stderr: str = ""
    cpu_seconds: float = 0.0


def _run(command: Sequence[str], *, env: Mapping[str, str], scratch: Path, stdin: bytes = b"") -> _Ran:
    """Runs one program to its end: wall time; its peak RSS and CPU time from wait4 (its own, not the
    children's of this process as a whole)."""
    scratch.mkdir(parents=True, exist_ok=True)
    stdin_path = scratch / "stdin"
    stdin_path.write_bytes(stdin)
    with (
        stdin_path.open("rb") as stdin_file,
        tempfile.TemporaryFile(dir=scratch) as stdout_file,
        tempfile.TemporaryFile(dir=scratch) as stderr_file,
    ):
        start = time.perf_counter()
        process = subprocess.Popen(
            list(command), stdin=stdin_file, stdout=stdout_file, stderr=stderr_file, env=dict(env)
        )
        _pid, status, usage = os.wait4(process.pid, 0)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        stdout_file.seek(0)
        stderr_file.seek(0)
        stdout = stdout_file.read().decode(errors="replace")
        stderr = stderr_file.read().decode(errors="replace")
    cpu = usage.ru_utime + usage.ru_stime
    return _Ran(process.returncode, seconds, usage.ru_maxrss * 1024, stdout, stderr, cpu)


def _add(total: _Ran, ran: _Ran) -> _Ran:
    """Two runs one after the other: seconds and CPU added up, the larger peak RSS."""
    return _Ran(
        0,
        total.seconds + ran.seconds,
        max(total.peak_rss, ran.peak_rss),
        cpu_seconds=total.cpu_seconds + ran.cpu_seconds,
    )


def _tail(text: str, lines: int = 12) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _check(ran: _Ran, what: str, ok: Sequence[int] = (0,)) -> _Ran:
    if ran.returncode not in ok:
        raise PeerError(f"{what} exited with {ran.returncode}:\n{_tail(ran.stderr + ran.stdout)}")
    return ran


def _peer_env(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    return {**os.environ, "HOME": str(home)}


def _fresh(directory: Path) -> Path:
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    return directory


def _tree_bytes(directory: Path, prefix: str = "") -> int:
    return sum(p.stat().st_size for p in directory.iterdir() if p.is_file() and p.name.startswith(prefix))


# -- the messages on disk ----------------------------------------------------------------------------


@dataclass
class _Files:
    spam_dir: Path
    ham_dir: Path
    spam: list[Path]
    ham: list[Path]
    test: list[Path] = field(default_factory=list)
    """Files to score, in the order of the messages they were written from."""


def _write(messages: Sequence[CorpusMessage], directory: Path) -> list[Path]:
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, message in enumerate(messages):
        path = directory / f"{index:05d}"
        path.write_bytes(without_from_line(message.data))
        paths.append(path)
    return paths


def _write_training(messages: Sequence[CorpusMessage], directory: Path) -> _Files:
    _fresh(directory)
    spam_dir, ham_dir = directory / "spam", directory / "ham"
    spam = _write([m for m in messages if m.label == "spam"], spam_dir)
    ham = _write([m for m in messages if m.label == "ham"], ham_dir)
    return _Files(spam_dir, ham_dir, spam, ham)


def _names(paths: Sequence[Path]) -> bytes:
    return "".join(f"{path}\n" for path in paths).encode()


# -- bogofilter --------------------------------------------------------------------------------------


def _bogofilter() -> str:
    program = _which("bogofilter")
    if program is None:
        raise PeerUnavailable("bogofilter is not installed (as root: apt-get install bogofilter)")
    return program


def _bogofilter_cutoffs(program: str, env: Mapping[str, str], scratch: Path) -> str:
    ran = _run([program, "-C", "-Q"], env=env, scratch=scratch)
    found = dict(re.findall(r"^(spam_cutoff|ham_cutoff)\s*=\s*([\d.]+)", ran.stdout, re.MULTILINE))
    if {"spam_cutoff", "ham_cutoff"} <= found.keys():
        spam_cutoff, ham_cutoff = float(found["spam_cutoff"]), float(found["ham_cutoff"])
        return f"Spam at spamicity >= {spam_cutoff:g}, Ham under {ham_cutoff:g}, Unsure between"
    return "its compiled-in cutoffs"


def _bogofilter_learn(program: str, db: Path, files: _Files, env: Mapping[str, str], scratch: Path) -> _Ran:
    """Registers every spam, then every ham; seconds added up, the larger peak RSS."""
    total = _Ran(0, 0.0, 0)
    for flag, paths in (("-s", files.spam), ("-n", files.ham)):
        ran = _check(
            _run([program, "-C", "-d", str(db), flag, "-b"], env=env, scratch=scratch, stdin=_names(paths)),
            f"bogofilter {flag} -b",
        )
        total = _add(total, ran)
    bogoutil = _which("bogoutil")
    if bogoutil is not None:
        counted = _check(
            _run([bogoutil, "-w", str(db), ".MSG_COUNT"], env=env, scratch=scratch), "bogoutil -w"
        )
        match = re.search(r"^\.MSG_COUNT\s+(\d+)\s+(\d+)", counted.stdout, re.MULTILINE)
        if match is None or (int(match[1]), int(match[2])) != (len(files.spam), len(files.ham)):
            raise PeerError(
                f"bogofilter's word list counts {match[1] if match else '?'} spam and "
                f"{match[2] if match else '?'} ham, {len(files.spam)} and {len(files.ham)} were registered"
            )
    return total


def _bogofilter_score(
    program: str, db: Path, paths: Sequence[Path], env: Mapping[str, str], scratch: Path
) -> tuple[list[tuple[str, float]], _Ran]:
    """(verdict letter S/U/H, spamicity) per path, in order, and the run."""
    ran = _run([program, "-C", "-d", str(db), "-T", "-b"], env=env, scratch=scratch, stdin=_names(paths))
    _check(ran, "bogofilter -T -b", ok=(0, 1, 2))  # the last message's verdict; 3 is an error
    verdicts: dict[str, tuple[str, float]] = {}
    for line in ran.stdout.splitlines():
        name, _space, rest = line.rpartition(" ")
        name, _space, letter = name.rpartition(" ")
        with contextlib.suppress(ValueError):
            verdicts[name] = (letter, float(rest))
    missing = [str(path) for path in paths if str(path) not in verdicts]
    if missing:
        raise PeerError(f"bogofilter gave no verdict for {len(missing)} messages, {missing[0]} first")
    return [verdicts[str(path)] for path in paths], ran


def _run_bogofilter(files: _Files, test: Sequence[CorpusMessage], workdir: Path, log: Log) -> PeerResult:
    program = _bogofilter()
    base = _fresh(workdir / "bogofilter")
    env, scratch, db = _peer_env(base / "home"), base / "scratch", base / "db"
    db.mkdir()
    cutoffs = _bogofilter_cutoffs(program, env, scratch)
    log(f"{BOGOFILTER}: learning {len(files.spam)} spam and {len(files.ham)} ham ...")
    learned = _bogofilter_learn(program, db, files, env, scratch)
    log(f"{BOGOFILTER}: scoring {len(files.test)} messages ...")
    verdicts, scored = _bogofilter_score(program, db, files.test, env, scratch)
    letters = list(zip((message.label for message in test), (letter for letter, _ in verdicts), strict=True))
    unsure = {label: letters.count((label, "U")) for label in ("spam", "ham")}
    return _result(
        BOGOFILTER,
        test,
        [letter == "S" for letter, _spamicity in verdicts],
        [spamicity for _letter, spamicity in verdicts],
        learned.seconds + scored.seconds,
        f"bogofilter's own verdict ({cutoffs}), Unsure counted as not spam: {unsure['spam']} spam and "
        f"{unsure['ham']} ham Unsure; score: spamicity; learn {learned.seconds:.1f} s + test "
        f"{scored.seconds:.1f} s",
    )


# -- SpamAssassin ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Sa:
    perl: str
    spamassassin: str
    sa_learn: str
    spamd: str
    spamc: str
    pre_files: tuple[Path, ...]


def _spamassassin() -> _Sa:
    programs = {name: _which(name) for name in ("perl", "spamassassin", "sa-learn", "spamd", "spamc")}
    missing = [name for name, path in programs.items() if path is None]
    if missing:
        raise PeerUnavailable(
            f"{', '.join(missing)} not installed (as root: apt-get install spamassassin spamd spamc)"
        )
    site = next((d for d in SITE_CONFIG_DIRS if any(d.glob("*.pre"))), None)
    if site is None:
        raise PeerUnavailable("no SpamAssassin site directory with .pre files (the plugin loads) found")
    found = {name: path for name, path in programs.items() if path is not None}
    return _Sa(
        found["perl"],
        found["spamassassin"],
        found["sa-learn"],
        found["spamd"],
        found["spamc"],
        tuple(sorted(site.glob("*.pre"))),
    )


LOCAL_CF = """\
# Written by bench/spampeers.py: SpamAssassin with its packaged rules, local tests only, Bayes on and
# trained by hand only; the machine's own local.cf and ~/.spamassassin are not read.
required_score 5.0
use_bayes 1
use_bayes_rules 1
bayes_auto_learn 0
bayes_auto_expire 0
bayes_path {bayes_path}
skip_rbl_checks 1
dns_available no
ifplugin Mail::SpamAssassin::Plugin::Razor2
use_razor2 0
endif
ifplugin Mail::SpamAssassin::Plugin::Pyzor
use_pyzor 0
endif
ifplugin Mail::SpamAssassin::Plugin::DCC
use_dcc 0
endif
clear_report_template
report spampeers bayes=_BAYES_ score=_SCORE_ yesno=_YESNO_
"""

RULE_NAMES_PL = r"""
use strict;
use warnings;
use Mail::SpamAssassin;
my ($site, $prefs, $home) = @ARGV;
my $sa = Mail::SpamAssassin->new({
    site_rules_filename => $site, userprefs_filename => $prefs, home_dir_for_helpers => $home,
    local_tests_only => 1, dont_copy_prefs => 1,
});
$sa->init(1);
my $rules = $sa->first_existing_path(@Mail::SpamAssassin::default_rules_path) // '?';
print "rules_dir $rules\n";
print "version ", Mail::SpamAssassin::Version(), "\n";
print "rule $_\n" for sort keys %{$sa->{conf}{scores}};
"""


def _sa_site(sa: _Sa, site: Path, bayes_dir: Path, zero_rules: Sequence[str] = ()) -> None:
    """A site configuration directory: the plugin loads, our local.cf and, for Bayes only, the zero scores."""
    _fresh(site)
    for pre in sa.pre_files:
        shutil.copyfile(pre, site / pre.name)
    (site / "local.cf").write_text(LOCAL_CF.format(bayes_path=bayes_dir / "bayes"))
    if zero_rules:
        lines = [f"score {rule} 0\n" for rule in zero_rules]
        (site / "zz_bayes_only.cf").write_text(
            "# Every rule but BAYES_* disabled (a zero score disables a rule): SpamAssassin's Bayes alone.\n"
            + "".join(lines)
        )


@contextlib.contextmanager
def _no_home_state() -> Iterator[None]:
    """sa-learn and spamassassin 4.x make ~/.spamassassin (from the password file, not HOME) for test files;
    when it was not there before, the empty directory they leave is removed."""
    state = Path(pwd.getpwuid(os.geteuid()).pw_dir) / ".spamassassin"
    existed = state.exists()
    try:
        yield
    finally:
        if not existed and state.is_dir():
            leftovers = list(state.iterdir())
            if all(p.name.startswith(".sawritetest") for p in leftovers):
                for p in leftovers:
                    p.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    state.rmdir()


@dataclass
class _SaSetup:
    sa: _Sa
    base: Path
    site: Path
    prefs: Path
    bayes: Path
    env: dict[str, str]
    scratch: Path
    rules_dir: str = "?"
    version: str = "?"

    def common(self) -> list[str]:
        return ["-L", "--siteconfigpath", str(self.site), "-p", str(self.prefs)]


def _sa_setup(sa: _Sa, base: Path) -> _SaSetup:
    _fresh(base)
    setup = _SaSetup(
        sa,
        base,
        base / "site",
        base / "user_prefs",
        base / "bayes",
        _peer_env(base / "home"),
        base / "scratch",
    )
    setup.bayes.mkdir()
    setup.prefs.write_text("")
    _sa_site(sa, setup.site, setup.bayes)
    lint = _run([sa.spamassassin, "--lint", *setup.common()], env=setup.env, scratch=setup.scratch)
    _check(lint, "spamassassin --lint on the benchmark's configuration")
    return setup


def _sa_magic(setup: _SaSetup) -> dict[str, int]:
    ran = _check(
        _run([setup.sa.sa_learn, *setup.common(), "--dump", "magic"], env=setup.env, scratch=setup.scratch),
        "sa-learn --dump magic",
    )
    return {
        name: int(value)
        for value, name in re.findall(
            r"^\S+\s+\S+\s+(\d+)\s+\S+\s+non-token data: (.+)$", ran.stdout, re.MULTILINE
        )
    }


def _sa_learn(setup: _SaSetup, files: _Files, log: Log) -> _Ran:
    """sa-learn over the spam directory, then the ham one; checks that the database really got trained."""
    total = _Ran(0, 0.0, 0)
    for flag, directory, count in (
        ("--spam", files.spam_dir, len(files.spam)),
        ("--ham", files.ham_dir, len(files.ham)),
    ):
        log(f"SpamAssassin: sa-learn {flag} {count} messages ...")
        ran = _check(
            _run(
                [setup.sa.sa_learn, *setup.common(), "--max-size", "0", flag, str(directory)],
                env=setup.env,
                scratch=setup.scratch,
            ),
            f"sa-learn {flag}",
        )
        total = _add(total, ran)
    magic = _sa_magic(setup)
    nspam, nham = magic.get("nspam", 0), magic.get("nham", 0)
    if nspam < 200 or nham < 200:  # bayes_min_spam_num, bayes_min_ham_num: below them Bayes answers 0.5
        raise PeerError(
            f"SpamAssassin's Bayes database is not trained: sa-learn --dump magic counts {nspam} spam and "
            f"{nham} ham, 200 of each are needed ({len(files.spam)} and {len(files.ham)} were given)"
        )
    if (nspam, nham) != (len(files.spam), len(files.ham)):
        log(
            f"SpamAssassin: the Bayes database counts {nspam} spam and {nham} ham of the "
            f"{len(files.spam)} and {len(files.ham)} given (sa-learn skips a message it has seen: the same "
            "Message-ID, or the same To, Date and body)"
        )
    return total


def _sa_rules(setup: _SaSetup) -> list[str]:
    """Every scored rule name in SpamAssassin's parsed configuration (and the rules directory used)."""
    home = setup.base / "home"
    ran = _check(
        _run(
            [setup.sa.perl, "-e", RULE_NAMES_PL, str(setup.site), str(setup.prefs), str(home)],
            env=setup.env,
            scratch=setup.scratch,
        ),
        "reading SpamAssassin's rule names",
    )
    rules: list[str] = []
    for line in ran.stdout.splitlines():
        key, _space, value = line.partition(" ")
        if key == "rule":
            rules.append(value)
        elif key == "rules_dir":
            setup.rules_dir = value
        elif key == "version":
            setup.version = value
    if not any(rule.startswith("BAYES_") for rule in rules):
        raise PeerError("SpamAssassin's configuration has no BAYES_ rules: is the Bayes plugin loaded?")
    return rules


@dataclass
class _Scan:
    score: float
    bayes: str
    is_spam: bool

    @property
    def bayes_probability(self) -> float:
        return float(self.bayes)


@dataclass
class _SpamdRun:
    scans: list[_Scan]
    startup_seconds: float
    scan_seconds: float
    peak_rss: int
    cpu_seconds: float


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _children(pid: int) -> list[int]:
    children = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError, ValueError, IndexError):
            if int(stat.read_text().rpartition(")")[2].split()[1]) == pid:
                children.append(int(stat.parent.name))
    return children


def _vmhwm(pid: int) -> int:
    with contextlib.suppress(OSError):
        match = re.search(r"^VmHWM:\s+(\d+) kB", Path(f"/proc/{pid}/status").read_text(), re.MULTILINE)
        if match:
            return int(match[1]) * 1024
    return 0


def _proc_cpu(pid: int) -> float:
    """utime + stime of a live process, in seconds."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return 0.0


REPORT = re.compile(r"bayes=(?P<bayes>[\d.]+)\s+score=(?P<score>-?[\d.]+)\s+yesno=(?P<yesno>Yes|No)")
"""What our ``report`` template makes of each message (``spamc -R`` prints it after ``score/threshold``)."""


class _Spamd:
    """A spamd of its own on 127.0.0.1, one child, over a copy of the trained database."""

    def __init__(self, setup: _SaSetup, tag: str, zero_rules: Sequence[str]) -> None:
        self.setup, self.tag = setup, tag
        # Run as root, spamd scans as nobody: its files then go where nobody can reach them.
        self.user = None
        if os.geteuid() == 0:
            try:
                self.user = pwd.getpwnam("nobody")
            except KeyError:
                raise PeerUnavailable("spamd will not scan as root, and there is no user nobody") from None
        if self.user is not None:
            self.state = Path(tempfile.mkdtemp(prefix=f"spampeers-spamd-{tag}-"))
        else:
            self.state = _fresh(setup.base / f"spamd-{tag}")
        self.state.chmod(0o755)
        bayes, site, self.home = self.state / "bayes", self.state / "site", self.state / "home"
        shutil.copytree(setup.bayes, bayes)
        _sa_site(setup.sa, site, bayes, zero_rules)
        self.home.mkdir()
        if self.user is not None:
            for directory, _dirs, names in os.walk(self.state):
                for name in (directory, *(os.path.join(directory, name) for name in names)):
                    os.chown(name, self.user.pw_uid, self.user.pw_gid)
        port = _free_port()
        self.command = [setup.sa.spamd, "-L", "-x", "--siteconfigpath", str(site)]
        self.command += f"--listen=127.0.0.1:{port} -A 127.0.0.1 -s stderr -m 1".split()
        self.command += ["--min-children=1", "--min-spare=1", "--max-spare=1"]
        self.command += ["--max-conn-per-child=1000000000"]  # one child all along: its VmHWM is the peak
        self.command += [f"--helper-home-dir={self.home}"]
        if self.user is not None:
            self.command += ["-u", self.user.pw_name]
        self.spamc = [setup.sa.spamc, "-d", "127.0.0.1", "-p", str(port), "-x", "-t", "600"]
        self.env = _peer_env(self.home)
        self.log_path = setup.base / f"spamd-{tag}.log"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> float:
        """Starts spamd and waits until it answers ``spamc -K``; the seconds that took."""
        start = time.perf_counter()
        with self.log_path.open("wb") as log:
            self.process = subprocess.Popen(
                self.command, stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env
            )
        while subprocess.run([*self.spamc, "-K"], capture_output=True, env=self.env, check=False).returncode:
            if self.process.poll() is not None:
                raise PeerError(f"spamd exited with {self.process.returncode}:\n{self._log_tail()}")
            if time.perf_counter() - start > SPAMD_START_SECONDS:
                raise PeerError(f"spamd did not answer in {SPAMD_START_SECONDS:g} s:\n{self._log_tail()}")
            time.sleep(0.2)
        return time.perf_counter() - start

    def _log_tail(self) -> str:
        return _tail(self.log_path.read_text(errors="replace"))

    def scan(self, path: Path) -> _Scan:
        with path.open("rb") as message:
            done = subprocess.run(
                [*self.spamc, "-R", "-s", str(SPAMC_MAX_SIZE)],
                stdin=message,
                capture_output=True,
                env=self.env,
                check=False,
            )
        output = done.stdout.decode(errors="replace")
        report = REPORT.search(output)
        if done.returncode not in (0, 1) or report is None:
            raise PeerError(
                f"spamc on {path} exited with {done.returncode}: "
                f"{_tail(done.stderr.decode(errors='replace') + output)}"
            )
        return _Scan(float(report["score"]), report["bayes"], report["yesno"] == "Yes")

    def peak_rss(self) -> int:
        """The largest VmHWM of spamd and its children."""
        if self.process is None:
            return 0
        return max([_vmhwm(self.process.pid), *(_vmhwm(child) for child in _children(self.process.pid))])

    def cpu_seconds(self) -> float:
        """CPU time so far of spamd's processes and of every spamc this process has run and waited for."""
        spamc = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = spamc.ru_utime + spamc.ru_stime
        if self.process is not None:
            used += sum(_proc_cpu(pid) for pid in (self.process.pid, *_children(self.process.pid)))
        return used

    def stop(self) -> None:
        if self.process is not None:
            children = _children(self.process.pid)
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            for child in children:  # spamd's own child, should it outlive its parent
                with contextlib.suppress(OSError):
                    if b"spamd" in Path(f"/proc/{child}/cmdline").read_bytes():
                        os.kill(child, signal.SIGTERM)
            self.process = None
        if self.user is not None:
            shutil.rmtree(self.state, ignore_errors=True)


def _spamd_run(
    setup: _SaSetup, tag: str, paths: Sequence[Path], zero_rules: Sequence[str], log: Log
) -> _SpamdRun:
    """spamd started, one spamc per path one after the other, spamd's peak RSS, spamd stopped."""
    spamd = _Spamd(setup, tag, zero_rules)
    try:
        startup = spamd.start()
        log(f"SpamAssassin ({tag}): spamd up in {startup:.1f} s; scanning {len(paths)} messages ...")
        cpu = spamd.cpu_seconds()
        start = time.perf_counter()
        scans = [spamd.scan(path) for path in paths]
        scan_seconds = time.perf_counter() - start
        cpu = spamd.cpu_seconds() - cpu
        peak = spamd.peak_rss()
    finally:
        spamd.stop()
    if scans and all(scan.bayes_probability == 0.5 for scan in scans):
        raise PeerError(f"SpamAssassin ({tag}): Bayes answered 0.5 for every message: it was not used")
    return _SpamdRun(scans, startup, scan_seconds, peak, cpu)


def _run_spamassassin(
    files: _Files, test: Sequence[CorpusMessage], workdir: Path, log: Log
) -> list[PeerResult]:
    sa = _spamassassin()
    with _no_home_state():
        setup = _sa_setup(sa, workdir / "spamassassin")
        learned = _sa_learn(setup, files, log)
        zero = [rule for rule in _sa_rules(setup) if not rule.startswith("BAYES_")]
        rules = _spamd_run(setup, "rules", files.test, (), log)
        bayes = _spamd_run(setup, "bayes-only", files.test, zero, log)
    differ = sum(a.bayes != b.bayes for a, b in zip(rules.scans, bayes.scans, strict=True))
    if differ:
        log(f"SpamAssassin: the Bayes probability of {differ} messages differs between the two runs")
    where = f"SpamAssassin {setup.version}, rules of {setup.rules_dir}, -L, sa-learn + spamd/spamc"
    no_opinion = sum(scan.bayes_probability == BAYES_ONLY_CUTOFF for scan in bayes.scans)

    def took(run: _SpamdRun) -> str:
        return (
            f"sa-learn {learned.seconds:.1f} s + spamd start {run.startup_seconds:.1f} s + test "
            f"{run.scan_seconds:.1f} s"
        )

    return [
        _result(
            SA_BAYES,
            test,
            [scan.bayes_probability > BAYES_ONLY_CUTOFF for scan in bayes.scans],
            [scan.bayes_probability for scan in bayes.scans],
            learned.seconds + bayes.startup_seconds + bayes.scan_seconds,
            f"Bayes probability > {BAYES_ONLY_CUTOFF:g} ({no_opinion} answered exactly "
            f"{BAYES_ONLY_CUTOFF:g}, no opinion), every other rule's score 0 ({len(zero)} rules); "
            f"score: the Bayes probability; {where}; {took(bayes)}",
        ),
        _result(
            SA_RULES,
            test,
            [scan.is_spam for scan in rules.scans],
            [scan.score for scan in rules.scans],
            learned.seconds + rules.startup_seconds + rules.scan_seconds,
            f"SpamAssassin's verdict at required_score 5.0 (score set 2: Bayes, no network tests); "
            f"score: SpamAssassin's score; {where}; {took(rules)}",
        ),
    ]


# -- accuracy ----------------------------------------------------------------------------------------


def _result(
    name: str,
    test: Sequence[CorpusMessage],
    verdicts: Sequence[bool],
    scores: Sequence[float],
    seconds: float,
    method: str,
) -> PeerResult:
    labelled = list(zip((message.label for message in test), verdicts, scores, strict=True))
    return PeerResult(
        name=name,
        false_positives=sum(label == "ham" and spam for label, spam, _score in labelled),
        false_negatives=sum(label == "spam" and not spam for label, spam, _score in labelled),
        ham=sum(label == "ham" for label, _spam, _score in labelled),
        spam=sum(label == "spam" for label, _spam, _score in labelled),
        scores=[(label, score) for label, _spam, score in labelled],
        seconds=seconds,
        method=method,
    )


def _skip(peer: str, missing: PeerUnavailable, log: Log, skipped: list[str] | None) -> None:
    line = f"{peer}: skipped, {missing}"
    log(line)
    if skipped is not None:
        skipped.append(line)


def run_peers(
    train: list[CorpusMessage],
    test: list[CorpusMessage],
    workdir: Path,
    *,
    log: Log = _stderr,
    skipped: list[str] | None = None,
) -> list[PeerResult]:
    """Trains each peer on ``train`` and tests it on ``test``, one peer after the other.

    A peer whose programs are missing is left out: a line through ``log``, and appended to ``skipped``
    when given. A peer that fails, or whose Bayes database did not get trained, raises :class:`PeerError`.
    """
    workdir = workdir / "spampeers"  # the caller's other files in workdir are left alone
    workdir.mkdir(parents=True, exist_ok=True)
    files = _write_training(train, workdir / "messages" / "train")
    files.test = _write(test, _fresh(workdir / "messages" / "test"))
    results: list[PeerResult] = []
    try:
        results.append(_run_bogofilter(files, test, workdir, log))
    except PeerUnavailable as missing:
        _skip("bogofilter", missing, log, skipped)
    try:
        results.extend(_run_spamassassin(files, test, workdir, log))
    except PeerUnavailable as missing:
        _skip("SpamAssassin", missing, log, skipped)
    return results


# -- speed -------------------------------------------------------------------------------------------


def _spread(paths: Sequence[Path], limit: int | None) -> list[Path]:
    if limit is None or limit >= len(paths):
        return list(paths)
    return [paths[index * len(paths) // limit] for index in range(limit)]


def peer_speeds(
    messages: list[CorpusMessage],
    workdir: Path,
    *,
    score_limit: int | None = None,
    log: Log = _stderr,
    skipped: list[str] | None = None,
) -> list[PeerSpeed]:
    """Learning and scoring rates of bogofilter and SpamAssassin on ``messages`` (see the module's text).

    Every message is learned; ``score_limit`` scores an evenly spaced number of them instead of all.
    """
    workdir = workdir / "spampeers"  # the caller's other files in workdir are left alone
    workdir.mkdir(parents=True, exist_ok=True)
    files = _write_training(messages, workdir / "messages" / "all")
    score = _spread(sorted([*files.spam, *files.ham], key=str), score_limit)
    learned_count = len(files.spam) + len(files.ham)
    speeds: list[PeerSpeed] = []

    try:
        program = _bogofilter()
    except PeerUnavailable as missing:
        _skip("bogofilter", missing, log, skipped)
    else:
        base = _fresh(workdir / "bogofilter-speed")
        env, scratch, db = _peer_env(base / "home"), base / "scratch", base / "db"
        db.mkdir()
        log(f"{BOGOFILTER}: learning {learned_count} messages ...")
        learned = _bogofilter_learn(program, db, files, env, scratch)
        log(f"{BOGOFILTER}: scoring {len(score)} messages ...")
        _verdicts, scored = _bogofilter_score(program, db, score, env, scratch)
        speeds.append(
            PeerSpeed(
                BOGOFILTER,
                "learn: bogofilter -s -b / -n -b, one process per class; score: one bogofilter -T -b process",
                learned_count,
                learned.seconds,
                len(score),
                scored.seconds,
                0.0,
                _tree_bytes(db),
                learned.peak_rss,
                scored.peak_rss,
                learned.cpu_seconds,
                scored.cpu_seconds,
            )
        )

    try:
        sa = _spamassassin()
    except PeerUnavailable as missing:
        _skip("SpamAssassin", missing, log, skipped)
        return speeds
    with _no_home_state():
        setup = _sa_setup(sa, workdir / "spamassassin-speed")
        learned = _sa_learn(setup, files, log)
        database = _tree_bytes(setup.bayes, "bayes_")
        zero = [rule for rule in _sa_rules(setup) if not rule.startswith("BAYES_")]
        for name, tag, rules in ((SA_RULES, "rules", ()), (SA_BAYES, "bayes-only", zero)):
            run = _spamd_run(setup, tag, score, rules, log)
            speeds.append(
                PeerSpeed(
                    name,
                    "learn: sa-learn --spam DIR / --ham DIR, one process per class; "
                    "score: spamd (1 child, -L) + one spamc process per message, sequential",
                    learned_count,
                    learned.seconds,
                    len(score),
                    run.scan_seconds,
                    run.startup_seconds,
                    database,
                    learned.peak_rss,
                    run.peak_rss,
                    learned.cpu_seconds,
                    run.cpu_seconds,
                )
            )
    return speeds


# -- the self-check ----------------------------------------------------------------------------------


def format_results(results: Sequence[PeerResult]) -> str:
    lines = []
    for result in results:
        fp_rate = result.false_positives / result.ham if result.ham else 0.0
        fn_rate = result.false_negatives / result.spam if result.spam else 0.0
        lines.append(
            f"{result.name:<28} FP {result.false_positives:>4}/{result.ham} ({fp_rate:6.2%})  "
            f"FN {result.false_negatives:>4}/{result.spam} ({fn_rate:6.2%})  {result.seconds:8.1f} s"
        )
        lines.append(f"  {result.method}")
    return "\n".join(lines)


def format_speeds(speeds: Sequence[PeerSpeed]) -> str:
    lines = []
    for speed in speeds:
        started = (
            f", spamd's start {speed.startup_seconds:.1f} s not counted" if speed.startup_seconds else ""
        )
        lines += [
            f"{speed.name:<28} learn {speed.learn_per_second:8.1f} msg/s  "
            f"score {speed.score_per_second:8.1f} msg/s  database {speed.database_bytes / 2**20:.1f} MiB  "
            f"peak RSS {speed.learn_peak_rss / 2**20:.0f} MiB learning, "
            f"{speed.score_peak_rss / 2**20:.0f} MiB scoring",
            f"  {speed.learned} learned in {speed.learn_seconds:.1f} s, CPU {speed.learn_cpu_seconds:.1f} s "
            f"({speed.learn_per_cpu_second:.1f} msg per CPU s); {speed.scored} scored in "
            f"{speed.score_seconds:.1f} s, CPU {speed.score_cpu_seconds:.1f} s "
            f"({speed.score_per_cpu_second:.1f} msg per CPU s){started}",
            f"  {speed.method}",
        ]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="The spam benchmarks' peers alone (bogofilter, SpamAssassin)."
    )
    parser.add_argument("--speed", action="store_true", help="the speed figures too, on the whole corpus")
    parser.add_argument("--speed-only", action="store_true", help="the speed figures alone")
    parser.add_argument("--score-limit", type=int, default=None, help="for speed, score only N messages")
    parser.add_argument("--workdir", type=Path, default=None, help="keep the peers' files here")
    parser.add_argument("--no-install", action="store_true", help="do not apt-get install missing peers")
    options = parser.parse_args(argv)

    if not options.no_install:
        ensure_peers()
    corpus = load_corpus()
    train, test = split(corpus)
    with contextlib.ExitStack() as stack:
        workdir = options.workdir or Path(
            stack.enter_context(tempfile.TemporaryDirectory(prefix="spampeers-"))
        )
        try:
            if not options.speed_only:
                skipped: list[str] = []
                results = run_peers(train, test, workdir / "accuracy", skipped=skipped)
                print(f"accuracy: trained on {len(train)} messages, tested on {len(test)} (issue 5's split)")
                print("\n".join([format_results(results), *skipped]), flush=True)
            if options.speed or options.speed_only:
                skipped = []
                speeds = peer_speeds(
                    corpus, workdir / "speed", score_limit=options.score_limit, skipped=skipped
                )
                scored = min(options.score_limit or len(corpus), len(corpus))
                print(f"speed: {len(corpus)} messages learned, {scored} scored, one stream")
                print("\n".join([format_speeds(speeds), *skipped]), flush=True)
        except PeerError as error:
            print(f"spampeers: {error}", file=sys.stderr)
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
