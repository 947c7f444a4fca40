"""sipload.report: one RunResult model -> summary.json, junit.xml, endpoints.csv (and the .hlog files,
which `sipload.metrics.Aggregate` writes while the run goes on)."""

from sipload.report.result import EndpointState, Rate, RunResult, build_result
from sipload.report.writers import threshold_message, write_partial, write_results

__all__ = [
    "EndpointState",
    "Rate",
    "RunResult",
    "build_result",
    "threshold_message",
    "write_partial",
    "write_results",
]
