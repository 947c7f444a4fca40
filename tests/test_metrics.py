"""Metrics: per-worker recording, interval snapshots, the parent's merge, interval logs."""

from __future__ import annotations

import math
import pickle
import random
from pathlib import Path

import pytest
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader
from hypothesis import given, settings
from hypothesis import strategies as st

from sipload.metrics import HIGHEST_US, Aggregate, Histogram, IntervalSnapshot, Kind, Phase, Recorder
from sipload.metrics.phases import bucket_index, encode_buckets
from sipload.sip.failures import FailureReason

T0 = 1_700_000_000.0  # a unix time for the parent
W0 = 12_345.0  # a worker's (monotonic, arbitrary) clock


def expected_percentile(values: list[int], p: float) -> int:
    """HdrHistogram's definition, on exact values: the value at rank round(p% of n), at least 1."""
    s = sorted(values)
    rank = max(int(p * len(s) / 100 + 0.5), 1)
    return s[rank - 1]


def within_precision(got_us: float, want_us: int) -> bool:
    # 3 significant digits: a bucket is at most 1/1024 of its value wide (and 1 µs below 2048 µs).
    return abs(got_us - want_us) <= max(1.0, want_us / 1024)


# ---- the bucket index the hot path computes is hdrh's ---------------------------------------------


@given(st.integers(min_value=0, max_value=HIGHEST_US))
def test_bucket_index_is_hdrh_bucket(value: int) -> None:
    ref = HdrHistogram(1, HIGHEST_US, 3)
    idx = bucket_index(value)
    assert ref.values_are_equivalent(value, ref.get_value_from_index(idx))
    direct, via_index = Histogram(), Histogram()
    direct.record(value)
    via_index.record_index(idx, 1)
    assert direct.encode() == via_index.encode()


@settings(max_examples=30, deadline=None)  # each example builds and reads 2 full histograms (~0.1 s)
@given(st.lists(st.integers(min_value=0, max_value=HIGHEST_US), max_size=300))
def test_from_buckets_equals_recording_each_value(values: list[int]) -> None:
    direct = Histogram()
    counts: dict[int, int] = {}
    for v in values:
        direct.record(v)
        counts[bucket_index(v)] = counts.get(bucket_index(v), 0) + 1
    built = Histogram.from_buckets(counts)
    assert built.encode() == direct.encode()
    assert (built.count, built.max_us, built.mean_us) == (direct.count, direct.max_us, direct.mean_us)
    assert built.raw.get_min_value() == direct.raw.get_min_value()
    if values:
        assert built.percentiles_us() == direct.percentiles_us()


@settings(max_examples=12, deadline=None)  # hdrh's own mean walks every bucket to the maximum (~0.2 s)
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=HIGHEST_US), st.integers(min_value=1, max_value=5)),
                max_size=200))
def test_mean_is_hdrh_mean(values: list[tuple[int, int]]) -> None:
    """mean_us sums only the non-empty buckets; it must be hdrh's own get_mean_value to the last bit."""
    h = Histogram()
    for value, count in values:
        h.record(value, count)
    assert h.mean_us == float(h.raw.get_mean_value())


def test_bucket_index_boundaries() -> None:
    ref = HdrHistogram(1, HIGHEST_US, 3)
    edges = {0, 1, HIGHEST_US}
    for shift in range(33):
        for d in (-1, 0, 1):
            v = (1 << shift) + d
            if 0 <= v <= HIGHEST_US:
                edges.add(v)
    for v in sorted(edges):
        assert ref.values_are_equivalent(v, ref.get_value_from_index(bucket_index(v))), v


# ---- Recorder --------------------------------------------------------------------------------------


