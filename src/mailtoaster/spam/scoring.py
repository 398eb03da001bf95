"""SpamAssassin-compatible scoring: rules that hit add points, ``points >= required`` is spam.

Three kinds of rule add up:

* **Bayes**: the classifier's probability falls in exactly one of SpamAssassin's bands, BAYES_00 to
  BAYES_99, plus BAYES_999 on top of BAYES_99. Unlike SpamAssassin (whose BAYES_99 + BAYES_999 give
  3.7, never enough alone), a sure Bayes verdict here is enough on its own: this server has no
  network tests (DNS blocklists, Razor, Pyzor) to add the missing points, and the filter learns
  from the users' own Junk folders, which is the evidence that matters most.
* **Header checks**: things legitimate mail software does not do (no Date or Message-ID, a From
  without an address, a subject in capitals, HTML without a text alternative), and the mailer,
  relay and date checks of :mod:`mailtoaster.spam.rules` (a forged Outlook, a relay without reverse
  DNS, a Date the trace contradicts, a free mail From that never passed the provider's hosts).
* **Body rules** (:mod:`mailtoaster.spam.rules` too): a quoted-printable line over 76 characters,
  undeclared 8-bit text, "Dear Friend", a screenful of blank lines, links to a bare IP address.
* **Authentication**, when the server checked the message (a :class:`VerifyReport`): SPF fail and
  softfail, DKIM signatures that fail, DMARC fail, and mail with no authentication at all.

The points are in :data:`RULES`; ``docs/spam.md`` has the table and where each value comes from.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from mailtoaster import __version__
from mailtoaster.spam.classifier import BayesResult, Clue
from mailtoaster.spam.mime import ParsedMessage
from mailtoaster.spam.rules import Fields, body_rules, trace_hits
from mailtoaster.verify.report import VerifyReport

DEFAULT_REQUIRED = 5.0
SPAM_TOKENS = 20
"""BAYES_SPAM_TOKENS hits a message with at least this many strong spam tokens
(:attr:`~mailtoaster.spam.classifier.BayesResult.spam_tokens`)."""
Verdict = Literal["spam", "ham"]


@dataclass(frozen=True)
class Rule:
    name: str
    points: float
    description: str


_RULE_LIST = (
    # Bayes bands: (name, points, description); the band edges are in BAYES_BANDS.
    Rule("BAYES_00", -1.9, "Bayes spam probability is 0 to 1%"),
    Rule("BAYES_05", -0.5, "Bayes spam probability is 1 to 5%"),
    Rule("BAYES_20", -0.001, "Bayes spam probability is 5 to 20%"),
    Rule("BAYES_40", -0.001, "Bayes spam probability is 20 to 40%"),
    Rule("BAYES_50", 0.8, "Bayes spam probability is 40 to 60%"),
    Rule("BAYES_60", 1.5, "Bayes spam probability is 60 to 80%"),
    Rule("BAYES_80", 2.0, "Bayes spam probability is 80 to 95%"),
    Rule("BAYES_95", 3.0, "Bayes spam probability is 95 to 99%"),
    Rule("BAYES_99", 4.0, "Bayes spam probability is 99 to 100%"),
    Rule("BAYES_999", 1.0, "Bayes spam probability is 99.9 to 100%"),
    Rule(
        "BAYES_SPAM_TOKENS", 2.0, f"{SPAM_TOKENS} or more tokens seen almost only in spam (Bayes f >= 0.95)"
    ),
    # Header checks.
    Rule("MISSING_DATE", 1.0, "Missing Date: header"),
    Rule("MISSING_MID", 0.5, "Missing Message-Id: header"),
    Rule("INVALID_MSGID", 1.0, "Message-Id is not valid, according to RFC 5322"),
    Rule("MISSING_FROM", 1.0, "Missing From: header"),
    Rule("FROM_MALFORMED", 1.0, "From: has no valid address"),
    Rule("MISSING_SUBJECT", 0.5, "Missing Subject: header"),
    Rule("SUBJ_ALL_CAPS", 1.0, "Subject is all capitals"),
    Rule("MIME_HTML_ONLY", 1.0, "Message only has text/html MIME parts"),
    Rule("EMPTY_MESSAGE", 1.0, "Message has no text at all"),
    # Mailer fingerprints, relays and dates (spam/rules.py).
    Rule("FORGED_MUA_OUTLOOK", 2.0, "Forged mail pretending to be from MS Outlook"),
    Rule("MSGID_OUTLOOK_INVALID", 1.5, "Message-Id is fake (in Outlook Express format)"),
    Rule("RATWARE_MS_HASH", 1.5, "Bulk email fingerprint (msgid ms hash) found"),
    Rule("RDNS_NONE", 1.0, "Delivered by a host with no rDNS"),
    Rule("INVALID_DATE", 2.0, "Invalid Date: header (not RFC 5322)"),
    Rule("DATE_IN_FUTURE_03_XX", 2.0, "Date: is 3 hours or more after the newest Received: date"),
    Rule("DATE_IN_PAST_96_XX", 1.0, "Date: is 96 hours or more before the earliest Received: date"),
    Rule("FORGED_FREEMAIL_RCVD", 2.0, "From: a large free mail provider, but no Received: from its hosts"),
    Rule("FREEMAIL_NO_RDNS", 1.5, "From: a large free mail provider, delivered by a host with no rDNS"),
    Rule("FREEMAIL_REPLYTO", 2.0, "Reply-To: a free mail provider, From: another domain"),
    Rule("XPRIO_HIGH", 2.0, "X-Priority: 1 or 2"),
    # Body rules (spam/rules.py).
    Rule("MIME_QP_LONG_LINE", 2.0, "Quoted-printable line longer than 76 chars"),
    Rule("CTE_8BIT_MISMATCH", 1.0, "Header says 7bits but body disagrees"),
    Rule("DEAR_SOMETHING", 2.0, "Contains 'Dear (something)'"),
    Rule("MANY_BLANK_LINES", 1.0, "25 or more blank lines in a row in the text"),
    Rule("NORMAL_HTTP_TO_IP", 2.0, "URI host has a public dotted-decimal IPv4 address"),
    # Authentication (only with a verification report).
    Rule("SPF_FAIL", 0.9, "SPF: sender does not match SPF record (fail)"),
    Rule("SPF_SOFTFAIL", 0.7, "SPF: sender does not match SPF record (softfail)"),
    Rule("SPF_PASS", -0.001, "SPF: sender matches SPF record"),
    Rule("DKIM_INVALID", 0.5, "DKIM or DK signature exists, but is not valid"),
    Rule("DKIM_VALID", -0.1, "Message has at least one valid DKIM or DK signature"),
    Rule("DMARC_FAIL", 1.5, "DMARC: the author domain's policy is not met"),
    Rule("DMARC_PASS", -0.1, "DMARC: the author domain's policy is met"),
    Rule("NO_AUTH", 1.0, "Neither SPF nor DKIM passed: nothing vouches for the sender"),
)
RULES: dict[str, Rule] = {rule.name: rule for rule in _RULE_LIST}
"""Every rule by name."""

BAYES_BANDS = (
    (0.01, "BAYES_00"),
    (0.05, "BAYES_05"),
    (0.20, "BAYES_20"),
    (0.40, "BAYES_40"),
    (0.60, "BAYES_50"),
    (0.80, "BAYES_60"),
    (0.95, "BAYES_80"),
    (0.99, "BAYES_95"),
)
"""(upper bound, rule): the band a probability below the bound falls in; 0.99 and up is BAYES_99."""


@dataclass(frozen=True)
class RuleHit:
    name: str
    points: float
    description: str


@dataclass(frozen=True)
class SpamScore:
    points: float
    required: float
    hits: tuple[RuleHit, ...]
    """The rules that hit, in rule order."""
    bayes: float | None
    """Bayes probability; None when too few messages were learned."""
    telling: tuple[Clue, ...] = field(default=())
    """The most telling tokens, strongest first."""

    @property
    def is_spam(self) -> bool:
        return self.points >= self.required

    @property
    def verdict(self) -> Verdict:
        return "spam" if self.is_spam else "ham"

    @property
    def tests(self) -> list[str]:
        return [hit.name for hit in self.hits]


def bayes_rules(probability: float | None) -> list[str]:
    """The BAYES_* band rules a probability hits (none without a probability)."""
    if probability is None:
        return []
    for bound, name in BAYES_BANDS:
        if probability < bound:
            return [name]
    return ["BAYES_99", "BAYES_999"] if probability >= 0.999 else ["BAYES_99"]


def bayes_token_rules(bayes: BayesResult) -> list[str]:
    """BAYES_SPAM_TOKENS, when the classifier gave a probability and the message has
    :data:`SPAM_TOKENS` or more strong spam tokens, whatever the probability: spam padded with copied
    text sits near 0.5, its spam tokens outvoted in Fisher's combination, not outnumbered."""
    if bayes.probability is None or bayes.spam_tokens < SPAM_TOKENS:
        return []
    return ["BAYES_SPAM_TOKENS"]


