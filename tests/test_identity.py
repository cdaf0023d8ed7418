"""A file is known by what it is, not by its name or path: a file renamed over the one in
hand is its own input (also with dedupe off), and a copied root is independent of its
original, since the ledger records paths relative to `paths.root`."""

from __future__ import annotations

import os
import shutil
import sqlite3

from conftest import Env, jsonl, write

from logwatchd.config import load_config
from logwatchd.pipeline import Pipeline
from logwatchd.runtime import open_runtime


def big_file(n: int) -> str:
    return jsonl(*({"timestamp": 1764000000 + i, "user_id": f"u{i}", "action": "login"}
                   for i in range(n)))


def test_same_content_renamed_over_the_file_in_hand_is_processed_too_with_dedupe_off(env: Env) -> None:
    """With dedupe off, a same-content file renamed over the input mid-way is not archived as
    if processed: it stays in the inbox and is processed as its own input."""
    env.write_config(ingest={"dedupe": False})
    config = load_config(env.config)
    data = big_file(40_000)  # ~3 MB: hashing calls the progress hook every MiB
    path = write(env.inbox / "a.jsonl", data)
    replaced: list[bool] = []

    def rename_over() -> None:
        if not replaced:
            replaced.append(True)
            other = write(env.base / "b.jsonl", data)
            os.rename(other, path)

    rt = open_runtime(config)
    try:
        first = Pipeline(config, rt.ledger, progress=rename_over).process(path)
        assert replaced and first.status == "ok" and first.valid == 40_000
        assert path.exists(), "the file renamed over the input was not taken for it"
        second = Pipeline(config, rt.ledger).process(path)
        assert second.status == "ok" and second.valid == 40_000
    finally:
        rt.close()
    assert not path.exists()
    assert len(env.clean_rows()) == 80_000
    # The first input was in hand (out of the inbox name) when the other was renamed in:
    # both are archived, each once.
    [day] = env.path("archive").iterdir()
    assert [p.read_text() for p in day.iterdir()] == [data, data]


def test_a_copied_root_does_not_touch_the_original(env: Env) -> None:
    """`cp -a A B` then compacting B deletes nothing of A; both verify clean."""
    env.write_config(compaction={"min_files": 2})
    for i in range(4):
        env.process(write(env.inbox / f"f{i}.jsonl", big_file(50 + i)))
    copy = Env(env.base.parent / (env.base.name + "-copy"))
    shutil.copytree(env.base, copy.base, symlinks=True)
    before = sorted(p.relative_to(env.root) for p in env.root.rglob("*.parquet"))
    out = copy.cli("compact")
    assert '"files_in":4' in out.stdout.replace(" ", "")
    assert sorted(p.relative_to(env.root) for p in env.root.rglob("*.parquet")) == before
    for e in (env, copy):
        assert e.cli("verify", check=False).returncode == 0, e.cli("verify", check=False).stdout
        paths = [r[0] for r in sqlite3.connect(e.path("state") / "ledger.sqlite3").execute(
            "SELECT path FROM outputs")]
        assert paths and not any(os.path.isabs(p) for p in paths)
    assert len(copy.clean_rows()) == len(env.clean_rows()) == sum(50 + i for i in range(4))
