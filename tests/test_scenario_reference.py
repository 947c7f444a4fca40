"""scenarios/README.md's reference lists every key the scenario loader accepts, section by section, and
no key the loader does not know; the thresholds read k6's spellings."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from sipload.providers.settings import SECTION_KEYS
from sipload.scenario import parse_scenario
from sipload.scenario.build import THRESHOLD_KEYS
from sipload.scenario.endpoints import ENDPOINT_KEYS
from sipload.scenario.groups import GROUP_KEYS
from sipload.scenario.reader import TOP_KEYS
from sipload.scenario.registrar import REGISTRAR_KEYS
from sipload.scenario.schedule import LOAD_KEYS, TIMER_KEYS
from sipload.scenario.target import TARGET_KEYS
from sipload.thresholds import ThresholdError, evaluate, parse_threshold

README = Path(__file__).resolve().parents[1] / "scenarios" / "README.md"
SECTIONS = ("target", "endpoints", "groups", "load", "timers", "registrar", "crosscheck")
# heading -> (the keys the loader accepts there, nested keys written section.key)
EXPECTED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "Top level": (tuple(k for k in TOP_KEYS if k not in SECTIONS), ()),
    "`[target]`": (TARGET_KEYS, ()),
    "`[endpoints]`": (ENDPOINT_KEYS, ()),
    "`[[groups]]`": (GROUP_KEYS, ("churn.share", "churn.every", "churn.away", "flap.share", "flap.period")),
    "`[load]`": (LOAD_KEYS, ("steps[].rate", "steps[].duration", "ramp.from", "ramp.to", "ramp.duration")),
    "`[timers]`": (TIMER_KEYS, ()),
    "`[registrar]` (only with `target.registrar = \"embedded\"`)": (
        REGISTRAR_KEYS, ("delay.distribution", "delay.min", "delay.max", "delay.mean")),
    "`[crosscheck]`": ((*SECTION_KEYS, "when"), ()),
    "Thresholds grammar": (THRESHOLD_KEYS, ()),
}


def sections() -> dict[str, str]:
    text = README.read_text(encoding="utf-8")
    reference = text[text.index("## Reference: every key"):]
    parts = re.split(r"^### (.+)$", reference, flags=re.M)
    return {parts[i].strip(): parts[i + 1] for i in range(1, len(parts), 2)}


def table_keys(body: str) -> set[str]:
    """The first column of the section's key tables."""
    return set(re.findall(r"^\| `([^`]+)` \|", body, flags=re.M)) - {"metric"}


@pytest.mark.parametrize("heading", list(EXPECTED))
def test_every_key_the_loader_accepts_is_documented_and_no_other(heading: str) -> None:
    body = sections()[heading]
    keys, nested = EXPECTED[heading]
    mentioned = set(re.findall(r"`([^`]+)`", body))
    assert set(keys) - mentioned == set(), f"{heading}: undocumented keys"
    assert set(nested) - mentioned == set(), f"{heading}: undocumented nested keys"
    in_tables = table_keys(body)
    if heading != "Thresholds grammar":  # its second table lists metrics
        assert in_tables - set(keys) == set(), f"{heading}: documented keys the loader does not know"
    for key, row in re.findall(r"^\| `([^`]+)` (\|.*)$", body, flags=re.M):
        if key in keys:
            assert row.count("|") >= 4, row  # key, type, default, meaning


def test_every_section_of_the_loader_has_a_reference() -> None:
    assert set(EXPECTED) == set(sections())


@pytest.mark.parametrize(("written", "metric"), [
    ("p(99) < 200ms", "register.p99"), ("p(99.9) < 1s", "register.p99.9"), ("refresh.p(95) < 1s", "refresh.p95"),
    ("avg < 5ms", "register.mean"), ("med < 5ms", "register.p50"), ("register.service.p(99.9) < 2ms",
                                                                    "register.service.p99.9"),
    ("unregister.avg < 1s", "unregister.mean"), ("p99 < 1s", "register.p99"), ("timeouts < 1", "timeouts"),
])
def test_k6_spellings_are_understood(written: str, metric: str) -> None:
    t = parse_threshold(written)
    assert t.metric == metric and t.expr == written
    (result,) = evaluate([t], {metric: 0.5})
    assert result.passed and result.expr == written


def test_an_unknown_percentile_names_the_known_ones() -> None:
    with pytest.raises(ThresholdError, match=r"the percentiles are p50, p90, p95, p99, p99.9; k6's p\(99\) is read"):
        parse_threshold("p(98) < 1ms")


def test_a_scenario_with_k6_thresholds_loads(tmp_path: Path) -> None:
    sc = parse_scenario('thresholds = ["p(99) < 200ms", { expr = "avg < 50ms", abort_on_fail = true }]\n'
                        "[endpoints]\ncount = 1\n[load]\nrate = 1\n", tmp_path / "k6.toml")
    assert [t.metric for t in sc.thresholds] == ["register.p99", "register.mean"]