_MESSAGE_ID = re.compile(r"<[^<>@\s]+@[^<>@\s]+>")
_ADDRESS = re.compile(r"[^\s<>@,;:\"]+@[^\s<>@,;:\"]+\.[^\s<>@,;:\"]+")


def header_rules(message: ParsedMessage) -> list[str]:
    """The header checks a message fails."""
    gathered = Fields.of(message.headers)  # gathered once, for these checks and the trace rules
    fields = gathered.first
    hits = []
    if "date" not in fields:
        hits.append("MISSING_DATE")
    if "message-id" not in fields:
        hits.append("MISSING_MID")
    elif not _MESSAGE_ID.search(fields["message-id"]):
        hits.append("INVALID_MSGID")
    if "from" not in fields:
        hits.append("MISSING_FROM")
    elif not _ADDRESS.search(fields["from"]):
        hits.append("FROM_MALFORMED")
    if "subject" not in fields:
        hits.append("MISSING_SUBJECT")
    elif _all_capitals(fields["subject"]):
        hits.append("SUBJ_ALL_CAPS")
    types = {part.content_type for part in message.parts}
    if "text/html" in types and "text/plain" not in types:
        hits.append("MIME_HTML_ONLY")
    # isspace() is false for b"" and else true exactly when strip() leaves nothing; it copies nothing.
    if all(not part.payload or part.payload.isspace() for part in message.parts):
        hits.append("EMPTY_MESSAGE")
    hits.extend(trace_hits(gathered))
    hits.extend(body_rules(message))
    return hits


