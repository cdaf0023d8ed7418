"""Runs the real `logwatchd run` as a subprocess against a test root and watches its JSON logs."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from conftest import Env

from logwatchd.layout import IN_HAND_DIR


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def daemon_config(env: Env, api: bool = False, api_settings: dict[str, Any] | None = None,
                  **sections: dict[str, Any]) -> None:
    """A config for fast tests: short settle and rescan, API off unless asked for."""
    sections.setdefault("api", api_settings or {})
    ingest = {"settle_seconds": 0.3, "rescan_seconds": 2.0} | sections.pop("ingest", {})
    api_table = {"enabled": api} | ({"listen": f"127.0.0.1:{free_port()}"} if api else {})
    api_table |= sections.pop("api", {})
    metrics = {"interval_seconds": 1.0} | sections.pop("metrics", {})
    env.write_config(ingest=ingest, api=api_table, metrics=metrics, **sections)


def api_url(env: Env) -> str:
    """`http://HOST:PORT` of the endpoint the test's config listens on."""
    return "http://" + env.config.read_text().split('listen = "')[1].split('"')[0]


def api_port(env: Env) -> int:
    return int(api_url(env).rsplit(":", 1)[1])


class DaemonProc:
    """`logwatchd run` in a subprocess; its stdout (JSON lines) goes to a file we can read."""

    def __init__(self, env: Env, extra_env: dict[str, str] | None = None,
                 prefix: tuple[str, ...] = ()) -> None:
        self.env = env
        self.log_path = env.base / f"daemon-{time.monotonic_ns()}.log"
        self.err_path = self.log_path.with_suffix(".err")
        self._out = open(self.log_path, "wb")  # noqa: SIM115 - the daemon's stdout while it lives
        self._err = open(self.err_path, "wb")  # noqa: SIM115 - and its stderr
        environ = dict(os.environ) | {"PYTHONUNBUFFERED": "1"} | (extra_env or {})
        self.proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "logwatchd", "run", "-c", str(env.config)],
            stdout=self._out, stderr=self._err, cwd=env.base, env=environ, start_new_session=True)

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log_path.read_text(errors="replace").splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return out

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events() if e.get("event") == name]

    def wait_for(self, cond: Callable[[], Any], timeout: float = 60, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            got = cond()
            if got:
                return got
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited {self.proc.returncode} waiting for {what}\n{self.tail()}")
            time.sleep(0.05)
        raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{self.tail()}")

    def wait_event(self, name: str, count: int = 1, timeout: float = 60) -> list[dict[str, Any]]:
        def enough() -> list[dict[str, Any]] | None:
            events = self.named(name)
            return events if len(events) >= count else None

        return self.wait_for(enough, timeout, f"{count} x {name}")

    def wait_ready(self, timeout: float = 60) -> None:
        self.wait_event("daemon_started", timeout=timeout)

    def wait_inbox_empty(self, timeout: float = 120) -> None:
        """Until no file waits in the inbox, nor is in hand (in its hidden IN_HAND_DIR)."""
        inbox = self.env.inbox
        self.wait_for(lambda: not any(p for p in inbox.iterdir()
                                      if not p.name.startswith(".") or p.name == IN_HAND_DIR),
                      timeout, "an empty inbox")

    def tail(self, n: int = 30) -> str:
        lines = self.log_path.read_text(errors="replace").splitlines()[-n:]
        return "\n".join(lines) + "\n--- stderr ---\n" + self.err_path.read_text(errors="replace")[-4000:]

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    def stop(self, timeout: float = 15) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        self._close()
        return self.proc.returncode

    def kill(self) -> None:
        """SIGKILL the daemon and its worker processes (its whole session)."""
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(30)
        self._close()

    def _close(self) -> None:
        self._out.close()
        self._err.close()


def drop(env: Env, name: str, data: str | bytes) -> Path:
    """Drops a file the recommended way: written under a temporary name, renamed into the inbox."""
    env.inbox.mkdir(parents=True, exist_ok=True)
    tmp = env.inbox / f".{name}.part"
    tmp.write_bytes(data.encode() if isinstance(data, str) else data)
    final = env.inbox / name
    os.rename(tmp, final)
    return final