def test_counters_are_exact_and_reset_per_interval() -> None:
    r = Recorder(now=W0)
    for _ in range(7):
        r.attempt(Phase.REGISTER)
    for _ in range(5):
        r.success(Phase.REGISTER)
    r.failure(Phase.REGISTER, FailureReason.TIMEOUT)
    r.failure(Phase.REGISTER, FailureReason.TIMEOUT)
    r.failure(Phase.REFRESH, FailureReason.AUTH_REJECTED)
    r.attempt(Phase.REFRESH)
    for code in (401, 401, 200, 200, 200, 403):
        r.response(code)
    r.retransmission()
    r.retransmission()
    r.set_gauge("registered", 5)
    r.set_gauge("registered", 4)

    s = r.take_interval(now=W0 + 1.0)
    assert (s.start, s.end, s.duration) == (W0, W0 + 1.0, 1.0)
    assert s.attempts == {Phase.REGISTER: 7, Phase.REFRESH: 1}
    assert s.successes == {Phase.REGISTER: 5}
    assert s.failures == {
        (Phase.REGISTER, FailureReason.TIMEOUT): 2,
        (Phase.REFRESH, FailureReason.AUTH_REJECTED): 1,
    }
    assert s.failures_in(Phase.REGISTER) == 2
    assert s.failures_in(Phase.UNREGISTER) == 0
    assert s.responses == {401: 2, 200: 3, 403: 1}
    assert s.retransmissions == 2
    assert s.gauges == {"registered": 4}
    assert s.histograms == {} and s.schedule_lag is None

    r.attempt(Phase.UNREGISTER)
    s2 = r.take_interval(now=W0 + 2.0)
    assert (s2.start, s2.end) == (W0 + 1.0, W0 + 2.0)
    assert s2.attempts == {Phase.UNREGISTER: 1}
    assert s2.successes == {} and s2.failures == {} and s2.responses == {}
    assert s2.retransmissions == 0
    assert s2.gauges == {"registered": 4}  # gauges keep their latest value


