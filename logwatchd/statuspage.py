"""The status page at `/`: the overview (overview.py) and the health checks as one HTML page.

No external asset and no inline script or style (the page is served with a strict
Content-Security-Policy); its one script (`/static/status.js`) only refreshes it, so the
page reads the same without JavaScript. Every value goes through `html.escape`: file
names, reasons and errors come from outside.

Each figure carries `data-stat="<path in /stats>"`, so a test can read the page back and
compare it with /stats number by number.
"""

from __future__ import annotations

from html import escape
from typing import Any

REFRESH_SECONDS = 10


def _e(value: Any) -> str:
    return escape("—" if value is None else str(value), quote=True)


def _num(stats: dict[str, Any], path: str) -> str:
    value: Any = stats
    for part in path.split("."):
        value = value[part]
    return f'<span data-stat="{_e(path)}">{_e(_fmt(value))}</span>'


def _fmt(value: Any) -> Any:
    if isinstance(value, bool) or value is None:
        return {True: "yes", False: "no", None: None}[value]
    return value


def _table(head: list[str], rows: list[list[str]], empty: str) -> str:
    if not rows:
        return f"<p class=empty>{_e(empty)}</p>"
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{th}</tr></thead><tbody>{body}</tbody></table>"


def chart(throughput: dict[str, Any], width: int = 600, height: int = 100) -> str:
    """Records per minute over the last hour as an inline SVG bar chart (one bar a minute)."""
    records, files = throughput["records"], throughput["files"]
    n = len(records)
    top = max(records + [1])
    bar = width / n
    rects = []
    for i, (r, f) in enumerate(zip(records, files, strict=True)):
        h = 0 if not r else max(1.0, height * r / top)
        ago = n - 1 - i
        label = f"{ago} min ago: {r} records in {f} files" if ago else f"this minute: {r} records in {f} files"
        rects.append(f'<rect x="{i * bar:.1f}" y="{height - h:.1f}" width="{bar * 0.8:.1f}" '
                     f'height="{h:.1f}"><title>{_e(label)}</title></rect>')
    total = sum(records)
    return (f'<svg class=chart role="img" viewBox="0 0 {width} {height}" width="{width}" '
            f'height="{height}" aria-label="{_e(f"{total} records in the last hour")}">'
            f'<line x1="0" y1="{height}" x2="{width}" y2="{height}"></line>{"".join(rects)}</svg>'
            f'<p class=small>{_e(total)} records, {_e(sum(files))} files in the last '
            f'{_e(n)} minutes; busiest minute {_e(max(records + [0]))} records.</p>')


