"""The command line as a user meets it: durations, short flags, help text, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import click
import jsonschema
import pytest
from click.testing import CliRunner, Result
from interop_helpers import sipload_env

from sipload.cli import main
from sipload.cli.options import DURATION, WHOLE_SECONDS, Milliseconds
from sipload.durations import DurationError, parse_duration
from sipload.scenario import ScenarioError, load_scenario

QUICK = """name = "quick"
seed = 3
thresholds = ["register.success_rate == 100%"]
[target]
registrar = "embedded"
domain = "sipload.test"
[endpoints]
count = 6
expires = 2
refresh_at = 0.5
refresh_margin = "200ms"
[load]
rate = 30
duration = "30m"
interval = "250ms"
unregister_timeout = "5s"
[registrar]
min_expires = 1
"""


def write(tmp_path: Path, text: str = QUICK) -> Path:
    path = tmp_path / "quick.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("1m", 60.0), ("1m30s", 90.0), ("500ms", 0.5), ("10", 10.0), ("1h30m", 5400.0),
    ("2s500ms", 2.5), ("1.5s", 1.5),
])
def test_durations_as_people_type_them(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds
    assert DURATION.convert(text, None, None) == seconds


@pytest.mark.parametrize("text", ["30s1m", "1m1m", "1 m 30 s", "soon", "-5s"])
def test_bad_durations_are_refused(text: str) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_a_latency_floor_takes_units_and_a_bare_number_stays_milliseconds() -> None:
    assert [Milliseconds().convert(v, None, None) for v in ("2", "2ms", "500us", "0.1s", "0")] == [2, 2, 0.5, 100, 0]
    with pytest.raises(click.BadParameter, match="milliseconds"):
        Milliseconds().convert("soon", None, None)
    with pytest.raises(click.BadParameter, match=">= 0"):
        Milliseconds().convert("-1", None, None)


def test_whole_seconds_round_up_and_have_a_minimum() -> None:
    assert WHOLE_SECONDS.convert("1h", None, None) == 3600
    assert WHOLE_SECONDS.convert("1500ms", None, None) == 2
    with pytest.raises(click.BadParameter, match="at least 1"):
        WHOLE_SECONDS.convert("0", None, None)


def _commands() -> list[tuple[str, click.Command]]:
    out: list[tuple[str, click.Command]] = []
    assert isinstance(main, click.Group)
    for name, cmd in main.commands.items():
        out.append((name, cmd))
    return out


@pytest.mark.parametrize(("name", "command"), _commands())
def test_every_option_of_every_command_has_help(name: str, command: click.Command) -> None:
    missing = [p.name for p in command.params if isinstance(p, click.Option) and not p.help and p.name != "help"]
    assert not missing, f"sipload {name}: options without help: {missing}"


def test_workers_help_says_the_real_default_and_the_short_flags_exist() -> None:
    result = CliRunner().invoke(main, ["run", "--help"])
    assert result.exit_code == 0
    text = " ".join(result.output.split())
    assert "one per CPU core, at most one per 200 endpoints" in text
    for flag in ("-d, --duration", "-r, --rate", "-n, --endpoints", "-o, --out", "-w, --workers", "-t, --target"):
        assert flag in text
    registrar = " ".join(CliRunner().invoke(main, ["registrar", "--help"]).output.split())
    assert "-d, --duration" in registrar and "--realm TEXT Digest realm" in registrar


def test_the_scenario_files_take_the_same_compound_durations(tmp_path: Path) -> None:
    sc = load_scenario(write(tmp_path, QUICK.replace('duration = "30m"', 'duration = "1m30s"')))
    assert sc.load.duration == 90.0
    with pytest.raises(ScenarioError, match=r"load\.duration.*'30s1m'"):
        load_scenario(write(tmp_path, QUICK.replace('duration = "30m"', 'duration = "30s1m"')))


def one_line(result: Result) -> str:
    """The one line a usage error prints on stderr (and nothing on stdout)."""
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and not result.stdout.strip(), result.output
    assert "Traceback" not in result.output
    return lines[0]


@pytest.mark.parametrize(("args", "fragments"), [
    (["run", "{scenario}", "-d", "soon"], ["sipload run:", "'-d' / '--duration'", "'soon'", "1m30s"]),
    (["run", "{scenario}", "--duration", "-5s"], ["'--duration'", "must not be negative", "'-5s'"]),
    (["run", "{scenario}", "-d", "0"], ["'--duration'", "more than 0"]),
    (["registrar", "--default-expires", "an hour"], ["sipload registrar:", "'--default-expires'", "'an hour'"]),
    (["registrar", "--nonce-lifetime", "5 min"], ["'--nonce-lifetime'", "'5 min'"]),
    (["check", "--provider", "telnyx", "-n", "3", "--poll-interval", "x"], ["sipload check:", "'--poll-interval'"]),
    (["check", "--provider", "telnyx", "-n", "3", "--timeout", "0s"], ["'--timeout'", "more than 0"]),
    (["run", "{scenario}", "--rate", "fast"], ["'-r' / '--rate'", "'fast'"]),
    (["compare", "{dir}", "{dir}", "--latency-floor", "a bit"], ["sipload compare:", "'--latency-floor'", "'a bit'"]),
])
def test_a_bad_value_is_one_clear_line_naming_the_option_and_exit_2(tmp_path: Path, args: list[str],
                                                                     fragments: list[str]) -> None:
    scenario = str(write(tmp_path))
    result = CliRunner().invoke(main, [a.replace("{scenario}", scenario).replace("{dir}", str(tmp_path))
                                       for a in args])
    assert result.exit_code == 2, result.output
    line = one_line(result)
    for fragment in fragments:
        assert fragment in line, line


def test_bare_sipload_still_shows_the_help_and_an_unknown_command_is_one_line() -> None:
    bare = CliRunner().invoke(main, [])
    assert "Commands:" in bare.output and "run" in bare.output and "Traceback" not in bare.output
    unknown = CliRunner().invoke(main, ["runn"])
    assert unknown.exit_code == 2 and "No such command 'runn'" in one_line(unknown)


def test_a_bad_duration_from_the_installed_command_is_one_line(tmp_path: Path) -> None:
    """As a user meets it: the real entry point in a process of its own."""
    done = subprocess.run([sys.executable, "-m", "sipload", "run", str(write(tmp_path)), "-d", "1m30"],
                          capture_output=True, text=True, timeout=60, env=sipload_env())
    assert done.returncode == 2, done.stderr
    assert done.stdout == "" and done.stderr.count("\n") == 1, done.stderr
    assert "'1m30'" in done.stderr and "--duration" in done.stderr and "Traceback" not in done.stderr


def test_run_takes_a_typed_duration_and_short_flags(tmp_path: Path) -> None:
    """-d 1s500ms overrides the scenario's 30 minutes: the run ends in seconds, with the short flags."""
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["run", str(write(tmp_path)), "-d", "1s500ms", "-n", "4", "-r", "20",
                                       "-w", "1", "-o", str(out), "-t", "embedded", "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["registrations"]["attempted"] == 4
    assert summary["run"]["parameters"]["duration_s"] == 1.5
    assert summary["run"]["parameters"]["rate"] == 20 and summary["run"]["workers"] == 1
    assert summary["duration_s"] < 60


# ------------------------------------------------------------------------- --out holds a baseline

def test_a_second_run_into_the_same_out_refuses_unless_force(tmp_path: Path) -> None:
    out = tmp_path / "baseline"
    args = ["run", str(write(tmp_path)), "-d", "1s", "-n", "3", "-r", "30", "-w", "1", "-o", str(out), "--quiet"]
    first = CliRunner().invoke(main, args)
    assert first.exit_code == 0, first.output
    baseline = (out / "summary.json").read_bytes()
    again = CliRunner().invoke(main, args)
    assert again.exit_code == 2
    line = one_line(again)
    assert str(out) in line and "not empty" in line and "--force" in line
    assert (out / "summary.json").read_bytes() == baseline          # the baseline is untouched
    forced = CliRunner().invoke(main, [*args, "--force"])
    assert forced.exit_code == 0, forced.output
    assert (out / "summary.json").read_bytes() != baseline          # a new run's summary (its own start time)
    assert json.loads((out / "summary.json").read_text())["registrations"]["succeeded"] == 3


def test_an_empty_out_directory_made_beforehand_is_used(tmp_path: Path) -> None:
    out = tmp_path / "made"
    out.mkdir()
    result = CliRunner().invoke(main, ["run", str(write(tmp_path)), "-d", "1s", "-n", "2", "-w", "1", "-o", str(out),
                                       "--quiet"])
    assert result.exit_code == 0, result.output
    assert (out / "summary.json").is_file()


# ------------------------------------------------------------------------- gates that explain themselves

def test_a_threshold_without_data_says_why(tmp_path: Path) -> None:
    """A gate that fails for lack of data names what did not happen and why, on the line, in summary.json
    and in junit.xml."""
    text = (QUICK.replace('thresholds = ["register.success_rate == 100%"]',
                          'thresholds = ["register.success_rate == 100%", "refresh.p99 < 1s", '
                          '"unregister.success_rate == 100%", "crosscheck.agreement == 100%"]')
            .replace("expires = 2", "expires = 60\nrefresh_jitter = 0.1")
            .replace('unregister_timeout = "5s"', 'unregister_timeout = "5s"\nunregister = false'))
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["run", str(write(tmp_path, text)), "-d", "1s", "-n", "3", "-r", "30",
                                       "-w", "1", "-o", str(out), "--quiet"])
    assert result.exit_code == 1, result.output
    refresh = ("no refresh happened: the run ended after 1 s, before the first refresh point, 24 s after a "
               "registration (expires 60 s x refresh_at 0.5, less 0.1 of jitter)")
    assert f"[FAIL] refresh.p99 < 1s  (value n/a: {refresh})" in result.output
    assert "[FAIL] unregister.success_rate == 100%  (value n/a: no unregistration happened: load.unregister is " \
           "false)" in result.output
    assert "(value n/a: no cross-check ran ([crosscheck] is not set))" in result.output
    assert "[PASS] register.success_rate == 100%  (value 100)" in result.output
    summary = json.loads((out / "summary.json").read_text())
    whys = {t["expr"]: t["why"] for t in summary["thresholds"]}
    assert whys["refresh.p99 < 1s"] == refresh and whys["register.success_rate == 100%"] == ""
    assert f"refresh.p99 has no value ({refresh}), wanted &lt; 1s" in (out / "junit.xml").read_text()


