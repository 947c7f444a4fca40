"""Memory at the end of a run: the parent's peak was the report reading every .hlog interval
decoded (184 KiB each, ~1.9 MiB per second of run); intervals are now kept compressed, and the
embedded registrar's response cache holds bytes, not `Response` objects."""

from __future__ import annotations

import gc
import random
import tracemalloc
from pathlib import Path

import trio
import trio.testing
from hdrh.histogram import HdrHistogram
from hdrh.log import HistogramLogReader

from sipload.cli.registrar import _run
from sipload.metrics import Aggregate, Phase, Recorder
from sipload.registrar.listen import Listen
from sipload.registrar.retransmissions import ResponseCache, SentResponse
from sipload.registrar.settings import RegistrarSettings
from sipload.report.saved import SavedRun, read_hlog
from sipload.sip.message import Response

T0 = 1_700_000_000.0
W0 = 500.0
INTERVALS = 300
DECODED_BYTES = 23_552 * 8  # one histogram of the standard shape, decoded


def _write_logs(out: Path, intervals: int) -> None:
    rng = random.Random(6)
    rec = Recorder(W0)
    agg = Aggregate(T0)
    agg.open_logs(out)
    for i in range(1, intervals + 1):
        for _ in range(20):
            rec.attempt(Phase.REGISTER)
            rec.success(Phase.REGISTER)
            a = rng.randint(100, 2_000_000)
            rec.record(Phase.REGISTER, a, rng.randint(50, a))
        agg.add(rec.take_interval(W0 + i))
        agg.flush_interval(T0 + i)
    agg.close_logs()


def _decoded_total(path: Path) -> tuple[int, HdrHistogram]:
    """hdrh's own reader, every interval added up: the reference the saved run must agree with."""
    reader = HistogramLogReader(str(path), None)
    total = HdrHistogram(1, 3_600_000_000, 3)
    seen = 0
    while (h := reader.get_next_interval_histogram(range_start_time_sec=-1.0)) is not None:
        total.add(h)
        seen += 1
    reader.close()
    return seen, total


def test_a_long_log_is_held_compressed_and_adds_up_to_the_same_totals(tmp_path: Path) -> None:
    _write_logs(tmp_path, INTERVALS)
    path = tmp_path / "register.hlog"
    tracemalloc.start()
    try:
        logs = read_hlog(path)
        gc.collect()  # hdrh's decoded histograms are cyclic garbage until a collection
        held, _ = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(logs) == INTERVALS
    # decoded, these intervals would hold 300 x 184 KiB = 54 MiB; compressed they take a few KiB each
    assert held < INTERVALS * DECODED_BYTES // 20, held

    seen, reference = _decoded_total(path)
    assert seen == INTERVALS
    run = SavedRun(tmp_path, {}, None, None)
    total = run.total("register")
    assert total.count == reference.get_total_count() == INTERVALS * 20
    assert total.percentiles_us((50.0, 99.0, 100.0)) == {
        p: int(reference.get_value_at_percentile(p)) for p in (50.0, 99.0, 100.0)}
    assert sum(ivl.histogram.count for ivl in run.log("register")) == total.count
    assert [ivl.end_s for ivl in logs] == [float(i) for i in range(1, INTERVALS + 1)]


def _response(n: int) -> Response:
    return Response(200, None, [("Via", f"SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{n}"),
                                ("Call-ID", f"call-{n}"), ("CSeq", "2 REGISTER"),
                                ("Contact", f"<sip:u{n}@127.0.0.1:5060>;expires=300")])


def test_the_response_cache_holds_no_object_the_collector_tracks() -> None:
    cache = ResponseCache(linger=32.0, max_entries=100_000)
    gc.collect()
    before = len(gc.get_objects())
    for n in range(2000):
        cache.put((f"call-{n}", 2, "REGISTER", f"z9hG4bK{n}", "127.0.0.1:5060"), _response(n), 0.0, 0.0)
    gc.collect()  # tuples of bytes, floats and strings are untracked by the first collection that sees them
    grown = len(gc.get_objects()) - before
    assert len(cache) == 2000
    assert grown < 50, grown  # a cached Response was 4+ tracked objects per entry (8,000+ here)

    hit = cache.get(("call-7", 2, "REGISTER", "z9hG4bK7", "127.0.0.1:5060"), 1.0)
    assert hit is not None and isinstance(hit.response, SentResponse)
    assert hit.response.to_bytes() == _response(7).to_bytes()
    assert hit.response.status == 200 and hit.response.call_id == "call-7"
    assert cache.get(("call-7", 2, "REGISTER", "z9hG4bK7", "127.0.0.1:5060"), 32.0) is None  # Timer J


def test_sipload_registrar_freezes_its_start_up_objects_once_it_listens() -> None:
    settings = RegistrarSettings(realm="sipload", password_template="pw-{user}")
    gc.unfreeze()
    try:
        failure = trio.run(_run, settings, [Listen("udp", "127.0.0.1", 0)], None, None, 5.0, True,
                           clock=trio.testing.MockClock(autojump_threshold=0))
        assert failure is None
        assert gc.get_freeze_count() > 1000
    finally:
        gc.unfreeze()