def _all_capitals(subject: str) -> bool:
    """SpamAssassin's SUBJ_ALL_CAPS: at least two words and ten letters, none of them lower case."""
    letters = [char for char in subject if char.isalpha()]
    return len(subject.split()) >= 2 and len(letters) >= 10 and not any(char.islower() for char in letters)


def auth_rules(report: VerifyReport) -> list[str]:
    """The authentication rules a verification report hits."""
    hits = []
    spf = report.spf.result.value
    if spf == "fail":
        hits.append("SPF_FAIL")
    elif spf == "softfail":
        hits.append("SPF_SOFTFAIL")
    elif spf == "pass":
        hits.append("SPF_PASS")
    dkim_passed = any(verdict.passed for verdict in report.dkim)
    if dkim_passed:
        hits.append("DKIM_VALID")
    elif any(verdict.result.value in ("fail", "permerror", "policy") for verdict in report.dkim):
        hits.append("DKIM_INVALID")
    dmarc = report.dmarc.result.value
    if dmarc == "fail":
        hits.append("DMARC_FAIL")
    elif dmarc == "pass":
        hits.append("DMARC_PASS")
    if spf != "pass" and not dkim_passed:
        hits.append("NO_AUTH")
    return hits


def score_message(
    message: ParsedMessage,
    bayes: BayesResult,
    report: VerifyReport | None = None,
    required: float = DEFAULT_REQUIRED,
    *,
    telling: int = 10,
    rules: dict[str, Rule] | None = None,
) -> SpamScore:
    """Add up the rules that hit: Bayes, header checks and, with a report, authentication."""
    table = RULES if rules is None else rules
    names = [*bayes_rules(bayes.probability), *bayes_token_rules(bayes), *header_rules(message)]
    if report is not None:
        names.extend(auth_rules(report))
    hits = tuple(RuleHit(name, table[name].points, table[name].description) for name in names)
    points = round(sum(hit.points for hit in hits), 3)
    return SpamScore(points, required, hits, bayes.probability, bayes.telling(telling))