def test_an_abort_on_fail_threshold_ends_the_run_early_and_still_unregisters(tmp_path: Path) -> None:
    """k6's abortOnFail: a registrar rejecting half the passwords fails the build seconds in, not after the
    scenario's minute; the endpoints that did register are unregistered and every result is written."""
    text = (QUICK.replace('thresholds = ["register.success_rate == 100%"]',
                          'thresholds = [{ expr = "register.success_rate == 100%", abort_on_fail = true, '
                          'delay = "1s" }, "register.p99 < 10s"]')
            .replace("expires = 2", "expires = 60")
            + '[[groups]]\nname = "half-wrong"\nshare = 1.0\nwrong_passwords = 0.5\n')
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["run", str(write(tmp_path, text)), "-d", "60s", "-n", "20", "-r", "40",
                                       "-w", "1", "-o", str(out)])
    assert result.exit_code == 1, result.output
    assert "threshold register.success_rate == 100% missed (register.success_rate = " in result.output
    assert "aborting the run (abort_on_fail); unregistering endpoints" in result.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["duration_s"] < 20 and summary["complete"] is False
    assert summary["interrupted_by"].startswith("abort_on_fail: register.success_rate == 100% (value ")
    regs, unregs = summary["registrations"], summary["unregistrations"]
    assert regs["failed"] > 0 and unregs["succeeded"] == regs["succeeded"] > 0
    assert (out / "report.html").exists() and (out / "junit.xml").exists()


