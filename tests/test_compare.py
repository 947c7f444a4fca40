"""`sipload compare BASE NEW`: what changed, and exit 1 when NEW is worse beyond the tolerances.

Results directories are made by the real writers from recorded latencies (exact numbers), and once
for real: two short runs against the embedded registrar, the second with a seeded 25 ms response delay.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from sipload.cli.report import compare
from sipload.engine.run import run_scenario
from sipload.metrics import Aggregate, Phase, Recorder
from sipload.report import build_result, write_results
from sipload.report.compare import Tolerance, parse_percent
from sipload.report.compare import compare as compare_runs
from sipload.report.saved import load_run
from sipload.scenario import parse_scenario
from sipload.sip.failures import FailureReason
from sipload.thresholds import evaluate, parse_threshold

T0 = 1_800_000_000.0


def make_run(out: Path, *, latency_ms: float = 10.0, count: int = 1000, timeouts: int = 0, period: float = 10.0,
             thresholds: tuple[str, ...] = ("register.p99 < 50ms",)) -> Path:
    """`count` registrations with latencies spread evenly over [latency/2, latency*1.5] ms."""
    r = Recorder(0.0)
    for i in range(count):
        r.attempt(Phase.REGISTER)
        us = int(1000 * latency_ms * (0.5 + i / count))
        r.record(Phase.REGISTER, us, us // 2)
        r.success(Phase.REGISTER)
        r.response(200)
    for _ in range(timeouts):
        r.attempt(Phase.REGISTER)
        r.failure(Phase.REGISTER, FailureReason.TIMEOUT)
    agg = Aggregate(T0)
    agg.add(r.take_interval(period))
    agg.flush_interval(T0 + period)
    values = agg.metric_values(arrival_period_s=period, offered_rate=count / period)
    result = build_result(agg, scenario="s", target="t", duration_s=period, complete=True, endpoints=count,
                          offered_rate=count / period, arrival_period_s=period,
                          thresholds=evaluate([parse_threshold(t) for t in thresholds], values))
    write_results(result, out)
    return out


def run_compare(*args: str | Path) -> Result:
    return CliRunner().invoke(compare, [str(a) for a in args])


def test_the_same_run_is_no_regression(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base")
    result = run_compare(base, base)
    assert result.exit_code == 0, result.output
    assert "OK: no regression beyond the tolerances" in result.output
    assert "register.p99 (ms)" in result.output and "rate.achieved (/s)" in result.output


def test_a_slower_run_is_a_regression_that_names_the_percentiles(tmp_path: Path) -> None:
    base, new = make_run(tmp_path / "base", latency_ms=10), make_run(tmp_path / "new", latency_ms=20)
    result = run_compare(base, new)
    assert result.exit_code == 1, result.output
    assert "REGRESSION: NEW is worse than BASE beyond the tolerances: register.p50, register.p90, register.p99" \
        in result.output
    line = next(ln for ln in result.output.splitlines() if ln.startswith("register.p99 (ms)"))
    assert "+100.0 %" in line and "WORSE (tolerance +10 % and +1 ms)" in line
    # the threshold passed in both (p99 ~30 ms < 50 ms), so it is not listed as broken
    assert "threshold" not in result.output.split("REGRESSION")[1]
    # faster is never worse, and a wide enough tolerance lets it through
    assert run_compare(new, base).exit_code == 0
    assert run_compare(base, new, "--tolerance", "150%").exit_code == 0


def test_a_percentile_with_too_few_samples_beyond_it_does_not_decide(tmp_path: Path) -> None:
    """200 samples: p50 and p90 have 100 and 20 beyond them and decide; p99 has 2, so it is shown with a
    warning but is never a regression, unless --min-tail asks for fewer."""
    base = make_run(tmp_path / "base", latency_ms=10, count=200)
    new = make_run(tmp_path / "new", latency_ms=20, count=200)
    result = run_compare(base, new)
    assert result.exit_code == 1, result.output
    assert "REGRESSION: NEW is worse than BASE beyond the tolerances: register.p50, register.p90\n" in result.output
    assert ("register.p99 does not decide: 200 samples in the smaller run, 1,000 needed for 10 beyond it "
            "(--min-tail)") in result.output
    relaxed = run_compare(base, new, "--min-tail", "2")
    assert "register.p50, register.p90, register.p99" in relaxed.output and "does not decide" not in relaxed.output


def test_small_changes_are_within_the_tolerance_and_the_floor(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", latency_ms=10)
    assert run_compare(base, make_run(tmp_path / "a", latency_ms=10.8)).exit_code == 0  # +8 %
    assert run_compare(base, make_run(tmp_path / "b", latency_ms=11.5)).exit_code == 1  # +15 %
    # +50 % on a sub-millisecond path is less than the 1 ms floor: not a regression, unless the floor is 0
    fast, slower = make_run(tmp_path / "f", latency_ms=0.4), make_run(tmp_path / "g", latency_ms=0.6)
    assert run_compare(fast, slower).exit_code == 0
    assert run_compare(fast, slower, "--latency-floor", "0").exit_code == 1
    # only the statistics asked for decide
    assert run_compare(base, make_run(tmp_path / "c", latency_ms=11.5), "--percentiles", "max").exit_code == 1
    assert run_compare(base, make_run(tmp_path / "d", latency_ms=11.5), "--phase", "refresh").exit_code == 0


def test_new_failures_are_a_regression_unless_allowed(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base")
    new = make_run(tmp_path / "new", timeouts=3)
    result = run_compare(base, new)
    assert result.exit_code == 1
    assert "failures" in result.output.split("REGRESSION")[1]
    assert "failures.timeout" in result.output
    assert run_compare(base, new, "--allow-failures", "3").exit_code == 0
    # the same failure ratio on a bigger run is not worse
    b2 = make_run(tmp_path / "b2", timeouts=10, count=1000)
    n2 = make_run(tmp_path / "n2", timeouts=20, count=2000, period=20)
    assert run_compare(b2, n2).exit_code == 0
    assert run_compare(b2, make_run(tmp_path / "n3", timeouts=30, count=2000, period=20)).exit_code == 1


def test_a_lower_rate_and_a_newly_failed_threshold_are_regressions(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base", count=1000, period=10)
    slow = make_run(tmp_path / "slow", count=1000, period=12.5)  # 80/s achieved against 100/s
    result = run_compare(base, slow)
    assert result.exit_code == 1 and "rate.achieved" in result.output.split("REGRESSION")[1]
    assert "warning: the runs offered different rates" in result.output
    assert run_compare(base, slow, "--rate-tolerance", "25").exit_code == 0
    strict = make_run(tmp_path / "strict", thresholds=("register.p99 < 14.9ms",))
    broken = make_run(tmp_path / "broken", latency_ms=10.1, thresholds=("register.p99 < 14.9ms",))
    result = run_compare(strict, broken)
    assert result.exit_code == 1
    assert "threshold register.p99 < 14.9ms" in result.output and "pass          FAIL" in result.output


def test_json_output_and_the_api(tmp_path: Path) -> None:
    base, new = make_run(tmp_path / "base"), make_run(tmp_path / "new", latency_ms=30)
    out = tmp_path / "cmp.json"
    assert run_compare(base, new, "--json", out, "--brief").exit_code == 1
    data = json.loads(out.read_text())
    assert data["regressed"] is True and "register.p99" in data["regressions"]
    p99 = next(c for c in data["changes"] if c["metric"] == "register.p99")
    assert p99["gated"] and p99["worse"] and p99["new"] == pytest.approx(3 * p99["base"], rel=0.01)
    c = compare_runs(load_run(base), load_run(new), Tolerance(latency_pct=500))
    assert not c.regressed
    assert parse_percent("12.5 %") == 12.5 and parse_percent("3") == 3.0


def test_usage_errors_exit_2(tmp_path: Path) -> None:
    base = make_run(tmp_path / "base")
    result = run_compare(base, tmp_path / "nowhere")
    assert result.exit_code == 2 and "no such directory" in result.output
    (tmp_path / "empty").mkdir()
    result = run_compare(tmp_path / "empty", base)
    assert result.exit_code == 2 and "no summary.json" in result.output
    assert run_compare(base, base, "--tolerance", "lots").exit_code == 2
    assert run_compare(base, base, "--percentiles", "p42").exit_code == 2
    # a summary.json path works as well as its directory
    assert run_compare(base / "summary.json", base).exit_code == 0


SCENARIO = """
name = "gate"
thresholds = ["register.success_rate == 100%"]
[target]
registrar = "embedded"
[endpoints]
count = 40
expires = 3600
[load]
rate = 40
duration = "1500ms"
unregister_timeout = "3s"
interval = "500ms"
[registrar]
listen = "127.0.0.1:0"
password = "pw-{{user}}"
{delay}
"""


async def test_compare_fails_on_a_seeded_regression_between_two_real_runs(tmp_path: Path) -> None:
    outs = {}
    for name, delay in (("base", ""), ("slow", 'delay = "25ms"')):
        sc = parse_scenario(SCENARIO.format(delay=delay), tmp_path / f"{name}.toml")
        outcome = await run_scenario(sc, tmp_path / name, progress=lambda _: None, handle_signals=False, workers=1)
        assert outcome.result.registrations.succeeded == 40
        outs[name] = tmp_path / name
    same = run_compare(outs["base"], outs["base"])
    assert same.exit_code == 0, same.output
    result = run_compare(outs["base"], outs["slow"])
    assert result.exit_code == 1, result.output
    worse = result.output.split("REGRESSION")[1]
    assert "register.p50" in worse  # two 25 ms round trips per registration: +50 ms
    # the other way round the medians improve (the tails of a 40-registration run on a busy machine are noise)
    assert run_compare(outs["slow"], outs["base"], "--percentiles", "p50").exit_code == 0
