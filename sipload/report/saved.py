"""A results directory read back from disk: summary.json, the .hlog interval logs, intervals.jsonl and
an optional cross-check. Everything `sipload report` and `sipload compare` show comes from here, so a
report rendered at the end of a run and one re-rendered later from the same directory are the same.

The .hlog files are read with hdrh's own `HistogramLogReader` (the same reader HdrHistogram's tools
use); interval times are seconds from the log's BaseTime, which is the run's start.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hdrh.log import HistogramLogReader

from sipload.metrics.phases import Histogram, Kind, Phase
from sipload.report.intervals import Intervals, read_intervals
from sipload.report.writers import SUMMARY

CROSSCHECK = "crosscheck.json"
LAG_LOG = "schedule_lag"


class ResultsError(Exception):
    """A results directory that cannot be read: the message names the file and what is wrong."""


def log_name(phase: Phase | str, kind: Kind = Kind.INTENDED) -> str:
    return str(phase) if kind is Kind.INTENDED else f"{phase}.service"


@dataclass(frozen=True, slots=True)
class LogInterval:
    """One interval of a .hlog, kept compressed: decoded, a histogram of the standard shape is 184 KiB
    (23,552 counters), so a long run's logs held decoded took ~1.9 MiB per second of run at the end of
    every run (673 MiB for a 5-minute run); compressed, an interval is ~1-2 KiB."""

    start_s: float  # from the run start
    end_s: float
    encoded: bytes  # the interval's histogram (µs), HdrHistogram's compressed form

    @property
    def histogram(self) -> Histogram:
        """Decoded on every access (~0.2 ms): keep the result while it is used, not longer."""
        return Histogram.decode(self.encoded)


def read_hlog(path: Path) -> list[LogInterval]:
    """Every interval of an HdrHistogram interval log, in order ([] when the file does not exist)."""
    if not path.exists():
        return []
    reader = HistogramLogReader(str(path), None)
    out: list[LogInterval] = []
    try:
        while True:
            try:
                # from -1 s: logs whose StartTime was rounded up past BaseTime keep their first interval
                h = reader.get_next_interval_histogram(range_start_time_sec=-1.0)
            except (ValueError, TypeError) as exc:
                raise ResultsError(f"{path}: cannot read an interval: {exc}") from None
            if h is None:
                break
            base = float(reader.base_time_sec)
            start = float(h.get_start_time_stamp()) / 1000.0 - base
            end = float(h.get_end_time_stamp()) / 1000.0 - base
            out.append(LogInterval(start, end, Histogram(h).encode()))
    finally:
        reader.input_file.close()
    return out


@dataclass(slots=True)
class SavedRun:
    out_dir: Path
    summary: dict[str, Any]
    intervals: Intervals | None
    crosscheck: dict[str, Any] | None
    _logs: dict[str, list[LogInterval]] = field(default_factory=dict)

    def log(self, name: str) -> list[LogInterval]:
        """The intervals of `<name>.hlog` (e.g. "register", "register.service", "schedule_lag"), cached."""
        if name not in self._logs:
            self._logs[name] = read_hlog(self.out_dir / f"{name}.hlog")
        return self._logs[name]

    def total(self, name: str) -> Histogram:
        """The sum of every interval of `<name>.hlog` (empty when there is no such log)."""
        h = Histogram()
        for ivl in self.log(name):
            h.add_encoded(ivl.encoded)
        return h

    def phases(self) -> list[str]:
        """Phases with latency data in summary.json, in the engine's order."""
        lat = self.summary.get("latency_ms", {})
        return [str(p) for p in Phase if isinstance(lat, dict) and str(p) in lat]


def load_run(path: Path) -> SavedRun:
    """A results directory (or its summary.json). Raises ResultsError with a clear message."""
    out_dir = path.parent if path.is_file() else path
    summary_path = out_dir / SUMMARY
    if not out_dir.exists():
        raise ResultsError(f"{path}: no such directory")
    try:
        summary = json.loads(summary_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ResultsError(f"{out_dir}: no {SUMMARY} (is this a sipload results directory?)") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ResultsError(f"{summary_path}: cannot read: {exc}") from None
    if not isinstance(summary, dict) or "scenario" not in summary:
        raise ResultsError(f"{summary_path}: not a sipload summary")
    try:
        intervals = read_intervals(out_dir)
    except (ValueError, KeyError, TypeError, IndexError) as exc:
        raise ResultsError(f"{out_dir}: intervals: {exc}") from None
    crosscheck = summary.get("crosscheck") if isinstance(summary.get("crosscheck"), dict) else None
    if crosscheck is None and (out_dir / CROSSCHECK).exists():
        try:
            loaded = json.loads((out_dir / CROSSCHECK).read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise ResultsError(f"{out_dir / CROSSCHECK}: cannot read: {exc}") from None
        crosscheck = loaded if isinstance(loaded, dict) else None
    return SavedRun(out_dir, summary, intervals, crosscheck)
