"""`sipload compare BASE NEW`: what changed between two runs, and whether NEW is worse than BASE beyond
the tolerances (a regression gate for CI).

NEW is worse ("regressed") when any of these holds:

- a gated latency statistic (default p50, p90, p99 of every phase both runs measured, from the intended
  start) grew by more than `latency_pct` percent AND by more than `latency_floor_ms` (sub-millisecond
  jitter on a fast path is not a regression), and both runs have at least `min_tail` samples beyond that
  percentile (p99 needs 1,000 samples for 10 beyond it: a p99 of 200 is two samples' luck, shown with a
  warning but never a regression; `max` and `mean` need `min_tail` samples);
- the achieved registration rate fell by more than `rate_pct` percent;
- failures per attempted operation grew: NEW may have at most
  ``base_ratio * (1 + failure_pct/100) * new_attempts + failures_allowed`` failures (so a base without
  failures allows `failures_allowed`, by default none);
- a threshold that passed in BASE fails in NEW, or NEW did not complete while BASE did;
- both runs had a stepped load and NEW's knee is at a lower offered rate.

Where the runs differ in what they ran (sipload's version, workers, engine, host cores or kernel, the
effective load parameters: summary.json's `run`), a warning line says so for each difference.

Everything else (service times, p99.9 and max, retransmissions, responses, failures by reason) is shown
but does not decide. Numbers come from summary.json (and the capacity analysis of the saved files).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sipload.report.capacity import analyze
from sipload.report.runinfo import differences as run_differences
from sipload.report.runinfo import missing as missing_run
from sipload.report.saved import SavedRun

DEFAULT_PERCENTILES = ("p50", "p90", "p99")
_SHOWN_STATS = ("p50", "p90", "p99", "p99.9", "max")
_COUNTED = (("register", "registrations"), ("refresh", "refreshes"), ("unregister", "unregistrations"))


@dataclass(frozen=True, slots=True)
class Tolerance:
    latency_pct: float = 10.0  # a gated latency statistic may grow this much (relative) ...
    latency_floor_ms: float = 1.0  # ... and in any case this much (absolute)
    rate_pct: float = 5.0  # the achieved rate may fall this much (relative)
    failure_pct: float = 10.0  # failures per attempted operation may grow this much (relative)
    failures_allowed: int = 0  # extra failures NEW may always have
    min_tail: int = 10  # samples beyond a percentile, in each run, for it to decide
    percentiles: tuple[str, ...] = DEFAULT_PERCENTILES
    phases: tuple[str, ...] | None = None  # None: every phase both runs measured


@dataclass(frozen=True, slots=True)
class Change:
    metric: str
    base: float | None
    new: float | None
    unit: str = ""
    worse: bool = False  # beyond the tolerance (only for gated metrics)
    gated: bool = False  # decides the verdict
    rule: str = ""  # what the tolerance was, for a gated metric
    shown: tuple[str, str] | None = None  # base and new as text, instead of the numbers

    @property
    def delta(self) -> float | None:
        if self.base is None or self.new is None:
            return None
        return self.new - self.base

    @property
    def pct(self) -> float | None:
        if self.base is None or self.new is None or self.base == 0:
            return None
        return 100.0 * (self.new - self.base) / abs(self.base)


@dataclass(slots=True)
class Comparison:
    base_name: str
    new_name: str
    changes: list[Change] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def regressions(self) -> list[Change]:
        return [c for c in self.changes if c.worse]

    @property
    def regressed(self) -> bool:
        return bool(self.regressions)

    def lines(self, *, all_metrics: bool = True) -> list[str]:
        """A table of every change (or only the gated ones), then the warnings and the verdict."""
        rows = [c for c in self.changes if all_metrics or c.gated or c.worse]
        width = max([len("metric"), *(len(_label(c)) for c in rows)])
        out = [f"base: {self.base_name}", f"new:  {self.new_name}",
               f"{'metric'.ljust(width)}  {'base':>12}  {'new':>12}  {'change':>10}  verdict"]
        for c in rows:
            bt, nt = c.shown if c.shown is not None else (_num(c.base), _num(c.new))
            change = "" if c.shown is not None else _change(c)
            out.append(f"{_label(c).ljust(width)}  {bt:>12}  {nt:>12}  {change:>10}  {_verdict(c)}".rstrip())
        out += [f"warning: {w}" for w in self.warnings]
        if self.regressed:
            names = ", ".join(c.metric for c in self.regressions)
            out.append(f"REGRESSION: NEW is worse than BASE beyond the tolerances: {names}")
        else:
            out.append("OK: no regression beyond the tolerances")
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "base": self.base_name,
            "new": self.new_name,
            "regressed": self.regressed,
            "regressions": [c.metric for c in self.regressions],
            "warnings": self.warnings,
            "changes": [{"metric": c.metric, "base": c.base, "new": c.new, "unit": c.unit, "gated": c.gated,
                         "worse": c.worse, "rule": c.rule} for c in self.changes],
        }


def _label(c: Change) -> str:
    return f"{c.metric} ({c.unit})" if c.unit else c.metric


def _num(x: float | None) -> str:
    if x is None:
        return "-"
    if x == int(x) and abs(x) < 1e12:
        return str(int(x))
    return f"{x:.3f}"


def _change(c: Change) -> str:
    if c.pct is not None:
        return f"{c.pct:+.1f} %"
    if c.delta is not None:
        return f"{c.delta:+g}"
    return "-"


def _verdict(c: Change) -> str:
    if c.worse:
        return f"WORSE ({c.rule})" if c.rule else "WORSE"
    return "ok" if c.gated else ""


def _f(x: object) -> float | None:
    if isinstance(x, bool) or not isinstance(x, int | float):
        return None
    return float(x) if math.isfinite(float(x)) else None


def _dict(d: object) -> dict[str, Any]:
    return d if isinstance(d, dict) else {}


def _attempts(s: dict[str, Any]) -> int:
    return sum(int(_dict(s.get(key)).get("attempted", 0)) for _, key in _COUNTED)


def compare(base: SavedRun, new: SavedRun, tol: Tolerance = Tolerance()) -> Comparison:
    b, n = base.summary, new.summary
    cmp = Comparison(f"{base.out_dir} ({b.get('scenario')}, {b.get('started_at')})",
                     f"{new.out_dir} ({n.get('scenario')}, {n.get('started_at')})")
    if b.get("scenario") != n.get("scenario"):
        cmp.warnings.append(f"different scenarios: {b.get('scenario')!r} and {n.get('scenario')!r}")
    unknown = missing_run(b.get("run"), n.get("run"))
    cmp.warnings += [unknown] if unknown else []
    cmp.warnings += [f"the runs differ in {d}" for d in run_differences(b.get("run"), n.get("run"))]
    b_rate, n_rate = _dict(b.get("rate")), _dict(n.get("rate"))
    b_off, n_off = _f(b_rate.get("offered")), _f(n_rate.get("offered"))
    cmp.changes.append(Change("rate.offered", b_off, n_off, "/s"))
    if b_off and n_off and abs(n_off - b_off) > 0.01 * b_off:
        cmp.warnings.append(f"the runs offered different rates ({b_off:g}/s and {n_off:g}/s): not like for like")
    b_ach, n_ach = _f(b_rate.get("achieved")), _f(n_rate.get("achieved"))
    rate_worse = b_ach is not None and (n_ach is None or n_ach < b_ach * (1 - tol.rate_pct / 100.0))
    cmp.changes.append(Change("rate.achieved", b_ach, n_ach, "/s", rate_worse, True, f"tolerance -{tol.rate_pct:g} %"))

    b_lat, n_lat = _dict(b.get("latency_ms")), _dict(n.get("latency_ms"))
    b_svc, n_svc = _dict(b.get("service_ms")), _dict(n.get("service_ms"))
    phases = [p for p in (tol.phases or list(b_lat)) if p in b_lat and p in n_lat]
    for p in sorted(set(b_lat) ^ set(n_lat)):
        cmp.warnings.append(f"phase {p!r} has latency data in only one of the runs")
    rule = f"tolerance +{tol.latency_pct:g} % and +{tol.latency_floor_ms:g} ms"
    for p in phases:
        counts = [int(_f(_dict(lat[p]).get("count")) or 0) for lat in (b_lat, n_lat)]
        for stat in dict.fromkeys([*_SHOWN_STATS, *tol.percentiles]):
            bv, nv = _f(_dict(b_lat[p]).get(stat)), _f(_dict(n_lat[p]).get(stat))
            gated = stat in tol.percentiles
            need = samples_needed(stat, tol.min_tail)
            if gated and min(counts) < need:
                gated = False
                cmp.warnings.append(f"{p}.{stat} does not decide: {min(counts):,} samples in the smaller run, "
                                    f"{need:,} needed for {tol.min_tail} beyond it (--min-tail)")
            worse = (gated and bv is not None and nv is not None and nv > bv * (1 + tol.latency_pct / 100.0)
                     and nv - bv > tol.latency_floor_ms)
            cmp.changes.append(Change(f"{p}.{stat}", bv, nv, "ms", worse, gated, rule if gated else ""))
        if p in b_svc and p in n_svc:
            cmp.changes.append(Change(f"{p}.service.p99", _f(_dict(b_svc[p]).get("p99")),
                                      _f(_dict(n_svc[p]).get("p99")), "ms"))

    b_fail = sum(int(v) for v in _dict(b.get("failures")).values())
    n_fail = sum(int(v) for v in _dict(n.get("failures")).values())
    b_att, n_att = _attempts(b), _attempts(n)
    ratio = b_fail / b_att if b_att else 0.0
    allowed = ratio * (1 + tol.failure_pct / 100.0) * n_att + tol.failures_allowed
    cmp.changes.append(Change(
        "failures", float(b_fail), float(n_fail), "", n_fail > allowed + 1e-9, True,
        f"at most {math.floor(allowed + 1e-9)} for {n_att} operations",
    ))
    reasons = sorted(set(_dict(b.get("failures"))) | set(_dict(n.get("failures"))))
    for r in reasons:
        cmp.changes.append(Change(f"failures.{r}", float(_dict(b.get("failures")).get(r, 0)),
                                  float(_dict(n.get("failures")).get(r, 0))))
    for phase, key in _COUNTED:
        bc, nc = _dict(b.get(key)), _dict(n.get(key))
        cmp.changes.append(Change(f"{phase}.success_rate", _success(bc), _success(nc), "%"))
    cmp.changes.append(Change("retransmissions", _f(b.get("retransmissions")), _f(n.get("retransmissions"))))
    cmp.changes.append(Change("schedule_lag.max", _f(_dict(b.get("schedule_lag_ms")).get("max")),
                              _f(_dict(n.get("schedule_lag_ms")).get("max")), "ms"))

    b_thr = {str(t.get("expr")): bool(t.get("passed")) for t in b.get("thresholds", []) if isinstance(t, dict)}
    for t in n.get("thresholds", []):
        if not isinstance(t, dict):
            continue
        expr = str(t.get("expr"))
        if b_thr.get(expr) and not t.get("passed"):
            cmp.changes.append(Change(f"threshold {expr}", None, _f(t.get("value")), "", True, True,
                                      "passed in BASE, fails in NEW", ("pass", "FAIL")))
    if b.get("complete", True) and not n.get("complete", True):
        cmp.changes.append(Change("complete", None, None, "", True, True, "NEW did not complete", ("yes", "no")))
    b_cc, n_cc = _dict(b.get("crosscheck")), _dict(n.get("crosscheck"))
    if b_cc or n_cc:
        cmp.changes.append(Change("crosscheck.agreement", _f(b_cc.get("agreement_pct")),
                                  _f(n_cc.get("agreement_pct")), "%"))
    _compare_capacity(cmp, base, new)
    return cmp


def samples_needed(stat: str, min_tail: int) -> int:
    """Samples a run needs for `min_tail` of them to lie beyond the statistic (p99: 100 x min_tail)."""
    if stat.startswith("p"):
        try:
            beyond = 1.0 - float(stat[1:]) / 100.0
        except ValueError:
            return min_tail
        return math.ceil(min_tail / beyond) if beyond > 0 else min_tail
    return min_tail


def _success(c: dict[str, Any]) -> float | None:
    ok, bad = int(c.get("succeeded", 0)), int(c.get("failed", 0))
    return 100.0 * ok / (ok + bad) if ok + bad else None


def _compare_capacity(cmp: Comparison, base: SavedRun, new: SavedRun) -> None:
    bc, nc = analyze(base), analyze(new)
    if bc is None or nc is None:
        return
    bk = bc.knee.offered if bc.knee is not None else 0.0
    nk = nc.knee.offered if nc.knee is not None else 0.0
    cmp.changes.append(Change("capacity.knee", bk, nk, "/s", nk < bk, True, "the knee must not move down"))


def parse_percent(text: str) -> float:
    """ "10", "10%", "2.5 %" -> 10.0, 10.0, 2.5; raises ValueError."""
    value = float(text.strip().removesuffix("%").strip())
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"must be a percentage >= 0, got {text!r}")
    return value


def parse_stats(text: str, known: Sequence[str] = _SHOWN_STATS) -> tuple[str, ...]:
    stats = tuple(s.strip() for s in text.split(",") if s.strip())
    bad = [s for s in stats if s not in known and s not in ("p95", "mean")]
    if bad or not stats:
        raise ValueError(f"unknown statistic {', '.join(bad) or text!r} (use p50, p90, p95, p99, p99.9, max, mean)")
    return stats
