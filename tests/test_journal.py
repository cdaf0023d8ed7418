"""The ledger's journal publishing staged outputs (`Ledger.complete`): renamed in their own
directory, the directory fsynced, idempotent after a crash at any point of it.

The crash itself is exercised against the real process in test_failpoints.py; these pin
what recovery must do with the state a crash leaves, which a test of the process cannot see:
which directories reach the disk.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from logwatchd import durable
from logwatchd.ledger import Commit, Ledger, Move, Output


@pytest.fixture
def ledger(tmp_path: Path) -> Ledger:
    ledger = Ledger.open(tmp_path / "state" / "ledger.sqlite3", root=tmp_path)
    yield ledger
    ledger.close()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every directory fsynced through durable.fsync_dir, as text."""
    seen: list[str] = []
    real = durable.fsync_dir

    def spy(path: Path | str) -> None:
        seen.append(str(path))
        real(path)

    monkeypatch.setattr(durable, "fsync_dir", spy)
    return seen


def _staged_outputs(root: Path, days: list[str]) -> list[Output]:
    outs = []
    for day in days:
        final = root / "clean" / f"date={day}" / "abc-0.parquet"
        final.parent.mkdir(parents=True, exist_ok=True)
        staged = final.with_name(".abc-0.parquet.tmp")
        staged.write_bytes(day.encode())
        outs.append(Output(final, staged, "clean", day, 1, 10))
    return outs


def test_staged_outputs_are_published_and_their_directories_fsynced(
        tmp_path: Path, ledger: Ledger, fsynced: list[str]) -> None:
    outs = _staged_outputs(tmp_path, [f"2020-01-{d:02d}" for d in range(1, 21)])
    txn = ledger.commit(Commit("abc", "a.jsonl", "ok", outputs=outs))
    assert ledger.complete(txn) == []
    for o in outs:
        assert o.path.read_bytes() == o.date.encode() and not o.staged.exists()
    assert {str(o.path.parent) for o in outs} <= set(fsynced)
    assert not ledger.pending()


def test_an_output_renamed_before_a_crash_still_has_its_directory_fsynced(
        tmp_path: Path, ledger: Ledger, fsynced: list[str]) -> None:
    """A crash after a rename, before the fsync of its directory: the rename may not be on
    disk yet, so recovery fsyncs that directory even though it has nothing left to rename."""
    outs = _staged_outputs(tmp_path, ["2020-01-01", "2020-01-02"])
    txn = ledger.commit(Commit("abc", "a.jsonl", "ok", outputs=outs))
    outs[0].staged.rename(outs[0].path)  # what the crashed process had done
    assert ledger.complete(txn) == []
    assert all(o.path.exists() and not o.staged.exists() for o in outs)
    assert str(outs[0].path.parent) in fsynced and str(outs[1].path.parent) in fsynced
    assert not ledger.pending()


def test_a_partition_deleted_by_hand_before_recovery_does_not_stop_the_rest(
        tmp_path: Path, ledger: Ledger) -> None:
    outs = _staged_outputs(tmp_path, ["2020-01-01", "2020-01-02"])
    txn = ledger.commit(Commit("abc", "a.jsonl", "ok", outputs=outs))
    outs[0].staged.unlink()
    outs[0].staged.parent.rmdir()
    assert ledger.complete(txn) == []
    assert outs[1].path.exists() and not outs[0].path.parent.exists()
    assert not ledger.pending()


def test_a_move_across_directories_still_takes_the_checked_path(
        tmp_path: Path, ledger: Ledger) -> None:
    """An input's move (another directory, its identity checked) is not a staged output's:
    a different file renamed over the input's name meanwhile is left where it is."""
    inbox, archive = tmp_path / "inbox", tmp_path / "archive"
    inbox.mkdir()
    src = inbox / "a.jsonl"
    src.write_bytes(b"{}\n")
    ident = f"{src.stat().st_dev}:{src.stat().st_ino}"
    other = inbox / "other"
    other.write_bytes(b"another file\n")
    other.rename(src)  # another file (inode) under the input's name
    txn = ledger.commit(Commit("abc", "a.jsonl", "ok",
                               moves=[Move(src, archive / "a.jsonl", None, ident)]))
    assert ledger.complete(txn) == []
    assert src.read_bytes() == b"another file\n" and not (archive / "a.jsonl").exists()


def test_an_input_archived_before_a_crash_still_has_both_directories_fsynced(
        tmp_path: Path, ledger: Ledger, fsynced: list[str]) -> None:
    inbox, archive = tmp_path / "inbox", tmp_path / "archive" / "date=2020-01-01"
    inbox.mkdir()
    archive.mkdir(parents=True)
    src = inbox / "a.jsonl"
    src.write_bytes(b"{}\n")
    ident = f"{src.stat().st_dev}:{src.stat().st_ino}"
    txn = ledger.commit(Commit("abc", "a.jsonl", "ok",
                               moves=[Move(src, archive / "a.jsonl", None, ident, keep=True)]))
    src.rename(archive / "a.jsonl")  # what the crashed process had done
    assert ledger.complete(txn) == []
    assert {str(inbox), str(archive)} <= set(fsynced)
    assert not ledger.pending()
