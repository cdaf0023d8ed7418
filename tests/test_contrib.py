"""contrib/: the Prometheus alert rules (promtool) and the Grafana dashboard, against a real daemon and a real Prometheus."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import urllib.parse
import urllib.request
from pathlib import Path

import pytest
from conftest import REPO, Env
from daemon_harness import DaemonProc, api_url, daemon_config, drop, free_port

RULES = REPO / "contrib" / "prometheus" / "alerts.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "alerts_test.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "logwatchd.json"
PROMTOOL = shutil.which("promtool")
PROMETHEUS = shutil.which("prometheus")
need_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package "
                                   "`prometheus`; .ci/run installs it as root)")
need_prometheus = pytest.mark.skipif(PROMETHEUS is None, reason="prometheus not installed (Debian "
                                     "package `prometheus`; .ci/run installs it as root)")
# Names in PromQL that are functions, keywords or labels, not series.
_SERIES = re.compile(r"\b((?:logwatchd|process|python)_[a-z0-9_]+)\b")


def get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as r:
        return r.read().decode()


def exported_series(metrics_text: str) -> set[str]:
    """Every series name in a Prometheus text exposition (with _total, _bucket, … suffixes)."""
    return {line.split("{")[0].split(" ")[0] for line in metrics_text.splitlines()
            if line and not line.startswith("#")}


def dashboard_exprs() -> list[str]:
    doc = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in doc["panels"] for t in p.get("targets", [])]
    exprs += [v["query"] for v in doc["templating"]["list"] if v.get("type") == "query"]
    return exprs


@need_promtool
def test_alert_rules_are_valid() -> None:
    """`promtool check rules` accepts contrib/prometheus/alerts.yml."""
    proc = subprocess.run(check=False, args=[PROMTOOL, "check", "rules", str(RULES)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "SUCCESS: 7 rules found" in proc.stdout


@need_promtool
def test_alert_rules_pass_their_unit_tests_and_the_tests_can_fail(tmp_path: Path) -> None:
    """`promtool test rules` passes, and fails once a bound of the rules is changed."""
    proc = subprocess.run(check=False, args=[PROMTOOL, "test", "rules", str(RULE_TESTS)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    # The same tests against rules with the backlog bound moved: they must notice.
    shutil.copy(RULE_TESTS, tmp_path / RULE_TESTS.name)
    text = RULES.read_text()
    assert text.count("logwatchd_oldest_waiting_file_age_seconds{job=\"logwatchd\"} > 600") == 1
    (tmp_path / RULES.name).write_text(text.replace(
        "logwatchd_oldest_waiting_file_age_seconds{job=\"logwatchd\"} > 600",
        "logwatchd_oldest_waiting_file_age_seconds{job=\"logwatchd\"} > 6000"))
    proc = subprocess.run(check=False, args=[PROMTOOL, "test", "rules", RULE_TESTS.name], capture_output=True,
                          text=True, cwd=tmp_path)
    assert proc.returncode != 0 and "LogwatchdBacklogTooOld" in proc.stdout + proc.stderr


def test_dashboard_and_rules_name_only_series_the_daemon_exports(env: Env) -> None:
    """Every series named by a dashboard query or an alert rule is in a live daemon's /metrics."""
    daemon_config(env, api=True)
    d = DaemonProc(env)
    try:
        d.wait_ready()
        exported = exported_series(get(api_url(env) + "/metrics"))
    finally:
        assert d.stop() == 0
    exprs = dashboard_exprs()
    assert len(exprs) >= 15
    named = {name for e in exprs + [RULES.read_text()] for name in _SERIES.findall(e)}
    assert {"logwatchd_files_total", "logwatchd_records_total", "logwatchd_backlog_files",
            "logwatchd_file_processing_seconds_bucket"} <= named
    assert named - exported == set(), f"not exported: {sorted(named - exported)}"
    # The check itself can fail: a misspelt series is caught.
    assert "logwatchd_file_total" not in exported


@need_prometheus
def test_a_real_prometheus_scrapes_the_daemon(env: Env, tmp_path: Path) -> None:
    """Debian's Prometheus scrapes a running daemon; logwatchd_files_total reads back through its query API."""
    daemon_config(env, api=True)
    d = DaemonProc(env)
    prom_port = free_port()
    target = api_url(env).removeprefix("http://")
    shutil.copy(RULES, tmp_path / "alerts.yml")
    (tmp_path / "prometheus.yml").write_text(
        "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
        "rule_files: [alerts.yml]\n"
        "scrape_configs:\n"
        f"  - job_name: logwatchd\n    static_configs: [{{targets: ['{target}']}}]\n")
    prom = subprocess.Popen(
        [PROMETHEUS, f"--config.file={tmp_path / 'prometheus.yml'}",
         f"--storage.tsdb.path={tmp_path / 'data'}", f"--web.listen-address=127.0.0.1:{prom_port}"],
        stdout=subprocess.DEVNULL, stderr=open(tmp_path / "prometheus.log", "wb"))  # noqa: SIM115
    api = f"http://127.0.0.1:{prom_port}/api/v1"

    def query(q: str) -> list[dict]:
        body = json.loads(get(f"{api}/query?query={urllib.parse.quote(q)}"))
        assert body["status"] == "success", body
        return body["data"]["result"]

    try:
        d.wait_ready()
        drop(env, "a.jsonl", '{"timestamp": 1700000000, "user_id": 1, "action": "login"}\n')
        drop(env, "b.jsonl", '{"timestamp": 1700000000, "user_id": 2, "action": "login"}\nnope\n')
        d.wait_event("file_processed", 2)
        deadline = time.monotonic() + 60
        value = None
        while time.monotonic() < deadline:
            try:
                result = query('logwatchd_files_total{job="logwatchd", outcome="ok"}')
            except (TimeoutError, OSError):
                result = []
            if result:
                value = float(result[0]["value"][1])
                if value == 2:
                    break
            assert prom.poll() is None, (tmp_path / "prometheus.log").read_text()[-3000:]
            time.sleep(0.5)
        assert value == 2, f"Prometheus read {value}; log:\n{(tmp_path / 'prometheus.log').read_text()[-3000:]}"
        assert float(query('logwatchd_records_total{outcome="error"}')[0]["value"][1]) == 1
        assert query('up{job="logwatchd"}')[0]["value"][1] == "1"
        rules = json.loads(get(f"{api}/rules"))["data"]["groups"]
        assert {r["name"] for g in rules for r in g["rules"]} >= {"LogwatchdDown", "LogwatchdDeadLetters"}
        assert all(r["health"] == "ok" for g in rules for r in g["rules"]), rules
    finally:
        prom.terminate()
        prom.wait(30)
        assert d.stop() == 0
