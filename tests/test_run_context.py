"""summary.json's `run`: what a run was (version, workers, engine, host, effective load), and `sipload compare`
saying, a line each, where two runs differ in it. Real runs against the embedded registrar, through the CLI."""

from __future__ import annotations

import json
import os
import platform
import shutil
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from click.testing import CliRunner

from sipload import __version__
from sipload.cli import main
from sipload.report.runinfo import differences, load_parameters, missing
from sipload.report.schema import summary_schema
from sipload.scenario import parse_scenario

SCENARIO = """name = "context"
seed = 5
[target]
registrar = "embedded"
[endpoints]
count = 6
expires = 2
refresh_at = 0.5
refresh_margin = "200ms"
[load]
rate = 30
duration = "1s"
max_in_flight = 7
interval = "250ms"
unregister_timeout = "5s"
[registrar]
min_expires = 1
"""

STEPPED = SCENARIO.replace("rate = 30\n", 'steps = [{ rate = 10, duration = "2s" }, { rate = 20, duration = "3s" }]\n')


def run(tmp_path: Path, name: str, *args: str) -> dict[str, Any]:
    path = tmp_path / "context.toml"
    path.write_text(SCENARIO)
    out = tmp_path / name
    result = CliRunner().invoke(main, ["run", str(path), "-o", str(out), "--quiet", *args])
    assert result.exit_code == 0, result.output
    summary: dict[str, Any] = json.loads((out / "summary.json").read_text())
    return summary


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two real runs: `base` as the file says, `new` with 4 endpoints at 20/s for 1.5 s."""
    root = tmp_path_factory.mktemp("context")
    run(root, "base", "-w", "1")
    run(root, "new", "-w", "1", "-n", "4", "-r", "20", "-d", "1500ms")
    return root


def test_the_summary_says_what_ran_where_and_with_which_load(runs: Path) -> None:
    summary = json.loads((runs / "new" / "summary.json").read_text())
    ctx = summary["run"]
    assert ctx["sipload_version"] == __version__
    assert ctx["workers"] == 1 and ctx["placement"] == "in-process"
    assert ctx["engine"] in ("native", "python") and ctx["engine"] == summary["engines"]["default"]
    assert ctx["engine_requested"] == "auto"
    host = ctx["host"]
    assert host["cores"] == len(os.sched_getaffinity(0))
    assert (host["kernel"], host["python"], host["machine"]) == (
        platform.release(), platform.python_version(), platform.machine())
    assert ctx["parameters"] == {           # the overrides as they took effect, the rest from the file
        "endpoints": 4, "shape": "constant", "rate": 20, "steps": None, "ramp": None, "max_in_flight": 7,
        "expires_s": 2, "refresh_at": 0.5, "duration_s": 1.5, "unregister": True, "groups": ["default"], "seed": 5,
    }


def test_the_run_context_is_in_the_schema_and_checked_by_it(runs: Path) -> None:
    schema = summary_schema()
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    summary = json.loads((runs / "base" / "summary.json").read_text())
    assert list(validator.iter_errors(summary)) == []
    broken = json.loads(json.dumps(summary))
    broken["run"]["workers"] = 0
    assert list(validator.iter_errors(broken))
    del summary["run"]["host"]["cores"]
    assert list(validator.iter_errors(summary))


def test_a_stepped_load_records_its_steps(tmp_path: Path) -> None:
    sc = parse_scenario(STEPPED, tmp_path / "s.toml")
    params = load_parameters(sc)
    assert (params.shape, params.rate) == ("steps", None)
    assert params.steps == [{"rate": 10, "duration_s": 2.0}, {"rate": 20, "duration_s": 3.0}]
    constant = load_parameters(sc.with_overrides(rate=15))        # --rate replaces the steps
    assert (constant.shape, constant.rate, constant.steps) == ("constant", 15, None)


def test_compare_says_a_line_for_each_difference_of_the_runs(runs: Path) -> None:
    result = CliRunner().invoke(main, ["compare", str(runs / "base"), str(runs / "new")])
    lines = [line for line in result.output.splitlines() if "the runs differ in" in line]
    assert lines == [
        "warning: the runs differ in endpoints: 6 in BASE, 4 in NEW",
        "warning: the runs differ in rate: 30 in BASE, 20 in NEW",
        "warning: the runs differ in duration_s: 1 in BASE, 1.5 in NEW",
    ], result.output
    same = CliRunner().invoke(main, ["compare", str(runs / "base"), str(runs / "base")])
    assert "differ" not in same.output


def test_compare_names_workers_host_and_an_older_summary(runs: Path, tmp_path: Path) -> None:
    other = tmp_path / "elsewhere"
    shutil.copytree(runs / "base", other)
    summary = json.loads((other / "summary.json").read_text())
    summary["run"]["workers"], summary["run"]["placement"] = 2, "processes"
    summary["run"]["host"]["cores"] = 64
    (other / "summary.json").write_text(json.dumps(summary))
    result = CliRunner().invoke(main, ["compare", str(runs / "base"), str(other)])
    lines = [line for line in result.output.splitlines() if "the runs differ in" in line]
    assert lines == [
        "warning: the runs differ in workers: 1 in BASE, 2 in NEW",
        "warning: the runs differ in placement: in-process in BASE, processes in NEW",
        f"warning: the runs differ in host cores: {len(os.sched_getaffinity(0))} in BASE, 64 in NEW",
    ], result.output
    del summary["run"]                           # as written before sipload recorded it
    (other / "summary.json").write_text(json.dumps(summary))
    old = CliRunner().invoke(main, ["compare", str(runs / "base"), str(other)])
    assert [line for line in old.output.splitlines() if "run context" in line] == [
        "warning: NEW does not record its run context (written by an older sipload): "
        "cannot tell whether workers, host or load parameters differ"]


def test_differences_of_steps_and_ramps_read_as_loads() -> None:
    base = {"parameters": {"steps": [{"rate": 10, "duration_s": 2}], "ramp": None}}
    new = {"parameters": {"steps": None, "ramp": {"from": 1, "to": 50, "duration_s": 30}}}
    assert differences(base, new) == ["steps: 10/s for 2 s in BASE, none in NEW",
                                      "ramp: none in BASE, 1/s to 50/s over 30 s in NEW"]
    assert differences(None, None) == [] and differences(base, None) == []
    assert missing(None, None) is None and missing(base, new) is None
    assert missing(None, new) is not None and "BASE does not record" in str(missing(None, new))


def test_worker_processes_are_recorded(tmp_path: Path) -> None:
    ctx = run(tmp_path, "two", "-w", "2")["run"]
    assert (ctx["workers"], ctx["placement"]) == (2, "processes")
