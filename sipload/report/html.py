"""report.html: one self-contained page (inline CSS and SVG plots, no script, no remote font or image)
rendered from the files of a results directory only, so the end of a run and `sipload report DIR`
produce the same page from the same files.

`write_report(out_dir)` reads summary.json, the .hlog files, intervals.jsonl (optional: bindings held,
failures and retransmissions over time, and the capacity analysis of a stepped load) and a cross-check
(summary.json's `crosscheck` entry or crosscheck.json), then writes report.html atomically.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sipload.metrics.phases import Histogram, Kind
from sipload.report import plots
from sipload.report.capacity import Capacity, analyze
from sipload.report.html_run import files_section, run_section
from sipload.report.htmlkit import e, figure, fmt, table, verdict_cell
from sipload.report.intervals import INTERVALS
from sipload.report.saved import LAG_LOG, LogInterval, SavedRun, load_run, log_name
from sipload.report.writers import _atomic, threshold_message, threshold_value
from sipload.thresholds import ThresholdResult

REPORT = "report.html"
_STATS = ("p50", "p90", "p95", "p99", "p99.9", "max", "mean")
_COUNTED = (("register", "registrations"), ("refresh", "refreshes"), ("unregister", "unregistrations"))

_CSS = """
:root { --pass: #1b7f3b; --fail: #c62828; --muted: #5f6368; --line: #dadce0; }
* { box-sizing: border-box; }
body { font-family: system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif; margin: 0;
       color: #202124; background: #fff; line-height: 1.4; }
header { padding: 16px 24px; border-bottom: 1px solid var(--line); display: flex; gap: 24px;
         align-items: center; flex-wrap: wrap; }
header h1 { font-size: 20px; margin: 0; }
main { padding: 8px 24px 32px; max-width: 1280px; }
section { margin-top: 24px; }
h2 { font-size: 17px; border-bottom: 1px solid var(--line); padding-bottom: 4px; }
h3 { font-size: 14px; margin-bottom: 4px; }
.verdict { font-weight: 700; font-size: 18px; padding: 6px 14px; border-radius: 6px; color: #fff; }
span.verdict.pass { background: var(--pass); color: #fff; } span.verdict.fail { background: var(--fail); color: #fff; }
.meta { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; font-size: 13px; margin: 6px 0 10px; }
th, td { border: 1px solid var(--line); padding: 3px 8px; text-align: right; }
th:first-child, td:first-child, td.text, th.text { text-align: left; }
thead th { background: #f1f3f4; }
td.pass, span.pass { color: var(--pass); font-weight: 600; }
td.fail, span.fail { color: var(--fail); font-weight: 600; }
tr.fail td { background: #fdecea; } tr.knee td { background: #e6f4ea; }
figure.plot { margin: 8px 0 16px; } figure.plot svg { max-width: 100%; height: auto; display: block; }
figcaption { color: var(--muted); font-size: 12px; }
.note { color: var(--muted); font-size: 13px; }
p.capacity { margin: 0; padding: 10px 24px; background: #e8f0fe; border-bottom: 1px solid var(--line); }
table.kv th { background: #f1f3f4; text-align: left; font-weight: 600; white-space: nowrap; }
ul.notes li { margin: 2px 0; }
code { background: #f1f3f4; padding: 0 3px; border-radius: 3px; }
"""


def write_report(out_dir: Path) -> Path:
    """Render report.html from the files in `out_dir`; returns its path. Raises ResultsError when the
    directory has no readable summary.json."""
    run = load_run(out_dir)
    page = render(run)
    path = run.out_dir / REPORT
    with _atomic(path) as f:
        f.write(page)
    return path


def _thresholds(summary: dict[str, Any]) -> list[ThresholdResult]:
    out = []
    for t in summary.get("thresholds", []):
        if isinstance(t, dict):
            value = t.get("value")
            out.append(ThresholdResult(str(t.get("expr", "")), None if value is None else float(value),
                                       bool(t.get("passed")), str(t.get("why") or "")))
    return out


# ------------------------------------------------------------------------------------------ sections

def _header(run: SavedRun, cap: Capacity | None) -> str:
    s = run.summary
    passed = bool(s.get("passed"))
    complete = bool(s.get("complete", True))
    label = "PASS" if passed else ("INCOMPLETE" if not complete else "FAIL")
    n_fail = sum(1 for t in _thresholds(s) if not t.passed)
    n_all = len(s.get("thresholds", []))
    rate = s.get("rate", {}) if isinstance(s.get("rate"), dict) else {}
    return (
        f'<header><h1>sipload: {e(s.get("scenario", "?"))}</h1>'
        f'<span class="verdict {"pass" if passed else "fail"}" id="verdict">{label}</span>'
        f'<span class="meta">{n_all - n_fail}/{n_all} thresholds met · target {e(s.get("target", "?"))} · '
        f'started {e(s.get("started_at", "?"))} · {fmt(float(s.get("duration_s", 0.0)), 1)} s · '
        f'{e(s.get("endpoints", "?"))} endpoints · offered {fmt(rate.get("offered"), 1)}/s, '
        f'achieved {fmt(rate.get("achieved"), 1)}/s</span></header>'
        + ("" if cap is None else f'<p id="capacity-verdict" class="capacity"><strong>Capacity:</strong> '
                                  f'{e(cap.verdict())} (<a href="#capacity">per step</a>)</p>')
    )


def _summary_section(run: SavedRun) -> str:
    s = run.summary
    parts = ['<section id="summary"><h2>Thresholds</h2>']
    ts = _thresholds(s)
    if ts:
        parts.append(table(
            ["threshold", "value", "result", "detail"],
            [[t.expr, threshold_value(t), verdict_cell(t.passed), "" if t.passed else threshold_message(t)]
             for t in ts],
            row_classes=["" if t.passed else "fail" for t in ts], text_cols=(0, 3),
        ))
    else:
        parts.append('<p class="note">The scenario has no thresholds.</p>')
    if not s.get("complete", True):
        by = s.get("interrupted_by")
        parts.append(f'<p class="fail">The run did not complete{" (interrupted by " + e(by) + ")" if by else ""}: '
                     "it cannot pass.</p>")
    notes = s.get("notes") or []
    if notes:
        parts.append('<h3>Notes</h3><ul class="notes">' + "".join(f"<li>{e(n)}</li>" for n in notes) + "</ul>")
    rows = []
    for phase, key in _COUNTED:
        c = s.get(key, {})
        if not isinstance(c, dict):
            continue
        done = int(c.get("succeeded", 0)) + int(c.get("failed", 0))
        pct = 100.0 * int(c.get("succeeded", 0)) / done if done else None
        rows.append([phase, c.get("attempted", 0), c.get("succeeded", 0), c.get("failed", 0),
                     None if pct is None else round(pct, 3)])
    parts.append("<h3>Operations</h3>")
    parts.append(table(["phase", "attempted", "succeeded", "failed", "success %"], rows))
    lag = s.get("schedule_lag_ms") or {}
    parts.append(
        f'<p class="meta">retransmissions {e(s.get("retransmissions", 0))} · kernel drops '
        f'{e(s.get("kernel_drops", 0))} · schedule lag p50 {fmt(lag.get("p50"))} ms, '
        f'p99 {fmt(lag.get("p99"))} ms, max {fmt(lag.get("max"))} ms</p>'
    )
    fbp = s.get("failures_by_phase") or {}
    if fbp:
        reasons = sorted({r for by in fbp.values() for r in by})
        parts.append("<h3>Failures by phase and reason</h3>")
        parts.append(table(["phase", *reasons, "total"],
                            [[p, *[by.get(r, 0) for r in reasons], sum(by.values())] for p, by in sorted(fbp.items())]))
    else:
        parts.append('<p class="meta">No failures.</p>')
    parts.append("</section>")
    return "".join(parts)


def _latency_section(run: SavedRun) -> str:
    s = run.summary
    parts = ['<section id="latency"><h2>Latency by percentile</h2>']
    rows = []
    for kind_key, kind_label in (("latency_ms", "from intended start"), ("service_ms", "service time")):
        lat = s.get(kind_key) or {}
        for phase in run.phases():
            st = lat.get(phase)
            if isinstance(st, dict):
                rows.append([phase, kind_label, int(st.get("count", 0)), *[st.get(k) for k in _STATS]])
    if rows:
        parts.append(table(["phase", "measured", "count", *[f"{k} (ms)" for k in _STATS]], rows, text_cols=(0, 1)))
    panels = [(p, run.total(log_name(p, Kind.INTENDED)), run.total(log_name(p, Kind.SERVICE))) for p in run.phases()]
    parts.append(figure(
        plots.latency_percentiles(panels),
        "Latency distribution per phase, HdrHistogram style (x: percentile on a log scale). Solid: from the "
        "intended start on the open-loop schedule (free of coordinated omission); dashed: from the actual send.",
        missing="No latency was recorded (no .hlog data).",
    ))
    parts.append("</section>")
    return "".join(parts)


def _per_interval(logs: list[LogInterval]) -> tuple[list[float], list[float]]:
    xs, ys = [], []
    for ivl in logs:
        length = ivl.end_s - ivl.start_s
        xs.append(ivl.end_s)
        ys.append(ivl.histogram.count / length if length > 0 else 0.0)
    return xs, ys


def _pct_series(logs: list[LogInterval], pct: float | None, label: str, style: str, color: str | None
                ) -> plots.Series:
    xs, ys = [], []
    for ivl in logs:
        h: Histogram = ivl.histogram
        if not h.count:
            continue
        xs.append(ivl.end_s)
        ys.append((h.max_us if pct is None else h.percentiles_us((pct,))[pct]) / 1000.0)
    return plots.Series(label, xs, ys, style, color)


def _time_section(run: SavedRun) -> str:
    parts = ['<section id="over-time"><h2>Over time</h2>']
    ivs = run.intervals
    end = float(run.summary.get("duration_s", 0.0) or 0.0)
    rate_series = []
    for phase, label in (("register", "registrations/s"), ("refresh", "refreshes/s"),
                         ("unregister", "unregistrations/s")):
        xs, ys = _per_interval(run.log(phase))
        if any(ys):
            rate_series.append(plots.Series(label, xs, ys))
    if ivs is not None and any(r.offered_per_s for r in ivs.records):
        rate_series.append(plots.Series(
            "offered registrations/s", [r.start for r in ivs.records],
            [r.offered_per_s or 0.0 for r in ivs.records], "--", "#7f7f7f", step=True))
    parts.append(figure(
        plots.time_series("rate-over-time", "completed operations per second", "operations/s", rate_series,
                          xmax=end),
        "Successful operations per interval (from the .hlog interval counts); dashed: the rate the schedule offered.",
        missing="No interval data in the .hlog files.",
    ))
    if ivs is not None and ivs.records:
        recs = ivs.records
        xs = [r.t for r in recs]
        parts.append(figure(
            plots.time_series("bindings-over-time", "bindings held and registrations in flight", "endpoints",
                              [plots.Series("bindings held", xs, [float(r.registered) for r in recs]),
                               plots.Series("in flight", xs, [float(r.in_flight) for r in recs], "--")],
                              xmax=end),
            "Bindings held at the end of each interval (as the endpoints know them) and initial registrations "
            "in flight.",
        ))
        deltas = list(ivs.deltas())
        reasons = sorted({k for d in deltas for k in d.failures})
        fail_series = [plots.Series(f"failures: {r}", xs, [float(d.failures.get(r, 0)) for d in deltas])
                       for r in reasons]
        if not fail_series:
            fail_series = [plots.Series("failures", xs, [0.0 for _ in deltas])]
        parts.append(figure(
            plots.time_series("failures-over-time", "failures and retransmissions per interval", "failures",
                              fail_series,
                              right=[plots.Series("retransmissions", xs, [float(d.retransmissions) for d in deltas],
                                                  ":", "#9467bd")],
                              right_label="retransmissions", xmax=end, counts=True),
            "Failures per interval by reason (left axis) and retransmitted requests per interval (right axis)"
        + ("." if any(d.failures or d.retransmissions for d in deltas) else ": none in any interval."),
        ))
    else:
        parts.append(f'<p class="note">No {INTERVALS} in this directory: bindings held, failures and '
                     "retransmissions over time are not available.</p>")
    for phase, name, what in (("register", "latency-over-time", "registrations"),
                              ("refresh", "refresh-latency-over-time", "refreshes")):
        intended, svc = run.log(phase), run.log(log_name(phase, Kind.SERVICE))
        parts.append(figure(
            plots.time_series(name, f"{phase} latency per interval", "latency (ms)", [
                _pct_series(intended, 50.0, "p50 from intended start", "-", plots.INTENDED_COLOR),
                _pct_series(intended, 99.0, "p99 from intended start", "-", "#17becf"),
                _pct_series(intended, None, "max from intended start", ":", "#7f7f7f"),
                _pct_series(svc, 99.0, "p99 service time", "--", plots.SERVICE_COLOR),
            ], xmax=end),
            f"{phase.capitalize()} latency percentiles of the {what} that finished in each interval.",
            missing=f"No {what} finished during the run: no {phase} latency over time.",
        ))
    lag = run.log(LAG_LOG)
    parts.append(figure(
        plots.time_series("schedule-lag-over-time", "schedule lag per interval", "lag (ms)", [
            _pct_series(lag, 50.0, "p50", "-", None),
            _pct_series(lag, 99.0, "p99", "-", None),
            _pct_series(lag, None, "max", ":", None),
        ], xmax=end),
        "How late the generator sent operations against their intended time: growing lag means the generator "
        "(or max_in_flight) held the schedule back; latency from the intended start includes it.",
        missing="No schedule lag was recorded.",
    ))
    parts.append("</section>")
    return "".join(parts)


def _responses_section(run: SavedRun) -> str:
    responses = {str(k): int(v) for k, v in (run.summary.get("responses") or {}).items()}
    parts = ['<section id="responses"><h2>Responses</h2>']
    parts.append(figure(plots.response_codes(responses), "Final and provisional responses received, by code.",
                         missing="No responses were received."))
    if responses:
        codes = sorted(responses, key=lambda c: int(c) if c.isdigit() else 0)
        parts.append(table(["status code", "responses"], [[c, responses[c]] for c in codes]))
    parts.append(f'<p class="meta">retransmissions: {e(run.summary.get("retransmissions", 0))}</p></section>')
    return "".join(parts)


def _capacity_section(cap: Capacity) -> str:
    parts = ['<section id="capacity"><h2>Capacity (stepped load)</h2>',
             f'<p><strong>{e(cap.verdict())}</strong></p>']
    rows, classes = [], []
    for st in cap.steps:
        missed = "; ".join(f"{t.expr} ({fmt(t.value)})" for t in st.thresholds if not t.passed)
        rows.append([st.index + 1, st.offered, round(st.achieved, 2), st.in_flight_start, st.attempted,
                     st.succeeded, st.failed, st.in_flight_end,
                     None if st.success_pct is None else round(st.success_pct, 3),
                     st.latency_ms.get("p50"), st.latency_ms.get("p99"), st.service_ms.get("p99"),
                     st.values.get("schedule_lag.max"), verdict_cell(st.passed), missed])
        if cap.knee is not None and st.index == cap.knee.index:
            classes.append("knee")
        elif not st.passed:
            classes.append("fail")
        else:
            classes.append("")
    parts.append(table(
        ["step", "offered/s", "achieved/s", "in flight before", "started", "succeeded", "failed", "in flight after",
         "success %", "p50 (ms)", "p99 (ms)", "service p99 (ms)", "lag max (ms)", "thresholds", "missed"],
        rows, row_classes=classes, text_cols=(14,),
    ))
    parts.append('<p class="note">Initial registrations in the intervals counted for each step (its first interval '
                 "is left out when it has three or more): in flight before + started = succeeded + failed + in "
                 "flight after. Latency is counted when a registration finishes.</p>")
    points = [plots.CapacityPoint(st.offered, st.achieved, st.success_pct, st.latency_ms.get("p50"),
                                  st.latency_ms.get("p99"), st.passed) for st in cap.steps]
    parts.append(figure(
        plots.capacity(points, cap.knee.offered if cap.knee else None,
                       cap.breaking.offered if cap.breaking else None),
        "Per step: register latency from the intended start (log scale), success rate and achieved rate against "
        "the offered rate. The knee is the highest step that, like every step before it, met every threshold.",
    ))
    parts.append(f'<p class="note">Thresholds checked on every step: {e(", ".join(cap.thresholds) or "none")}.</p>'
                 "</section>")
    return "".join(parts)


def _crosscheck_section(cc: dict[str, Any]) -> str:
    matrix = cc.get("matrix") or {}
    columns = [c for c in (cc.get("columns") or []) if any(c in row for row in matrix.values())]
    if not columns:
        columns = sorted({c for row in matrix.values() for c in row})
    passed = cc.get("passed", True)
    parts = ['<section id="crosscheck"><h2>Cross-check with the provider</h2>',
             f'<p>{e(cc.get("provider", "provider"))}: {e(cc.get("agreed", 0))}/{e(cc.get("checked", 0))} agree '
             f'({fmt(cc.get("agreement_pct"), 1)} %) <span class="{"pass" if passed else "fail"}">'
             f'{"PASS" if passed else "FAIL"}</span></p>']
    parts.append(table(["sipload \\ provider", *columns],
                        [[ours, *[row.get(c, 0) for c in columns]] for ours, row in sorted(matrix.items())]))
    total = int(cc.get("disagreements_total", 0) or 0)
    if total:
        listed = cc.get("disagreements") or []
        parts.append(f"<h3>Disagreements ({total})</h3>")
        parts.append(table(["user", "sipload", "provider", "detail"],
                            [[d.get("username"), d.get("ours"), d.get("theirs"), d.get("detail")] for d in listed[:50]],
                            text_cols=(0, 1, 2, 3)))
    prop = cc.get("propagation_ms") or {}
    if prop.get("count"):
        parts.append(f'<p class="meta">propagation delay (200 OK to shown registered): n={e(prop["count"])}, '
                     f'p50 {fmt(prop.get("p50"))} ms, p99 {fmt(prop.get("p99"))} ms, '
                     f'max {fmt(prop.get("max"))} ms</p>')
    parts.append("</section>")
    return "".join(parts)


def _groups_section(groups: dict[str, Any]) -> str:
    """One row per device group: size, final states, and every behaviour / keep-alive count that is
    not zero in some group (the counters come from summary.json as they are)."""
    counters = sorted({k for g in groups.values() for k, v in g.items()
                       if k not in ("endpoints", "states") and isinstance(v, int | float) and v})
    rows = []
    for name, g in groups.items():
        states = g.get("states", {})
        text = ", ".join(f"{state} {n}" for state, n in sorted(states.items(), key=lambda kv: (-kv[1], kv[0])))
        rows.append([name, g.get("endpoints", 0), text, *(g.get(k, 0) for k in counters)])
    headers = ["group", "endpoints", "final states", *(k.replace("_", " ") for k in counters)]
    return ('<section id="groups"><h2>Device groups</h2>' + table(headers, rows, text_cols=(0, 2))
            + '<p class="note">Final states as each endpoint knew them at the end; behaviour counts are actions '
              "taken (vanished / returned: churn, flaps, avalanche re-registrations, failovers to the next "
              "registrar).</p></section>")


def render(run: SavedRun) -> str:
    """The whole page."""
    s = run.summary
    cap = analyze(run)
    sections = [_header(run, cap), "<main>", run_section(s), _summary_section(run)]
    if cap is not None:
        sections.append(_capacity_section(cap))  # what a stepped run is for: before the details
    sections += [_latency_section(run), _time_section(run), _responses_section(run)]
    if run.crosscheck is not None:
        sections.append(_crosscheck_section(run.crosscheck))
    groups = s.get("groups")
    if isinstance(groups, dict) and (len(groups) > 1 or any(
            v for g in groups.values() for k, v in g.items() if k not in ("endpoints", "states"))):
        sections.append(_groups_section(groups))  # a plain one-group run without behaviours needs none
    sections.append(files_section(run.out_dir, REPORT))
    sections.append("</main>")
    title = f"sipload: {s.get('scenario', '?')} ({'PASS' if s.get('passed') else 'FAIL'})"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; style-src 'unsafe-inline'; "
        "img-src data:\">"
        f"<title>{e(title)}</title><style>{_CSS}</style></head><body>"
        + "".join(sections)
        + "</body></html>\n"
    )
