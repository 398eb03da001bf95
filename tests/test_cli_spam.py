"""``mailtoaster learn``, ``score`` and ``spam stats``, run in-process on messages made by the test."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from mailtoaster.cli import main
from mailtoaster.spam import SpamFilter, SqliteTokenStore, Totals
from tests.clirun import assert_usage_error, run
from tests.redisserver import RedisServer, flush


def message(index: int, kind: str) -> bytes:
    if kind == "spam":
        text = f"Buy cheap pills now, limited offer {index}! Click http://pills{index % 7}.example.biz/buy"
        subject = f"Cheap pills offer {index}"
    else:
        text = f"Hi team, the meeting notes for sprint {index} are attached; see the wiki for the agenda."
        subject = f"Sprint {index} notes"
    return (
        f"From: {kind}{index % 5}@{kind}.example\nSubject: {subject}\nMessage-ID: <{kind}{index}@x>\n"
        f"Date: Mon, 1 Jan 2024 00:00:00 +0000\n\n{text}\n"
    ).encode()


def maildir(root: Path, kind: str, count: int, start: int = 0) -> Path:
    for sub in ("cur", "new", "tmp"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    for index in range(start, start + count):
        (root / "cur" / f"{index}.{kind}:2,S").write_bytes(message(index, kind))
    return root


@pytest.fixture
def data_dir(tmp_path: Path) -> Path:
    return tmp_path / "var"


def test_learn_maildir_file_and_mbox(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path
) -> None:
    spam_dir = maildir(tmp_path / "spam", "spam", 30)
    code, out, err = run(capsys, "learn", "--spam", str(spam_dir), "--data-dir", str(data_dir))
    assert code == 0, err
    assert out.strip() == "learned 30, already learned 0, moved 0, unreadable 0"
    assert err == ""  # no progress bar when standard error is not a terminal

    mbox = tmp_path / "ham.mbox"
    mbox.write_bytes(
        b"".join(b"From x@y Mon Jan  1 00:00:00 2024\n" + message(i, "ham") + b"\n" for i in range(20))
    )
    code, out, _err = run(capsys, "learn", "--ham", str(mbox), "--data-dir", str(data_dir))
    assert out.strip() == "learned 20, already learned 0, moved 0, unreadable 0"

    one = spam_dir / "cur" / "3.spam:2,S"
    code, out, _err = run(capsys, "learn", "--spam", str(one), "--data-dir", str(data_dir))
    assert out.strip() == "learned 0, already learned 1, moved 0, unreadable 0"
    code, out, _err = run(capsys, "learn", "--ham", str(one), "--data-dir", str(data_dir))
    assert out.strip() == "learned 0, already learned 0, moved 1, unreadable 0"
    code, out, _err = run(capsys, "learn", "--forget", str(one), str(one), "--data-dir", str(data_dir))
    assert out.strip() == "forgotten 1, not learned 1, unreadable 0"

    store = SqliteTokenStore(data_dir / "spam" / "tokens.sqlite")
    assert store.totals() == Totals(29, 20)
    store.close()


def test_learn_for_a_user(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path) -> None:
    spam_dir = maildir(tmp_path / "spam", "spam", 5)
    code, _out, err = run(
        capsys, "learn", "--spam", str(spam_dir), "--user", "Bob@Example.COM", "--data-dir", str(data_dir)
    )
    assert code == 0, err
    store = SqliteTokenStore(data_dir / "spam" / "tokens.sqlite")
    assert store.totals("bob@example.com") == Totals(5, 0)
    assert store.totals() == Totals(5, 0)
    store.close()


def test_score_text_and_json(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path) -> None:
    spam_filter = SpamFilter.open(data_dir)
    list(spam_filter.learn_many([message(i, "spam") for i in range(210)], "spam"))
    list(spam_filter.learn_many([message(i, "ham") for i in range(210)], "ham"))
    spam_filter.close()
    spam_file = tmp_path / "spam.eml"
    spam_file.write_bytes(message(999, "spam"))
    ham_file = tmp_path / "ham.eml"
    ham_file.write_bytes(message(999, "ham"))

    code, out, err = run(
        capsys, "score", "--json", str(spam_file), str(ham_file), "--data-dir", str(data_dir)
    )
    assert code == 0, err
    spam_json, ham_json = (json.loads(line) for line in out.splitlines())
    assert spam_json["path"] == str(spam_file)
    assert spam_json["verdict"] == "spam"
    assert spam_json["score"] >= 5.0
    assert "BAYES_999" in spam_json["tests"]
    assert spam_json["bayes"] > 0.99
    assert spam_json["tokens"][0]["probability"] > 0.9
    assert ham_json["verdict"] == "ham"
    assert "BAYES_00" in ham_json["tests"]

    code, out, err = run(capsys, "score", str(spam_file), "--data-dir", str(data_dir))
    assert code == 0, err
    assert out.startswith(f"{spam_file}: ")
    assert "spam (required 5.0)" in out
    assert "token:" in out


def test_score_without_a_store_has_no_bayes(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"Subject: hi\n\nhello\n")
    data_dir = tmp_path / "var"
    code, out, _err = run(capsys, "score", "--json", str(eml), "--data-dir", str(data_dir))
    assert code == 0
    assert json.loads(out)["bayes"] is None
    assert not (data_dir / "spam" / "tokens.sqlite").exists()  # scoring makes no database


def test_stats(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path) -> None:
    code, out, _err = run(capsys, "spam", "stats", "--data-dir", str(data_dir))
    assert code == 0
    assert "nothing learned" in out
    run(capsys, "learn", "--spam", str(maildir(tmp_path / "s", "spam", 3)), "--data-dir", str(data_dir))
    code, out, _err = run(capsys, "spam", "stats", "--json", "--data-dir", str(data_dir))
    stats = json.loads(out)
    assert (stats["spam"], stats["ham"]) == (3, 0)
    assert stats["tokens"] > 10
    assert stats["size_bytes"] > 0
    code, out, _err = run(capsys, "spam", "stats", "--data-dir", str(data_dir))
    assert "spam learned:  3" in out


def test_bad_input(capsys: pytest.CaptureFixture[str], tmp_path: Path, data_dir: Path) -> None:
    assert_usage_error(*run(capsys, "learn", "--spam", str(tmp_path / "missing")), "no such file")
    assert_usage_error(*run(capsys, "score", str(tmp_path / "missing")), "no such file")
    with pytest.raises(SystemExit) as exited:
        main(["learn", str(tmp_path)])
    assert exited.value.code == 2
    assert "one of the arguments --spam --ham --forget is required" in capsys.readouterr().err
    broken = tmp_path / "broken"
    (broken / "spam").mkdir(parents=True)
    (broken / "spam" / "tokens.sqlite").write_bytes(b"not a database" * 1000)
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"Subject: x\n\ny\n")
    assert_usage_error(*run(capsys, "learn", "--ham", str(eml), "--data-dir", str(broken)), "tokens.sqlite")
    assert_usage_error(*run(capsys, "spam", "stats", "--data-dir", str(broken)), "tokens.sqlite")


def test_garbage_messages_are_scored(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.bin"
    garbage.write_bytes(bytes(range(256)) * 100)
    code, out, err = run(capsys, "score", "--json", str(garbage), "--data-dir", str(tmp_path / "var"))
    assert code == 0, err
    assert json.loads(out)["verdict"] in ("spam", "ham")


def test_the_configuration_names_the_store_and_the_settings(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """``--config`` is the server's file: the commands use the store and settings the server uses."""
    store = tmp_path / "elsewhere" / "bayes.sqlite"
    config = tmp_path / "serve.toml"
    config.write_text(
        f'[server]\ndata_dir = "{tmp_path / "var"}"\n\n'
        f'[spam]\nstore = "{store}"\nrequired = 1.5\nmin_spam = 3\nmin_ham = 3\n'
    )
    code, out, err = run(
        capsys, "learn", "--spam", str(maildir(tmp_path / "s", "spam", 3)), "--config", str(config)
    )
    assert code == 0, err
    run(capsys, "learn", "--ham", str(maildir(tmp_path / "h", "ham", 3)), "--config", str(config))
    assert store.exists() and not (tmp_path / "var").exists()

    eml = tmp_path / "m.eml"
    eml.write_bytes(message(99, "spam"))
    code, out, err = run(capsys, "score", "--json", str(eml), "--config", str(config))
    scored = json.loads(out)
    assert scored["required"] == 1.5 and scored["bayes"] is not None  # three of each are enough here

    code, out, err = run(capsys, "spam", "stats", "--json", "--config", str(config))
    assert json.loads(out)["database"] == str(store) and json.loads(out)["spam"] == 3

    # --data-dir wins over the file's data_dir (the store named in the file stays).
    code, out, err = run(
        capsys, "spam", "stats", "--json", "--config", str(config), "--data-dir", str(tmp_path)
    )
    assert json.loads(out)["database"] == str(store)


