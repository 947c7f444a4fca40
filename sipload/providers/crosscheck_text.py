"""The cross-check as text lines: the agreement matrix, the disagreements, propagation, errors."""

from __future__ import annotations

from sipload.providers.agreement import COLUMNS
from sipload.providers.crosscheck import CrossCheckResult


def matrix_lines(result: CrossCheckResult) -> list[str]:
    """A table: one row per sipload state, one column per provider answer seen."""
    used = [c for c in COLUMNS if any(c in row for row in result.matrix.values())]
    if not used:
        return ["(no endpoints)"]
    first = max([len("sipload \\ provider"), *(len(k) for k in result.matrix)])
    widths = [max(len(c), 5) for c in used]
    header = "  ".join(c.rjust(w) for c, w in zip(used, widths, strict=True))
    lines = ["sipload \\ provider".ljust(first) + "  " + header]
    for ours in sorted(result.matrix):
        row = result.matrix[ours]
        cells = "  ".join(str(row.get(c, 0)).rjust(w) for c, w in zip(used, widths, strict=True))
        lines.append(ours.ljust(first) + "  " + cells)
    return lines


def result_lines(result: CrossCheckResult, show: int = 20) -> list[str]:
    lines = [f"cross-check with {result.provider}: {result.agreed}/{result.checked} agree "
             f"({result.agreement_pct:.1f} %)"]
    lines += matrix_lines(result)
    if result.disagreements_total:
        lines.append(f"disagreements: {result.disagreements_total}")
        for d in result.disagreements[:show]:
            detail = f": {d.detail}" if d.detail else ""
            lines.append(f"  {d.username}: sipload {d.ours}, provider {d.theirs}{detail}")
        if result.disagreements_total > min(show, len(result.disagreements)):
            lines.append(f"  ... {result.disagreements_total - min(show, len(result.disagreements))} more")
    prop = result.propagation_summary()
    if prop.get("count"):
        lines.append(f"propagation delay (200 OK -> provider shows registered): n={prop['count']:g} "
                     f"p50 {prop['p50']:.1f} ms, p90 {prop['p90']:.1f} ms, p99 {prop['p99']:.1f} ms, "
                     f"max {prop['max']:.1f} ms")
    if result.not_propagated:
        lines.append(f"not shown registered within the poll limit: {result.not_propagated}")
    if result.errors_total:
        lines.append(f"errors: {result.errors_total} endpoint(s) could not be checked")
        for e in result.errors[:show]:
            lines.append(f"  {e.username}: {e.message}")
    return lines
