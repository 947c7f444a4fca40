"""The report's plots, drawn with matplotlib and returned as inline SVG (no pyplot, no global figure
state; text stays text with local fonts, so the page needs nothing from the network).

Each function takes what it plots and returns an `<svg>` element as a string, or None when there is
nothing to plot. Latency percentile plots follow HdrHistogram's plotter: the x axis is 1/(1-q) on a
log scale, labelled 0 %, 90 %, 99 %, 99.9 % ..., the y axis the latency in milliseconds.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import matplotlib as mpl
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, MaxNLocator, NullLocator

from sipload.metrics.phases import Histogram

_RC: dict[Any, Any] = {
    "svg.fonttype": "none",  # text as <text>: small, searchable, rendered with local fonts
    "font.family": "sans-serif",
    "font.size": 9.0,
    "axes.grid": True,
    "grid.alpha": 0.35,
    "axes.spines.top": False,
    "axes.spines.right": False,
}
INTENDED_COLOR = "#1f77b4"
SERVICE_COLOR = "#ff7f0e"
FAIL_COLOR = "#d62728"
PASS_COLOR = "#2ca02c"


def to_svg(fig: Figure, name: str) -> str:
    """The figure as an inline <svg> element; ids inside are salted with `name` so that several plots
    on one page never share an id."""
    buf = io.StringIO()
    with mpl.rc_context({**_RC, "svg.hashsalt": f"sipload-{name}"}):
        fig.savefig(buf, format="svg", metadata={"Date": None}, bbox_inches="tight")
    text = buf.getvalue()
    start = text.find("<svg")
    svg = _prefix_ids(text[start:] if start >= 0 else text, name)
    return svg.replace("<svg ", f'<svg role="img" aria-label="{name}" data-plot="{name}" ', 1)


_ID = re.compile(r'(\sid=")([^"]+)(")')
_REF = re.compile(r'(href="#|url\(#)([^")]+)')


def _prefix_ids(svg: str, name: str) -> str:
    """Every id (matplotlib numbers its groups figure_1, axes_1 ... in every figure) and every reference
    to one, prefixed with the plot's name: ids stay unique on a page with several plots."""
    svg = _ID.sub(lambda m: f"{m.group(1)}{name}-{m.group(2)}{m.group(3)}", svg)
    return _REF.sub(lambda m: f"{m.group(1)}{name}-{m.group(2)}", svg)


def _figure(width: float, height: float) -> Figure:
    with mpl.rc_context(_RC):
        return Figure(figsize=(width, height), layout="constrained")


def _axes(fig: Figure, *args: int) -> Axes:
    with mpl.rc_context(_RC):
        return fig.add_subplot(*args) if args else fig.add_subplot()


# --------------------------------------------------------------------------- latency by percentile

def percentile_curve(h: Histogram, points: int = 160) -> tuple[list[float], list[float]]:
    """(x = 1/(1-q), latency ms) from q = 0 up to the percentile of the last sample, then the max."""
    n = h.count
    if n == 0:
        return [], []
    top = max(math.log10(n), 0.5)
    ks = [top * i / (points - 1) for i in range(points)]
    pcts = [100.0 * (1.0 - 10.0 ** -k) for k in ks]
    values = h.percentiles_us(pcts)
    xs = [10.0 ** k for k in ks]
    ys = [values[p] / 1000.0 for p in pcts]
    xs.append(10.0 ** top)
    ys.append(h.max_us / 1000.0)
    return xs, ys


def _percentile_label(x: float, _pos: object = None) -> str:
    if x <= 1.0:
        return "0%"
    q = 100.0 * (1.0 - 1.0 / x)
    digits = max(0, round(math.log10(x)) - 2)
    return f"{q:.{digits}f}%"


def _percentile_axis(ax: Axes, top: float) -> None:
    ax.set_xscale("log")
    decades = max(1, math.ceil(math.log10(max(top, 10.0))))
    ax.xaxis.set_major_locator(FixedLocator([10.0 ** d for d in range(decades + 1)]))
    ax.xaxis.set_major_formatter(FuncFormatter(_percentile_label))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xlim(1.0, 10.0 ** decades)
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms)")
    ax.set_ylim(bottom=0)


