"""Worker processes: the parent's merge of the workers' endpoint states gives the same endpoints.csv and
counts as the in-process worker (the end-of-run path of `--workers N`)."""

from __future__ import annotations

import csv
import gc
import json
from collections import Counter
from pathlib import Path

import trio

from sipload.engine.embedded import start_embedded_registrar
from sipload.engine.pool import WorkerPool
from sipload.engine.run import ExitCode, run_scenario
from sipload.report.result import EndpointState
from sipload.scenario import load_scenario

COUNT = 24
WRONG = {"user5", "user12", "user19"}  # the registrar knows another password for these: auth_rejected

BODY = f"""
name = "merge"
seed = 11
[target]
registrar = "embedded"
domain = "sipload.test"
[endpoints]
count = {COUNT}
username = "user{{n}}"
password = "pw-user{{n}}"
expires = 60
[load]
rate = 200
duration = "1s"
unregister = true
unregister_timeout = "5s"
interval = "1s"
[timers]
t1 = "200ms"
max_retries = 1
[registrar]
listen = "127.0.0.1:0"
realm = "sipload.test"
users_csv = "users.csv"
min_expires = 1
"""

# what identifies an endpoint's outcome; contact (the worker's port) and call_id (its id source) differ
COMPARED = ("index", "username", "state", "last_status", "failure_reason", "registrations", "refreshes")


def _run(tmp: Path, workers: int) -> tuple[list[dict[str, str]], dict[str, object]]:
    out = tmp / f"out{workers}"
    outcome = trio.run(lambda: run_scenario(load_scenario(tmp / "merge.toml"), out, progress=lambda _: None,
                                            handle_signals=False, workers=workers))
    assert outcome.exit_code is ExitCode.OK
    with (out / "endpoints.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    return rows, json.loads((out / "summary.json").read_text())


def test_two_worker_processes_write_the_endpoints_and_counts_of_one(tmp_path: Path) -> None:
    users = [f"user{n};{'other' if f'user{n}' in WRONG else f'pw-user{n}'}" for n in range(1, COUNT + 1)]
    (tmp_path / "users.csv").write_text("\n".join(users) + "\n")
    (tmp_path / "merge.toml").write_text(BODY)

    one_rows, one = _run(tmp_path, 1)
    two_rows, two = _run(tmp_path, 2)

    assert [r["index"] for r in two_rows] == [str(i) for i in range(COUNT)]  # merged in index order
    assert [{k: r[k] for k in COMPARED} for r in two_rows] == [{k: r[k] for k in COMPARED} for r in one_rows]
    states = Counter(r["state"] for r in two_rows)
    reasons = Counter(r["failure_reason"] for r in two_rows if r["failure_reason"])
    assert reasons == {"auth_rejected": len(WRONG)}
    assert states["unregistered"] == COUNT - len(WRONG)
    assert {r["username"] for r in two_rows if r["failure_reason"]} == WRONG
    for key in ("registrations", "unregistrations", "failures", "responses"):
        assert two[key] == one[key], key
    assert len({r["contact"] for r in two_rows}) == COUNT  # every endpoint kept its own contact


async def test_what_lived_before_the_run_is_left_out_of_the_collector_while_it_runs(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_text("".join(f"user{n};pw-user{n}\n" for n in range(1, COUNT + 1)))
    (tmp_path / "merge.toml").write_text(BODY)
    sc = load_scenario(tmp_path / "merge.toml")
    frozen: list[int] = []

    async def hold(states: list[EndpointState]) -> None:  # called while every endpoint is registered
        frozen.append(gc.get_freeze_count())

    gc.unfreeze()
    async with trio.open_nursery() as nursery:
        destination = await start_embedded_registrar(nursery, sc)  # the parent's registrar, listening
        pool = WorkerPool(sc, destination, 1, lambda snap, worker: None)
        pool.hold_hook = hold
        outcome = await pool.run()
        nursery.cancel_scope.cancel()
    assert {e.state for e in outcome.report.endpoints} == {"unregistered"}
    assert len(frozen) == 1 and frozen[0] > 1000   # modules, the scenario, the registrar: frozen
    assert gc.get_freeze_count() == 0              # and collectable again once the run is over
