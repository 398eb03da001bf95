"""The SpamAssassin public corpus in ../shared/testdata/spam/, and the fixed split issue 5 measures on.

Every message is read straight out of the repacked archives (no unpacking), as bytes, labelled by its
archive's row in MANIFEST.tsv. The split is the one the issue fixes: sort the messages by their path in
the archive, every fifth one (index mod 5 == 0) is test, the rest train.
"""

from __future__ import annotations

import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

CORPUS_DIR = Path(__file__).resolve().parents[2] / "shared" / "testdata" / "spam" / "spamassassin-public"

Label = Literal["spam", "ham"]


@dataclass(frozen=True)
class CorpusMessage:
    path: str
    """The path inside the archive, ``easy_ham/00001.7c53...``: the sort key of the split."""
    label: Label
    data: bytes
    """The file as it is, the mbox ``From `` line included (strip it with :func:`without_from_line`)."""


def _labels(corpus_dir: Path) -> dict[str, Label]:
    labels: dict[str, Label] = {}
    for line in (corpus_dir / "MANIFEST.tsv").read_text().splitlines():
        if line.startswith("#") or not line.strip():
            continue
        _archive, path, label = line.split("\t")[:3]
        if label not in ("spam", "ham"):
            raise ValueError(f"MANIFEST.tsv: unknown label {label!r} for {path}")
        labels[path] = "spam" if label == "spam" else "ham"
    return labels


def _archive_members(archive: Path) -> Iterator[tuple[str, bytes]]:
    with tarfile.open(archive, "r:bz2") as tar:
        for member in tar:
            if not member.isfile():
                continue
            extracted = tar.extractfile(member)
            if extracted is not None:
                yield member.name.removeprefix("./"), extracted.read()


def load_corpus(corpus_dir: Path = CORPUS_DIR) -> list[CorpusMessage]:
    """Every message of the corpus, sorted by path."""
    labels = _labels(corpus_dir)
    messages = [
        CorpusMessage(path, labels[path], data)
        for archive in sorted(corpus_dir.glob("*.tar.bz2"))
        for path, data in _archive_members(archive)
        if path in labels
    ]
    if len(messages) != len(labels):
        raise ValueError(f"{corpus_dir}: {len(messages)} messages found, MANIFEST.tsv lists {len(labels)}")
    return sorted(messages, key=lambda message: message.path)


def split(messages: list[CorpusMessage]) -> tuple[list[CorpusMessage], list[CorpusMessage]]:
    """(train, test): sorted by path, index mod 5 == 0 is test."""
    ordered = sorted(messages, key=lambda message: message.path)
    test = [message for index, message in enumerate(ordered) if index % 5 == 0]
    train = [message for index, message in enumerate(ordered) if index % 5 != 0]
    return train, test


def without_from_line(data: bytes) -> bytes:
    """The message without the mbox ``From sender date`` line most corpus files start with."""
    if data.startswith(b"From "):
        newline = data.find(b"\n")
        return b"" if newline < 0 else data[newline + 1 :]
    return data


if __name__ == "__main__":
    corpus = load_corpus()
    train, test = split(corpus)
    for name, part in (("train", train), ("test", test)):
        spam = sum(message.label == "spam" for message in part)
        print(f"{name}: {len(part)} messages, {spam} spam, {len(part) - spam} ham")
