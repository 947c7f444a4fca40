"""sipload.metrics: per-worker recording (hot path), interval snapshots, the parent's merge and logs."""

from sipload.metrics.aggregate import Aggregate, PhaseCounts, Progress, summarize
from sipload.metrics.phases import HIGHEST_US, PERCENTILES, Histogram, Kind, Phase
from sipload.metrics.recorder import IntervalSnapshot, Recorder

__all__ = [
    "HIGHEST_US",
    "PERCENTILES",
    "Aggregate",
    "Histogram",
    "IntervalSnapshot",
    "Kind",
    "Phase",
    "PhaseCounts",
    "Progress",
    "Recorder",
    "summarize",
]