def test_a_bad_configuration_is_one_line(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "serve.toml"
    config.write_text('[spam]\nstore = "tokens.sqlite"\n')
    assert_usage_error(*run(capsys, "spam", "stats", "--config", str(config)), "[spam] store")
    assert_usage_error(*run(capsys, "spam", "stats", "--config", str(tmp_path / "none.toml")), "cannot read")


def test_learn_and_score_in_redis(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, redis_server: RedisServer
) -> None:
    flush(redis_server.url)
    config = tmp_path / "serve.toml"
    config.write_text(f'[spam]\nstore = "{redis_server.url}"\nmin_spam = 3\nmin_ham = 3\n')
    run(capsys, "learn", "--spam", str(maildir(tmp_path / "s", "spam", 3)), "--config", str(config))
    code, out, err = run(
        capsys, "learn", "--ham", str(maildir(tmp_path / "h", "ham", 3)), "--config", str(config)
    )
    assert (code, out.strip()) == (0, "learned 3, already learned 0, moved 0, unreadable 0"), err
    eml = tmp_path / "m.eml"
    eml.write_bytes(message(99, "spam"))
    code, out, err = run(capsys, "score", "--json", str(eml), "--config", str(config))
    assert json.loads(out)["bayes"] > 0.9
    code, out, err = run(capsys, "spam", "stats", "--config", str(config))
    assert f"database:      {redis_server.url}\n" in out and "spam learned:  3" in out
    assert not (tmp_path / "var").exists()