def render(stats: dict[str, Any], health: dict[str, Any] | None, source: str) -> str:
    """The page. `health` is /healthz's answer (None when not known: the daemon is down)."""
    if health is None:
        state, state_class, reasons = "unknown (the daemon is not running)", "unknown", []
    else:
        ok = health["status"] == "ok"
        state, state_class, reasons = ("healthy" if ok else "failing"), ("ok" if ok else "bad"), health["reasons"]
    parts: list[str] = []
    parts.append(f'<section><h2>Health: <span class="{state_class}" data-stat="health">{_e(state)}</span></h2>')
    if reasons:
        parts.append("<ul class=reasons>" + "".join(f"<li>{_e(r)}</li>" for r in reasons) + "</ul>")
    parts.append(
        "<dl>"
        f"<dt>Backlog</dt><dd>{_num(stats, 'backlog')} files waiting; the oldest for "
        f"{_num(stats, 'oldest_waiting_age_seconds')} s</dd>"
        f"<dt>Failing files</dt><dd>{_num(stats, 'failing_files')}; the oldest failing for "
        f"{_num(stats, 'oldest_failing_age_seconds')} s</dd>"
        f"<dt>Intake paused</dt><dd>{_num(stats, 'intake_paused')}</dd>"
        f"<dt>Last success</dt><dd>{_num(stats, 'last_success_at')}</dd>"
        f"<dt>Started</dt><dd>{_num(stats, 'started_at')} (up {_num(stats, 'uptime_seconds')} s)</dd>"
        "</dl></section>")

    outcome_rows = [[_e(k.replace("_", " ")), _num(stats, f"today.files.{k}"), _num(stats, f"files.{k}")]
                    for k in stats["files"]]
    record_rows = [[_e(k), _num(stats, f"today.records.{k}"), _num(stats, f"records.{k}")]
                   for k in stats["records"]]
    parts.append(
        f"<section><h2>Today ({_num(stats, 'today.date')}, {_num(stats, 'today.timezone')})</h2>"
        '<div class=cols><div><h3>Files</h3>'
        + _table(["outcome", "today", "all time"], outcome_rows, "")
        + "</div><div><h3>Records</h3>"
        + _table(["", "today", "all time"], record_rows, "")
        + f"<p>Error ratio today: {_num(stats, 'today.error_ratio')}</p></div></div></section>")

    parts.append("<section><h2>Throughput, last hour</h2>" + chart(stats["throughput"]) + "</section>")

    recent = [[_e(f["at"]), _e(f["file"]), f'<span class="o-{_e(f["outcome"])}">{_e(f["outcome"])}</span>',
               _e(f["processed"]), _e(f["valid"]), _e(f["errors"]),
               _e(f["duration_ms"]), _e(f["reason"])] for f in stats["recent_files"]]
    parts.append("<section><h2>Last files</h2>"
                 + _table(["committed", "file", "outcome", "records", "valid", "errors",
                           "ms", "reason"], recent, "No file processed yet.") + "</section>")

    failing = [[_e(f["file"]), _e(f["failures"]), _e(f["first_failed_at"]), _e(f["last_error"])]
               for f in stats["failing"]]
    parts.append("<section><h2>Failing files</h2>"
                 + _table(["file", "failures", "first failed", "last error"], failing,
                          "No file is failing.") + "</section>")

    for key, title in (("quarantine", "Quarantine"), ("dead_letter", "Dead-letter")):
        block = stats[key]
        rows = [[_e(f["file"]), _e(f["reason"]), _e(f["detail"]), _e(f["at"]),
                 f'<code>{_e(f["replay"])}</code>'] for f in block["files"]]
        parts.append(f"<section><h2>{title}: {_num(stats, f'{key}.count')} files</h2>"
                     + _table(["file", "reason", "detail", "at", "to try again"], rows,
                              "Empty.") + "</section>")

    parts.append(
        "<section><h2>Compaction</h2><dl>"
        f"<dt>Live data files</dt><dd>{_num(stats, 'catalog.live_files')} in "
        f"{_num(stats, 'catalog.partitions')} partitions; {_num(stats, 'catalog.small_files')} small, "
        f"{_num(stats, 'catalog.partitions_due')} partitions due for merging</dd>"
        f"<dt>Since start-up</dt><dd>{_num(stats, 'compaction.runs')} merges, "
        f"{_num(stats, 'compaction.files_in')} files into {_num(stats, 'compaction.files_out')}, "
        f"{_num(stats, 'compaction.rows')} rows, {_num(stats, 'compaction.seconds')} s</dd>"
        "</dl></section>")

    body = "".join(parts)
    return (
        "<!DOCTYPE html>\n<html lang=en><head><meta charset=utf-8>"
        '<meta name=viewport content="width=device-width, initial-scale=1">'
        "<title>logwatchd status</title>"
        '<link rel=icon href="data:,">'
        '<link rel=stylesheet href="static/status.css">'
        '<script src="static/status.js" defer></script>'
        f'</head><body data-refresh="{REFRESH_SECONDS}"><header><h1>logwatchd</h1>'
        f'<p class=small>From {_e(source)}. <a href="stats">/stats</a> · <a href="healthz">/healthz</a> · '
        '<a href="metrics">/metrics</a> · <a href="docs">/docs</a>'
        '<span id=refresh></span></p></header>'
        f"<main>{body}</main></body></html>\n")