def latency_percentiles(phases: Sequence[tuple[str, Histogram, Histogram]]) -> str | None:
    """One panel per phase: (phase, from intended start, service time)."""
    phases = [p for p in phases if p[1].count or p[2].count]
    if not phases:
        return None
    cols = min(3, len(phases))
    rows = math.ceil(len(phases) / cols)
    fig = _figure(4.0 * cols, 3.0 * rows + 0.3)
    handles: list[Any] = []
    for i, (phase, intended, service) in enumerate(phases):
        ax = _axes(fig, rows, cols, i + 1)
        top = 10.0
        for h, label, color, style in ((intended, "from intended start", INTENDED_COLOR, "-"),
                                       (service, "service time", SERVICE_COLOR, "--")):
            xs, ys = percentile_curve(h)
            if xs:
                ax.plot(xs, ys, style, color=color, label=label, linewidth=1.6)
                top = max(top, xs[-1])
        _percentile_axis(ax, top)
        ax.set_title(f"{phase} (n={max(intended.count, service.count)})")
        if i == 0:
            handles = ax.get_lines()
    _legend_below(fig, handles)
    return to_svg(fig, "latency-percentiles")


# --------------------------------------------------------------------------------- over time

@dataclass(frozen=True, slots=True)
class Series:
    label: str
    xs: list[float]
    ys: list[float]
    style: str = "-"
    color: str | None = None
    step: bool = False


def time_series(name: str, title: str, ylabel: str, series: Sequence[Series], *,
                right: Sequence[Series] = (), right_label: str = "", bars: bool = False,
                xmax: float | None = None, counts: bool = False) -> str | None:
    """Lines (or bars) over the run's time; `right` goes on a second y axis. The legend goes below the
    axes, never over the data. `counts`: the y axes count things (integer ticks, 0 to 1 at least)."""
    if not any(s.xs for s in series) and not any(s.xs for s in right):
        return None
    fig = _figure(9.0, 3.2)
    ax = _axes(fig)
    handles: list[Any] = []
    for s in series:
        if not s.xs:
            continue
        if bars:
            width = min((b - a for a, b in zip(s.xs, s.xs[1:], strict=False)), default=1.0) * 0.8
            handles.append(ax.bar(s.xs, s.ys, width=width, label=s.label, color=s.color, align="edge"))
        elif s.step:
            (line,) = ax.step(s.xs, s.ys, s.style, where="post", label=s.label, color=s.color, linewidth=1.4)
            handles.append(line)
        else:
            (line,) = ax.plot(s.xs, s.ys, s.style, label=s.label, color=s.color, linewidth=1.4,
                              marker="." if len(s.xs) <= 40 else None)
            handles.append(line)
    ax.set_title(title)
    if xmax is not None and xmax > 0:
        ax.set_xlim(0, xmax)
    ax.set_xlabel("time since start (s)")
    ax.set_ylabel(ylabel)
    _y_from_zero(ax, [y for s in series for y in s.ys], counts)
    if right and any(s.xs for s in right):
        ax2 = ax.twinx()
        ax2.grid(False)
        for s in right:
            if s.xs:
                (line,) = ax2.plot(s.xs, s.ys, s.style, label=s.label, color=s.color, linewidth=1.2,
                                   marker="." if len(s.xs) <= 40 else None)
                handles.append(line)
        ax2.set_ylabel(right_label)
        _y_from_zero(ax2, [y for s in right for y in s.ys], counts)
    _legend_below(fig, handles)
    return to_svg(fig, name)


def _y_from_zero(ax: Axes, ys: Sequence[float], counts: bool) -> None:
    if counts:
        ax.yaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylim(0, max(1.0, max(ys, default=0.0) * 1.05))
    else:
        ax.set_ylim(bottom=0)


def _legend_below(fig: Figure, handles: Sequence[Any]) -> None:
    """The figure's legend under its axes (constrained layout makes room): it covers no data."""
    if handles:
        fig.legend(handles=list(handles), labels=[str(h.get_label()) for h in handles], loc="outside lower center",
                   ncol=min(len(handles), 4), fontsize=8, frameon=False)


