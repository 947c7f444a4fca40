"""Helpers shared by the interop suites (tests/test_interop_*.py).

- ``run_sipload``: `python -m sipload ...` as a subprocess, bounded, output captured.
- ``kamailio_scenario``: the TOML of a run against a Kamailio on 127.0.0.1.
- ``lookup_all``: ``ul.lookup`` of many users (sequential: ~1 ms each on loopback).
- ``LineProcess``: a subprocess whose output lines are read as they come (``RegistrarProcess``:
  `sipload registrar`; the pyVoIP phones of tests/pyvoip_phones.py).
- ``line_fields``: the ``key=value`` fields of the registrar's stats and totals lines.

Only loopback addresses and test hosts of tests/netns.py are ever targets.
"""

from __future__ import annotations

import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Self

import trio

from scenarios import Table, scenario_toml
from sipload.providers.kamailio import KamailioRpc
from sipload.providers.status import RegistrationStatus

REPO = Path(__file__).resolve().parents[1]


def sipload_env() -> dict[str, str]:
    """The environment of a sipload subprocess: the repository first on the import path."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH", "")) if p)
    env["PYTHONUNBUFFERED"] = "1"
    return env


@dataclass(frozen=True, slots=True)
class CliRun:
    returncode: int
    stdout: str
    stderr: str
    elapsed: float

    def __str__(self) -> str:
        return (
            f"exit {self.returncode} after {self.elapsed:.1f} s\n"
            f"--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"
        )


async def run_sipload(*args: str, timeout: float) -> CliRun:
    """`python -m sipload ARGS` in the repository; fails the test when it takes longer than `timeout`."""
    start = time.monotonic()
    with trio.move_on_after(timeout) as scope:
        proc = await trio.run_process(
            [sys.executable, "-m", "sipload", *args],
            cwd=REPO,
            env=sipload_env(),
            stdin=subprocess.DEVNULL,
            capture_stdout=True,
            capture_stderr=True,
            check=False,
        )
    if scope.cancelled_caught:
        raise AssertionError(f"`sipload {' '.join(args)}` did not finish within {timeout:g} s (a hang): killed")
    return CliRun(proc.returncode, proc.stdout.decode(errors="replace"), proc.stderr.decode(errors="replace"),
                  time.monotonic() - start)


def read_summary(out: Path) -> dict[str, Any]:
    data = json.loads((out / "summary.json").read_text())
    assert isinstance(data, dict)
    return data


def read_endpoints(out: Path) -> list[dict[str, str]]:
    with (out / "endpoints.csv").open(newline="") as f:
        return list(csv.DictReader(f))


def kamailio_scenario(
    port: int,
    *,
    name: str,
    transport: str = "udp",
    first: int | None = None,
    count: int | None = None,
    csv_file: str | None = None,
    expires: int = 60,
    rate: float = 100.0,
    duration: float = 2.0,
    unregister_timeout: float = 5.0,
    t1: str = "500ms",
    max_retries: int = 3,
    thresholds: Sequence[str] = ("register.success_rate == 100%",),
    host: str = "127.0.0.1",
    scheme: str = "sip",
    seed: int | None = None,
    interval: str = "1s",
    target: Table | None = None,
    endpoints: Table | None = None,
    timers: Table | None = None,
    crosscheck: Table | None = None,
) -> str:
    """A scenario against sip:HOST:PORT (default 127.0.0.1; the domain is the host: Kamailio's realm is the
    To domain); `target`, `endpoints`, `timers`: more keys of those tables; `crosscheck`: that table."""
    if (csv_file is None) == (first is None or count is None):
        raise ValueError("give either first and count, or csv_file")
    users: Table
    if csv_file is not None:
        users = {"csv": csv_file}
    else:
        assert count is not None and first is not None
        users = {"count": count, "first": first, "username": "user{n}"}
    return scenario_toml(
        name, seed=seed, thresholds=thresholds,
        target={"registrar": f"{scheme}:{host}:{port};transport={transport}", "domain": host, **(target or {})},
        endpoints={**users, "expires": expires, "refresh_at": 0.5, "refresh_jitter": 0.05, **(endpoints or {})},
        load={"rate": int(rate) if float(rate).is_integer() else rate, "max_in_flight": 1000,
              "duration": f"{duration:g}s", "unregister": True, "unregister_timeout": f"{unregister_timeout:g}s",
              "interval": interval},
        timers={"t1": t1, "max_retries": max_retries, **(timers or {})}, crosscheck=crosscheck)


async def lookup_all(rpc: KamailioRpc, users: Iterable[str]) -> dict[str, RegistrationStatus]:
    return {user: await rpc.lookup(user) for user in users}


_FIELD = re.compile(r"([A-Za-z_0-9]+)=(\S+)")


def line_fields(line: str) -> dict[str, str]:
    """`a=1 b=x` -> {"a": "1", "b": "x"} (the registrar's stats and totals lines)."""
    return dict(_FIELD.findall(line))


class LineProcess:
    """A subprocess whose stdout (and stderr) lines are collected while it runs, from a nursery task.

    ``proc = await LineProcess.start(nursery, argv, ready=pred)`` waits for a first line that
    satisfies `pred`; ``await proc.wait_line(pred, timeout)``; ``await proc.send_line("stop")``;
    ``await proc.stop()`` (SIGTERM, then SIGKILL after a timeout). Every wait is bounded.
    """

    name = "subprocess"

    def __init__(self, process: trio.Process) -> None:
        self.process = process
        self.lines: list[str] = []
        self._changed = trio.Event()
        self.ended = trio.Event()

    @classmethod
    async def start(
        cls, nursery: trio.Nursery, argv: Sequence[str], *, ready: Callable[[str], bool], timeout: float = 15.0,
        stdin: bool = False,
    ) -> Self:
        process = await trio.lowlevel.open_process(
            list(argv),
            cwd=REPO,
            env=sipload_env(),
            stdin=subprocess.PIPE if stdin else subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        proc = cls(process)
        nursery.start_soon(proc._read)
        try:
            await proc.wait_line(ready, timeout)
        except BaseException:
            with trio.CancelScope(shield=True):
                await proc.stop(signal.SIGKILL)
            raise
        return proc

    async def _read(self) -> None:
        assert self.process.stdout is not None
        buffer = b""
        try:
            async for chunk in self.process.stdout:
                buffer += chunk
                *complete, buffer = buffer.split(b"\n")
                self.lines.extend(line.decode(errors="replace") for line in complete)
                self._changed.set()
                self._changed = trio.Event()
        finally:
            if buffer:
                self.lines.append(buffer.decode(errors="replace"))
            self.ended.set()
            self._changed.set()

    @property
    def output(self) -> str:
        return "\n".join(self.lines)

    async def wait_line(self, predicate: Callable[[str], bool], timeout: float, start: int = 0) -> str:
        """The first line (from index `start`) that satisfies `predicate`; AssertionError after `timeout`."""
        with trio.move_on_after(timeout):
            while True:
                for line in self.lines[start:]:
                    if predicate(line):
                        return line
                if self.ended.is_set():
                    break
                await self._changed.wait()
        raise AssertionError(f"{self.name}: no such line within {timeout:g} s; output:\n{self.output}")

    async def send_line(self, line: str) -> None:
        assert self.process.stdin is not None
        await self.process.stdin.send_all(line.encode() + b"\n")

    async def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig` (if still running) and wait; SIGKILL and AssertionError after `timeout`."""
        if self.process.returncode is None:
            self.process.send_signal(sig)
        return await self.wait(timeout)

    async def wait(self, timeout: float) -> int:
        """Its exit code, once it exits and its output is read; SIGKILL and AssertionError after `timeout`."""
        with trio.move_on_after(timeout):
            await self.process.wait()
            await self.ended.wait()
            assert self.process.returncode is not None
            return self.process.returncode
        self.process.kill()
        with trio.CancelScope(shield=True):
            await self.process.wait()
        raise AssertionError(f"{self.name} did not end within {timeout:g} s (killed); output:\n{self.output}")


class RegistrarProcess(LineProcess):
    """`sipload registrar ARGS` as a subprocess: started once it says "listening on"."""

    name = "sipload registrar"

    @classmethod
    async def launch(cls, nursery: trio.Nursery, args: Sequence[str]) -> RegistrarProcess:
        return await cls.start(nursery, [sys.executable, "-m", "sipload", "registrar", *args],
                               ready=lambda line: line.startswith("listening on"))