@pytest.mark.parametrize(("item", "message"), [
    ('{ expr = "register.p99 < 1s", delay = "5s" }', "thresholds[0].delay: applies only with abort_on_fail = true"),
    ('{ expr = "register.p99 < 1s", abort_on_fail = "yes" }', "thresholds[0].abort_on_fail: must be"),
    ('{ expr = "register.p99 << 1s", abort_on_fail = true }', "thresholds[0].expr: "),
    ('{ expression = "register.p99 < 1s" }', "thresholds[0]"),
    ("42", "thresholds[0]: must be a string such as 'register.p99 < 200ms' or a table"),
])
def test_a_bad_threshold_table_is_one_line_naming_the_field(tmp_path: Path, item: str, message: str) -> None:
    text = QUICK.replace('thresholds = ["register.success_rate == 100%"]', f"thresholds = [{item}]")
    with pytest.raises(ScenarioError) as info:
        load_scenario(write(tmp_path, text))
    assert message in str(info.value) and "\n" not in str(info.value)


# ------------------------------------------------------------------------- results a script can read

def test_a_stepped_run_prints_its_knee_and_writes_its_capacity(tmp_path: Path) -> None:
    text = (QUICK.replace('thresholds = ["register.success_rate == 100%"]',
                          'thresholds = ["register.success_rate == 100%", "register.p99 < 5s"]')
            .replace("count = 6", "count = 36")        # 12 + 24 arrivals: the steps run in full
            .replace('rate = 30\nduration = "30m"',
                     'steps = [{ rate = 10, duration = "1250ms" }, { rate = 20, duration = "1250ms" }]\n'
                     'duration = "2500ms"'))
    out = tmp_path / "o"
    result = CliRunner().invoke(main, ["run", str(write(tmp_path, text)), "-w", "1", "-o", str(out), "--quiet"])
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    cap = summary["capacity"]
    assert [s["offered"] for s in cap["steps"]] == [10, 20]
    assert cap["knee"] == {"step": 1, "offered": 20} and cap["breaking"] is None
    assert f"capacity: {cap['verdict']}" in result.output
    schema = json.loads((Path(__file__).parents[1] / "sipload" / "data" / "summary.schema.json").read_text())
    jsonschema.validate(summary, schema)
    plain = tmp_path / "plain"
    CliRunner().invoke(main, ["run", str(write(tmp_path)), "-d", "1s", "-n", "3", "-w", "1", "-o", str(plain),
                              "--quiet"])
    assert json.loads((plain / "summary.json").read_text())["capacity"] is None


