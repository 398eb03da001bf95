"""A trained spam filter for server tests: synthetic spam and ham, learned once per session.

Synthetic rather than the SpamAssassin corpus: the tests are about what the server does with a
verdict (fields, Junk, thresholds, a store that goes away), so the messages are built to leave no
doubt whatever the classifier's fine tuning: the spam is also HTML only with a subject in capitals
from a domain whose SPF fails (header and authentication rules that hit on top of Bayes), the ham is
plain text with every field a mail program writes, from a domain whose SPF passes.
"""

from __future__ import annotations

import shutil
from pathlib import Path

from mailtoaster.spam import SpamFilter, SqliteTokenStore
from mailtoaster.spam.filter import store_path

TRAINED = 210
"""Messages of each class learned: above the 200 needed before Bayes counts."""
SPAM_SENDER = "deals@forged.example"
"""SPF fails for it from the test clients (the harness's zone allows only 192.0.2.1)."""
HAM_SENDER = "colleague@sender.example"
"""SPF passes for it from the test clients."""


def spam_message(index: int, recipient: str = "alice@example.org") -> bytes:
    text = (
        f"From: Best Deals <deals{index % 7}@forged.example>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: CHEAP PILLS LIMITED OFFER {index}\r\n"
        f"Message-ID: <spam{index}@forged.example>\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/html; charset=utf-8\r\n"
        "\r\n"
        f"<html><body><p>Buy cheap pills now, limited offer {index}! Casino prizes and viagra.</p>\r\n"
        f'<p><a href="http://pills{index % 7}.example.biz/buy">Click here</a> to claim your prize.</p>\r\n'
        "</body></html>\r\n"
    )
    return text.encode()


def ham_message(index: int, recipient: str = "alice@example.org") -> bytes:
    text = (
        f"From: Colleague {index % 5} <colleague{index % 5}@sender.example>\r\n"
        f"To: {recipient}\r\n"
        f"Subject: Sprint {index} notes\r\n"
        f"Message-ID: <ham{index}@sender.example>\r\n"
        "Date: Mon, 30 Nov 2026 10:00:00 +0000\r\n"
        "MIME-Version: 1.0\r\n"
        "Content-Type: text/plain; charset=utf-8\r\n"
        "\r\n"
        f"Hi team, the meeting notes for sprint {index} are in the wiki; see the agenda for\r\n"
        "Thursday and the release plan. Let me know what I missed.\r\n"
    )
    return text.encode()


def train(path: Path) -> None:
    """Learn :data:`TRAINED` spam and ham into the SQLite token store at ``path``."""
    spam_filter = SpamFilter(SqliteTokenStore(path))
    try:
        list(spam_filter.learn_many((spam_message(index) for index in range(TRAINED)), "spam"))
        list(spam_filter.learn_many((ham_message(index) for index in range(TRAINED)), "ham"))
    finally:
        spam_filter.close()


def install_trained(template: Path, data_dir: Path) -> None:
    """Copy a trained store (made once by :func:`train`) to where ``data_dir``'s server reads it."""
    target = store_path(data_dir)
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(template, target)