def test_histograms_and_percentiles_within_hdr_precision() -> None:
    rng = random.Random(7)
    intended = [rng.randint(200, 2_000_000) for _ in range(5000)]
    service = [v // 3 for v in intended]
    r = Recorder(now=W0)
    for a, b in zip(intended, service, strict=True):
        r.record(Phase.REGISTER, a, b)
    s = r.take_interval(now=W0 + 1)
    assert set(s.histograms) == {(Phase.REGISTER, Kind.INTENDED), (Phase.REGISTER, Kind.SERVICE)}
    h = Histogram.decode(s.histograms[Phase.REGISTER, Kind.INTENDED])
    assert h.count == 5000
    for p, got in h.percentiles_us().items():
        assert within_precision(got, expected_percentile(intended, p)), p
    assert within_precision(h.max_us, max(intended))
    assert math.isclose(h.mean_us, sum(intended) / len(intended), rel_tol=1e-3)
    hs = Histogram.decode(s.histograms[Phase.REGISTER, Kind.SERVICE])
    assert within_precision(hs.percentiles_us([99.0])[99.0], expected_percentile(service, 99.0))
    # the next interval starts empty
    assert r.take_interval(now=W0 + 2).histograms == {}


def test_out_of_range_values_are_clamped_and_counted() -> None:
    r = Recorder(now=W0)
    r.record(Phase.AUTH, -5, HIGHEST_US + 1)
    r.record(Phase.AUTH, 0, HIGHEST_US)  # both in range
    r.schedule_lag(-250)  # early: recorded as 0, not an error
    r.schedule_lag(HIGHEST_US * 2)
    s = r.take_interval(now=W0 + 1)
    assert s.clamped == 3
    hi = Histogram.decode(s.histograms[Phase.AUTH, Kind.INTENDED])
    hs = Histogram.decode(s.histograms[Phase.AUTH, Kind.SERVICE])
    assert hi.count == 2 and hi.max_us == 0
    assert hs.count == 2 and hs.max_us >= HIGHEST_US
    assert s.schedule_lag is not None
    lag = Histogram.decode(s.schedule_lag)
    assert lag.count == 2 and lag.percentiles_us([50.0])[50.0] == 0
    assert r.take_interval(now=W0 + 2).clamped == 0


def test_snapshot_pickles() -> None:
    r = Recorder(now=W0)
    r.record(Phase.CHALLENGE, 1500, 900)
    r.schedule_lag(40)
    r.attempt(Phase.REGISTER)
    r.failure(Phase.REGISTER, FailureReason.PARSE_ERROR)
    r.response(401)
    r.set_gauge("in_flight", 3)
    s = r.take_interval(now=W0 + 1)
    back = pickle.loads(pickle.dumps(s))
    assert isinstance(back, IntervalSnapshot)
    assert back == s
    assert back.failures == {(Phase.REGISTER, FailureReason.PARSE_ERROR): 1}
    assert Histogram.decode(back.histograms[Phase.CHALLENGE, Kind.INTENDED]).count == 1


# ---- merging ---------------------------------------------------------------------------------------


def feed(recorders: list[Recorder], rng: random.Random, n: int) -> None:
    """The same random stream of events, each sent to all of `recorders`."""
    reasons = list(FailureReason)
    for _ in range(n):
        phase = rng.choice(list(Phase))
        a = rng.randint(0, 3_000_000)
        b = rng.randint(0, a)
        outcome = rng.random()
        code = rng.choice((200, 401, 403, 503))
        lag = rng.randint(-100, 50_000)
        for r in recorders:
            r.attempt(phase)
            r.response(code)
            r.schedule_lag(lag)
            if outcome < 0.9:
                r.success(phase)
                r.record(phase, a, b)
            else:
                r.failure(phase, reasons[int(outcome * 1000) % len(reasons)])
            if outcome > 0.95:
                r.retransmission()


def test_two_workers_merged_equal_one_recorder_fed_both_streams() -> None:
    rng_a, rng_b = random.Random(1), random.Random(2)
    wa, wb, both = Recorder(W0), Recorder(W0 + 500), Recorder(W0)
    merged, single = Aggregate(T0), Aggregate(T0)
    for interval in range(1, 4):
        feed([wa, both], rng_a, 700)
        feed([wb, both], rng_b, 400)
        wa.set_gauge("registered", 10 * interval)
        wb.set_gauge("registered", interval)
        wa.set_gauge("kernel_drops", 2)
        wb.set_gauge("kernel_drops", 3)
        both.set_gauge("registered", 11 * interval)
        both.set_gauge("kernel_drops", 5)
        merged.add(wa.take_interval(W0 + interval), worker=0)
        merged.add(wb.take_interval(W0 + 500 + interval), worker=1)
        single.add(both.take_interval(W0 + interval))
        merged.flush_interval(T0 + interval)
        single.flush_interval(T0 + interval)

    mv = merged.metric_values(arrival_period_s=3.0, offered_rate=400.0)
    sv = single.metric_values(arrival_period_s=3.0, offered_rate=400.0)
    assert mv == sv
    assert mv["registered"] == 33 and mv["kernel_drops"] == 5
    for p in Phase:
        for k in Kind:
            assert merged.histogram(p, k).encode() == single.histogram(p, k).encode()
    assert merged.progress() == single.progress()
    total_attempts = sum(merged.counts(p).attempted for p in Phase)
    assert total_attempts == 3 * (700 + 400)


def test_metric_values_names_and_values() -> None:
    r = Recorder(W0)
    for i in range(1, 101):  # 100 registrations, 1..100 ms
        r.attempt(Phase.REGISTER)
        r.success(Phase.REGISTER)
        r.record(Phase.REGISTER, i * 1000, i * 500)
        r.response(200)
    for _ in range(3):
        r.attempt(Phase.REGISTER)
        r.failure(Phase.REGISTER, FailureReason.TIMEOUT)
    r.attempt(Phase.REFRESH)
    r.failure(Phase.REFRESH, FailureReason.SERVER_ERROR)
    r.response(503)
    r.retransmission()
    r.schedule_lag(850_000)
    r.set_gauge("kernel_drops", 9)
    agg = Aggregate(T0)
    agg.add(r.take_interval(W0 + 10))
    v = agg.metric_values(arrival_period_s=20.0, offered_rate=5.0)

    assert v["register.count"] == 100
    assert within_precision(v["register.p50"] * 1000, 50_000)
    assert within_precision(v["register.p99"] * 1000, 99_000)
    assert within_precision(v["register.p99.9"] * 1000, 100_000)
    assert within_precision(v["register.max"] * 1000, 100_000)
    assert math.isclose(v["register.mean"], 50.5, rel_tol=1e-3)
    assert within_precision(v["register.service.p50"] * 1000, 25_000)
    assert v["challenge.count"] == 0 and "challenge.p50" not in v
    assert v["register.success_rate"] == pytest.approx(100 * 100 / 103)
    assert v["refresh.success_rate"] == 0.0
    assert "unregister.success_rate" not in v  # nothing finished: no made-up 100 %
    assert (v["registrations.attempted"], v["registrations.succeeded"], v["registrations.failed"]) == (
        103,
        100,
        3,
    )
    assert v["refreshes.failed"] == 1
    assert v["failures"] == 4 and v["timeouts"] == 3
    assert v["failures.timeout"] == 3 and v["failures.server_error"] == 1
    assert v["failures.auth_rejected"] == 0  # every reason is present
    assert v["retransmissions"] == 1
    assert v["responses.200"] == 100 and v["responses.503"] == 1
    assert v["rate.achieved"] == 100 / 20.0 and v["rate.offered"] == 5.0
    assert within_precision(v["schedule_lag.max"] * 1000, 850_000)
    assert v["kernel_drops"] == 9
    assert "rate.achieved" not in agg.metric_values()

    summary = agg.latency_summary()
    assert set(summary) == {"register"}
    assert set(summary["register"]) == {"p50", "p90", "p95", "p99", "p99.9", "max", "mean", "count"}
    assert agg.latency_summary(Kind.SERVICE)["register"]["count"] == 100
    assert agg.failures_by_phase() == {"refresh": {"server_error": 1}, "register": {"timeout": 3}}


def test_progress_is_per_interval() -> None:
    r = Recorder(W0)
    agg = Aggregate(T0)
    assert agg.progress().register_p50_ms is None
    for _ in range(30):
        r.success(Phase.REGISTER)
        r.record(Phase.REGISTER, 20_000, 10_000)
    r.failure(Phase.AUTH, FailureReason.FORBIDDEN)
    r.set_gauge("registered", 30)
    r.set_gauge("in_flight", 2)
    agg.add(r.take_interval(W0 + 2))
    agg.flush_interval(T0 + 2.0)
    p = agg.progress()
    assert p.elapsed_s == 2.0 and p.rate_per_s == 15.0
    assert (p.registered, p.in_flight, p.failures) == (30, 2, 1)
    assert p.register_p50_ms is not None and within_precision(p.register_p50_ms * 1000, 20_000)
    assert "registered 30" in p.line()

    agg.add(r.take_interval(W0 + 4))  # nothing new
    agg.flush_interval(T0 + 4.0)
    p2 = agg.progress()
    assert p2.elapsed_s == 4.0 and p2.rate_per_s == 0.0 and p2.registered == 30
    assert p2.register_p99_ms == p.register_p99_ms  # cumulative


def test_the_live_line_shows_health_not_only_new_registrations() -> None:
    """Refreshes, timeouts and retransmissions are on the line: a registrar that stopped answering shows."""
    r = Recorder(W0)
    agg = Aggregate(T0)
    for _ in range(10):
        r.success(Phase.REFRESH)
    for _ in range(3):
        r.failure(Phase.REFRESH, FailureReason.TIMEOUT)
    r.retransmission()
    r.retransmission()
    agg.add(r.take_interval(W0 + 1))
    agg.flush_interval(T0 + 1.0)
    p = agg.progress()
    assert (p.rate_per_s, p.refresh_per_s, p.failures, p.timeouts, p.retransmissions) == (0.0, 10.0, 3, 3, 2)
    assert "10.0 refresh/s" in p.line() and "failures 3 (timeouts 3)  retrans 2" in p.line()


def test_the_rate_is_per_second_each_worker_covered() -> None:
    """Two snapshots of one worker in one flush (its intervals drift against the parent's) are two seconds
    of it, not a burst; a worker's first snapshot counts from its own start, not the parent's."""
    r = Recorder(W0)
    agg = Aggregate(T0)
    for second in (1, 2):
        for _ in range(100):
            r.success(Phase.REGISTER)
        agg.add(r.take_interval(W0 + second), worker=0)
    late = Recorder(W0 + 1.5)   # a second worker that started half a second after the first
    for _ in range(50):
        late.success(Phase.REGISTER)
    agg.add(late.take_interval(W0 + 2), worker=1)
    agg.flush_interval(T0 + 2.5)   # the parent's clock: its first interval began before the workers
    assert agg.progress().rate_per_s == 100.0 + 100.0


# ---- interval logs ---------------------------------------------------------------------------------


def read_log(path: Path) -> tuple[HistogramLogReader, list[HdrHistogram]]:
    reader = HistogramLogReader(str(path), HdrHistogram(1, HIGHEST_US, 3))
    out = []
    while (h := reader.get_next_interval_histogram()) is not None:
        out.append(h)
    reader.close()
    return reader, out


def test_hlog_files_read_back_with_the_same_totals(tmp_path: Path) -> None:
    rng_a, rng_b = random.Random(3), random.Random(4)
    wa, wb = Recorder(W0), Recorder(W0)
    agg = Aggregate(T0)
    agg.open_logs(tmp_path)
    for interval in range(1, 4):
        if interval != 2:  # interval 2: nothing at all happens
            feed([wa], rng_a, 300)
            feed([wb], rng_b, 200)
        agg.add(wa.take_interval(W0 + interval), worker=0)
        agg.add(wb.take_interval(W0 + interval), worker=1)
        agg.flush_interval(T0 + interval)
    agg.close_logs()

    names = sorted(p.name for p in tmp_path.iterdir())
    expected = sorted([f"{p}.hlog" for p in Phase] + [f"{p}.service.hlog" for p in Phase])
    assert names == sorted([*expected, "schedule_lag.hlog"])
    for p in Phase:
        for kind, name in ((Kind.INTENDED, f"{p}.hlog"), (Kind.SERVICE, f"{p}.service.hlog")):
            reader, intervals = read_log(tmp_path / name)
            assert len(intervals) == 3  # one line per interval, empty ones included
            assert intervals[1].get_total_count() == 0
            assert sum(h.get_total_count() for h in intervals) == agg.histogram(p, kind).count > 0
            assert reader.get_start_time_sec() == pytest.approx(T0, abs=1e-3)
            starts = [h.get_start_time_stamp() / 1000 for h in intervals]
            ends = [h.get_end_time_stamp() / 1000 for h in intervals]
            assert starts == pytest.approx([T0, T0 + 1, T0 + 2], abs=1e-3)
            assert ends == pytest.approx([T0 + 1, T0 + 2, T0 + 3], abs=1e-3)
        # the merged lines add up to the cumulative histogram, bucket for bucket
        total = HdrHistogram(1, HIGHEST_US, 3)
        _, intervals = read_log(tmp_path / f"{p}.hlog")
        for h in intervals:
            total.add(h)
        assert Histogram(total).encode() == agg.histogram(p).encode()
    _, lag = read_log(tmp_path / "schedule_lag.hlog")
    assert sum(h.get_total_count() for h in lag) == 2 * (300 + 200) == agg.schedule_lag_summary()["count"]

    text = (tmp_path / "register.hlog").read_text()
    assert text.startswith("#[Histogram log format version")
    assert "#[StartTime: 1700000000.000 " in text and "#[BaseTime: 1700000000.000000" in text
    assert '"StartTimestamp","Interval_Length","Interval_Max","Interval_Compressed_Histogram"' in text


def test_encode_buckets_roundtrip() -> None:
    counts = {bucket_index(v): n for v, n in ((5, 2), (70_000, 3), (HIGHEST_US, 1))}
    h = Histogram.decode(encode_buckets(counts))
    assert h.count == 6
    assert h.percentiles_us([10.0])[10.0] == 5