# ------------------------------------------------------------------------- one scenario means one load

def test_max_in_flight_is_split_across_workers_into_one_run_wide_cap() -> None:
    from sipload.engine.worker import Shard
    assert [Shard(k, 3).share(8) for k in range(3)] == [3, 3, 2]
    assert [Shard(k, 2).share(1) for k in range(2)] == [1, 1]   # at least one each (run() keeps workers <= cap)
    assert Shard(0, 2, cap=5).share(8) == 5


@pytest.mark.parametrize("engine", ["native", "python"])
def test_the_in_flight_cap_holds_for_the_whole_run_whatever_the_workers(tmp_path: Path, engine: str) -> None:
    """A registrar that answers in 20 ms and a cap of 2 in flight: 2 / 40 ms (challenge + auth) is ~50
    registrations a second, with one worker or two; a cap per worker would let two workers do twice that."""
    rates = {}
    for workers in (1, 2):
        text = (QUICK.replace("count = 6", "count = 60").replace("expires = 2", "expires = 60")
                .replace('duration = "30m"', 'duration = "3s"\nmax_in_flight = 2')
                .replace("rate = 30", "rate = 300").replace("min_expires = 1", 'min_expires = 1\ndelay = "20ms"'))
        out = tmp_path / f"w{workers}"
        result = CliRunner().invoke(main, ["run", str(write(tmp_path, text)), "-w", str(workers), "-o", str(out),
                                           "--engine", engine, "--quiet"])
        summary = json.loads((out / "summary.json").read_text())
        assert summary["registrations"]["succeeded"] == 60, result.output
        rates[workers] = summary["rate"]["achieved"]
    assert 25 < rates[1] < 60 and 25 < rates[2] < 60, rates
