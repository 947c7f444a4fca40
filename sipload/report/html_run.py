"""report.html's account of what ran, for a reader who was not there: the scenario and its load
parameters, the target, the workers and engine, the host and sipload's version (summary.json's ``run``),
and the run's files with what each holds."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sipload import __version__
from sipload.report.htmlkit import e, fmt
from sipload.report.runinfo import describe_load

# What each file of a results directory holds (a name not here is listed without a description).
_FILES = {
    "summary.json": "counts, failures, latency percentiles, rates, thresholds and the run context (JSON)",
    "junit.xml": "one test case per threshold, for CI",
    "endpoints.csv": "the final state of every endpoint (no password)",
    "intervals.jsonl": "one line per interval: bindings held, in flight, counts per interval and cumulative",
    "crosscheck.json": "the provider cross-check",
    "schedule_lag.hlog": "how late operations were sent against the schedule, per interval (HdrHistogram, µs)",
}


def _row(label: str, value: str) -> str:
    return f'<tr><th class="text">{e(label)}</th><td class="text">{e(value)}</td></tr>'


def _count(n: object) -> str:
    return f"{n:,}" if isinstance(n, int) else fmt(n)


def run_section(summary: dict[str, Any]) -> str:
    """The scenario, its parameters, the target, the workers, the engine, the host and sipload's version."""
    rows = [_row("scenario", str(summary.get("scenario", "?"))), _row("target", str(summary.get("target", "?"))),
            _row("started (UTC)", str(summary.get("started_at", "?"))),
            _row("ran for", f"{fmt(float(summary.get('duration_s', 0.0) or 0.0), 1)} s")]
    run = summary.get("run")
    if isinstance(run, dict):
        p, h = _dict(run.get("parameters")), _dict(run.get("host"))
        groups = p.get("groups") or []
        rows += [
            _row("endpoints", _count(p.get("endpoints"))
                 + (f" in {len(groups)} groups: {', '.join(map(str, groups))}" if len(groups) > 1 else "")),
            _row("expiry", f"{fmt(p.get('expires_s'))} s, refreshed at {fmt(100 * float(p.get('refresh_at', 0)))} % "
                           "of the granted expiry"),
            _row("offered load", describe_load(p)),
            _row("max in flight", f"{_count(p.get('max_in_flight'))} registrations at once (for the whole run)"),
            _row("load duration", f"{fmt(p.get('duration_s'))} s, then "
                                  + ("unregister every endpoint" if p.get("unregister") else "no unregistration")),
            _row("workers", f"{fmt(run.get('workers'))} ({run.get('placement', '?')})"),
            _row("engine", _engines(run, summary.get("engines"))),
            _row("host", f"{h.get('name', '?')}: {fmt(h.get('cores'))} cores, {h.get('system', '')} "
                         f"{h.get('kernel', '')} {h.get('machine', '')}, Python {h.get('python', '?')}"),
            _row("sipload", f"{run.get('sipload_version', '?')} (this page rendered by {__version__})"),
        ]
        if p.get("seed") is not None:
            rows.append(_row("seed", str(p["seed"])))
    else:
        rows.append(_row("run context", "not recorded (summary.json written by an older sipload): workers, "
                                        "engine, host and load parameters unknown"))
    return f'<section id="run"><h2>What ran</h2><table class="kv">{"".join(rows)}</table></section>'


def _dict(x: object) -> dict[str, Any]:
    return x if isinstance(x, dict) else {}


def _engines(run: dict[str, Any], engines: object) -> str:
    text = f"{run.get('engine', '?')} (asked: {run.get('engine_requested', '?')})"
    if isinstance(engines, dict) and len(set(engines.values())) > 1:
        text += "; per group: " + ", ".join(f"{g} {eng}" for g, eng in engines.items())
    return text


def files_section(out_dir: Path, skip: str) -> str:
    """Links to the run's files (relative: they open when the page is opened from its directory)."""
    paths = sorted(p for p in out_dir.iterdir() if p.is_file() and not p.name.startswith(".") and p.name != skip)
    items = []
    for path in paths:
        what = _FILES.get(path.name)
        if what is None and path.name.endswith(".service.hlog"):
            what = f"{path.name[:-len('.service.hlog')]} latency from the actual send, per interval (HdrHistogram, µs)"
        elif what is None and path.name.endswith(".hlog"):
            what = f"{path.name[:-len('.hlog')]} latency from the intended start, per interval (HdrHistogram, µs)"
        size = path.stat().st_size
        shown = f"{size:,} bytes" if size < 10_000 else f"{size / 1024:,.0f} KiB"
        items.append(f'<li><a href="{e(path.name)}">{e(path.name)}</a> <span class="meta">{e(shown)}'
                     + (f" · {e(what)}" if what else "") + "</span></li>")
    return (f'<section id="files"><h2>Files</h2><ul>{"".join(items)}</ul>'
            '<p class="note">The links are relative: they open the files beside this report when it is opened '
            "from its run directory. To hand the report on with its data, pass on the whole directory. "
            "<code>sipload report DIR</code> renders this page again from these files, <code>sipload compare "
            "BASE NEW</code> compares two runs.</p></section>")
