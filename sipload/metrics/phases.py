"""Phases, the histogram shape, and the one typed layer over `hdrh` (which has no type hints).

Every latency histogram in sipload has the same shape: values in microseconds, lowest discernible value
1 µs, highest trackable 1 hour, 3 significant digits. Because the shape is fixed, the hot path does not
call `HdrHistogram.record_value` (~1.7 µs here); it computes the histogram's own bucket index with two
integer operations and counts it in a plain dict (`bucket_index`). Those counts become a real
HdrHistogram once per interval (`encode_buckets`): no value changes bucket, so nothing is lost.
`_check_layout` proves at import time that hdrh's layout is the one `bucket_index` assumes.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable, Mapping

from hdrh.histogram import HdrHistogram


class Phase(enum.StrEnum):
    CHALLENGE = "challenge"    # first REGISTER -> 401
    AUTH = "auth"              # REGISTER with credentials -> 200
    REGISTER = "register"      # the full initial registration
    REFRESH = "refresh"        # a whole refresh, including its challenge if any
    UNREGISTER = "unregister"  # the whole unregistration


class Kind(enum.StrEnum):
    INTENDED = "intended"  # from the intended start on the schedule (free of coordinated omission)
    SERVICE = "service"    # from the actual send


LOWEST_US = 1
HIGHEST_US = 3_600_000_000  # 1 hour
SIGNIFICANT_DIGITS = 3
PERCENTILES: tuple[float, ...] = (50.0, 90.0, 95.0, 99.0, 99.9)

# Layout of a (1, 1 h, 3 digits) HdrHistogram: 2048 sub-buckets, half of them per bucket after the first.
_SUB_BUCKET_MASK = 2047
_SUB_BUCKET_BITS = 11
_HALF_COUNT_BITS = 10


def bucket_index(value: int) -> int:
    """Index of `value` (0 .. HIGHEST_US) in the counts array of a histogram of the standard shape.

    The hot path inlines this same expression.
    """
    b = (value | _SUB_BUCKET_MASK).bit_length() - _SUB_BUCKET_BITS
    return (b << _HALF_COUNT_BITS) + (value >> b)


class Histogram:
    """A typed wrapper around one `hdrh` HdrHistogram of the standard shape (values in µs)."""

    __slots__ = ("_h",)

    def __init__(self, _h: HdrHistogram | None = None) -> None:
        self._h = _h if _h is not None else HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)

    @classmethod
    def decode(cls, encoded: bytes | str) -> Histogram:
        return cls(HdrHistogram.decode(encoded))

    @classmethod
    def from_buckets(cls, counts: Mapping[int, int]) -> Histogram:
        """A histogram holding `counts` (bucket index -> count, indexes from `bucket_index`).

        Fills hdrh's counts array directly and sets its totals the way hdrh's own decoder does
        (`set_internal_tacking_values`): ~0.1 µs a bucket, against ~3 µs through `record_value`.
        """
        h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
        if counts:
            array = h.counts
            for index, n in counts.items():
                array[index] += n
            h.set_internal_tacking_values(min(counts), max(counts), sum(counts.values()))
        return cls(h)

    @property
    def raw(self) -> HdrHistogram:
        """The underlying hdrh object (for hdrh's log writer)."""
        return self._h

    def record(self, value_us: int, count: int = 1) -> None:
        if not self._h.record_value(value_us, count):
            raise ValueError(f"value {value_us} µs is outside the histogram's range")

    def record_index(self, index: int, count: int) -> None:
        """Count `count` values in the bucket `index` (as computed by `bucket_index`)."""
        self.record(int(self._h.get_value_from_index(index)), count)

    def add(self, other: Histogram) -> None:
        self._h.add(other._h)

    def add_encoded(self, encoded: bytes | str) -> None:
        self._h.decode_and_add(encoded)

    def encode(self) -> bytes:
        data = self._h.encode()
        return data if isinstance(data, bytes) else str(data).encode("ascii")

    @property
    def count(self) -> int:
        return int(self._h.get_total_count())

    @property
    def max_us(self) -> int:
        return int(self._h.get_max_value())

    @property
    def mean_us(self) -> float:
        """hdrh's `get_mean_value` exactly (each value at the median of its bucket's range), summed over the
        non-empty buckets only: hdrh's own iterator steps through every bucket up to the maximum in Python
        (~0.1 s a histogram, a dozen of them per summary)."""
        h = self._h
        count = int(h.get_total_count())
        if not count:
            return 0.0
        total = 0
        for index, n in enumerate(h.counts):
            if n:
                value = h.get_highest_equivalent_value(h.get_value_from_index(index))
                total += n * h._hdr_median_equiv_value(value)
        return float(total) / count

    def percentiles_us(self, percentiles: Iterable[float] = PERCENTILES) -> dict[float, int]:
        """One pass over the counts for all percentiles (each costs milliseconds: never per request)."""
        got: Mapping[float, int] = self._h.get_percentile_to_value_dict(list(percentiles))
        return {float(p): int(v) for p, v in got.items()}

    def set_times_ms(self, start_ms: float, end_ms: float) -> None:
        self._h.set_start_time_stamp(start_ms)
        self._h.set_end_time_stamp(end_ms)


def encode_buckets(counts: Mapping[int, int]) -> bytes:
    """Turn bucket counts (index -> count) into an encoded HdrHistogram (hdrh's `encode()`)."""
    return Histogram.from_buckets(counts).encode()


def _check_layout() -> None:
    h = HdrHistogram(LOWEST_US, HIGHEST_US, SIGNIFICANT_DIGITS)
    ok = (
        h.unit_magnitude == 0
        and h.sub_bucket_count == _SUB_BUCKET_MASK + 1
        and h.sub_bucket_half_count_magnitude == _HALF_COUNT_BITS
        and bucket_index(HIGHEST_US) < h.counts_len
    )
    if not ok:  # pragma: no cover - only with an hdrh whose layout differs
        raise RuntimeError("hdrh's histogram layout is not the one sipload.metrics.phases assumes")


_check_layout()