# ----------------------------------------------------------------------------- response codes

def response_codes(responses: dict[str, int]) -> str | None:
    if not responses:
        return None
    codes = sorted(responses, key=lambda c: int(c) if c.isdigit() else 0)
    colors = [PASS_COLOR if c.startswith("2") else "#7f7f7f" if c in ("401", "407", "100") else FAIL_COLOR
              for c in codes]
    fig = _figure(max(4.0, 0.7 * len(codes) + 2.0), 2.6)
    ax = _axes(fig)
    bars = ax.bar(codes, [responses[c] for c in codes], color=colors)
    ax.bar_label(bars, fontsize=8)
    ax.set_title("responses by status code")
    ax.set_xlabel("status code")
    ax.set_ylabel("responses")
    return to_svg(fig, "response-codes")


# ----------------------------------------------------------------------------------- capacity

@dataclass(frozen=True, slots=True)
class CapacityPoint:
    offered: float
    achieved: float
    success_pct: float | None
    p50_ms: float | None
    p99_ms: float | None
    passed: bool


def capacity(points: Sequence[CapacityPoint], knee: float | None, breaking: float | None) -> str | None:
    """Latency (left) and success / achieved rate (right) against the offered rate."""
    if not points:
        return None
    fig = _figure(10.0, 4.4)
    ax = _axes(fig, 1, 2, 1)
    xs = [p.offered for p in points]
    for attr, label, style in (("p50_ms", "register p50", "o-"), ("p99_ms", "register p99", "s-")):
        pts = [(p.offered, getattr(p, attr)) for p in points if getattr(p, attr) is not None]
        if pts:
            ax.plot([a for a, _ in pts], [b for _, b in pts], style, label=label, linewidth=1.4)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(LogLocator(base=10.0, subs=(1.0, 2.0, 5.0)))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _pos: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _pos: ""))
    ax.set_title("latency against offered rate")
    ax.set_xlabel("offered registrations/s")
    ax.set_ylabel("latency from intended start (ms)")
    ax2 = _axes(fig, 1, 2, 2)
    pts = [(p.offered, p.success_pct) for p in points if p.success_pct is not None]
    if pts:
        ax2.plot([a for a, _ in pts], [b for _, b in pts], "o-", color=PASS_COLOR, label="success %")
    ax2.set_ylim(0, 105)
    ax2.set_ylabel("success (%)")
    ax2.set_xlabel("offered registrations/s")
    ax2.set_title("success and throughput against offered rate")
    ax3 = ax2.twinx()
    ax3.grid(False)
    ax3.plot(xs, [p.achieved for p in points], "d--", color=INTENDED_COLOR, label="achieved/s")
    ax3.plot(xs, xs, ":", color="#7f7f7f", label="achieved = offered")
    ax3.set_ylabel("achieved registrations/s")
    ax3.set_ylim(bottom=0)
    marks = [(p.offered, p.p99_ms, p.passed) for p in points if p.p99_ms is not None]
    if marks:
        ax.scatter([m[0] for m in marks], [m[1] for m in marks], s=60, zorder=3, facecolors="none",
                   edgecolors=[PASS_COLOR if m[2] else FAIL_COLOR for m in marks], linewidths=1.6,
                   label="step met every threshold (green) / missed one (red)")
    for a in (ax, ax2):
        if knee is not None:
            a.axvline(knee, color=PASS_COLOR, linestyle="--", linewidth=1.2, label=f"knee {knee:g}/s")
        if breaking is not None:
            a.axvline(breaking, color=FAIL_COLOR, linestyle="--", linewidth=1.2, label=f"breaking {breaking:g}/s")
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=2, fontsize=8, frameon=False)
    h2, l2 = ax2.get_legend_handles_labels()
    h3, l3 = ax3.get_legend_handles_labels()
    ax2.legend(h2 + h3, l2 + l3, loc="upper center", bbox_to_anchor=(0.5, -0.18), ncol=3, fontsize=8,
               frameon=False)
    return to_svg(fig, "capacity")