# The header fields the server adds ------------------------------------------------------------------


def spam_fields(
    score: SpamScore, *, autolearn: str = "no", version: str = __version__
) -> list[tuple[str, str]]:
    """(name, value) of the fields to add on top of the message, SpamAssassin's way: ``X-Spam-Flag:
    YES`` on spam only, ``X-Spam-Score``, ``X-Spam-Level`` (one ``*`` per whole point) and
    ``X-Spam-Status`` (folded; the value's continuation lines start with a tab)."""
    fields = []
    if score.is_spam:
        fields.append(("X-Spam-Flag", "YES"))
    fields.append(("X-Spam-Score", f"{score.points:.1f}"))
    fields.append(("X-Spam-Level", "*" * max(0, int(score.points))))
    fields.append(("X-Spam-Status", status_value(score, autolearn=autolearn, version=version)))
    return fields


def status_value(score: SpamScore, *, autolearn: str = "no", version: str = __version__) -> str:
    """``Yes, score=7.3 required=5.0 tests=BAYES_99,SPF_FAIL autolearn=no version=0.1.0``, folded
    before 78 columns (counting the field name) where SpamAssassin folds: after a comma in the test
    list, or between words; continuation lines start with a tab."""
    tests = score.tests or ["none"]
    pieces = [
        ("Yes," if score.is_spam else "No,", False),
        (f"score={score.points:.1f}", False),
        (f"required={score.required:.1f}", False),
        *(
            (("tests=" if i == 0 else "") + name + ("," if i < len(tests) - 1 else ""), i < len(tests) - 1)
            for i, name in enumerate(tests)
        ),
        (f"autolearn={autolearn}", False),
        (f"version={version}", False),
    ]
    return fold(pieces, first_line_used=len("X-Spam-Status: "))


def fold(pieces: list[tuple[str, bool]], *, first_line_used: int = 0, width: int = 78) -> str:
    """Join (text, tight) pieces into a folded field value: a tight piece is followed by the next
    without a space (the test list), others with one; a line that would pass ``width`` columns is
    broken before the piece, with ``\n\t``."""
    lines: list[str] = []
    line = ""
    used = first_line_used
    glue = ""
    for text, tight in pieces:
        if line and used + len(line) + len(glue) + len(text) > width:
            lines.append(line)
            line, used = text, 8  # a tab: SpamAssassin counts it as a tab stop
        else:
            line += glue + text
        glue = "" if tight else " "
    lines.append(line)
    return "\n\t".join(lines)


def render_fields(fields: list[tuple[str, str]]) -> bytes:
    """The fields as header lines, each ending CRLF (continuations too), ready to put on top."""
    text = "".join(f"{name}: {value}\n" for name, value in fields)
    return text.replace("\n", "\r\n").encode("utf-8")
