"""SIGHUP with a config that fails, for any reason, keeps the running daemon and its settings."""

from __future__ import annotations

import json
import signal
import time

from conftest import Env
from daemon_harness import DaemonProc, daemon_config, drop


def test_sighup_with_a_bad_config_keeps_the_old_settings_and_keeps_processing(env: Env) -> None:
    """A reload that fails (an unschedulable interval, a file that is not UTF-8) logs config_reload_failed; nothing changes."""
    daemon_config(env)
    good = env.config.read_text()
    d = DaemonProc(env)
    try:
        d.wait_ready()
        # Would silence info events and stop the 1 s metrics event, if any of it were applied.
        env.config.write_text(good + '\n[logging]\nlevel = "error"\n'
                                     '[compaction]\ninterval_seconds = 1e12\n')
        d.signal(signal.SIGHUP)
        [failed] = d.wait_event("config_reload_failed")
        assert failed["error"] and failed["level"] == "error"
        env.config.write_bytes(good.encode() + b'\n[logging]\nlevel = "\xff"\n')
        d.signal(signal.SIGHUP)
        d.wait_event("config_reload_failed", count=2)
        assert d.proc.poll() is None and not d.named("config_reloaded")

        drop(env, "after.jsonl", json.dumps({"timestamp": 1764000000, "user_id": "u", "action": "login"}) + "\n")
        [done] = d.wait_event("file_processed")  # still logged: the level stayed "info"
        assert done["file"] == "after.jsonl" and done["valid"] == 1
        seen = len(d.named("metrics"))
        time.sleep(3.5)
        assert len(d.named("metrics")) >= seen + 2, "the metrics event keeps its 1 s interval"

        env.config.write_text(good)
        d.signal(signal.SIGHUP)
        d.wait_event("config_reloaded")  # a good config is still taken afterwards
    finally:
        assert d.stop() == 0
