"""Resources: file descriptors and local ports are checked before a run starts (a clear message with the
command that raises the limit, exit 2, nothing started); runs are bounded in time and in requests."""

from __future__ import annotations

import math
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

import pytest
import trio

import sipload.engine.run as run_module
from sipload.engine.limits import (
    BASE_FDS,
    check_resources,
    fds_needed,
    ports_needed_per_address,
    read_port_range,
    time_bound,
)
from sipload.engine.run import ExitCode, run_scenario
from sipload.scenario import Scenario, parse_scenario
from sipload.transport.udp import UdpSocket

ROOT = Path(__file__).resolve().parent.parent


def scenario(count: int, *, socket: str = "per-endpoint", extra: str = "", target: str = "embedded",
             load: str = 'rate = 100\nduration = "20s"') -> Scenario:
    return parse_scenario(
        f'name = "limits"\n[target]\nregistrar = "{target}"\ndomain = "sipload.test"\n'
        f'[endpoints]\ncount = {count}\nsocket = "{socket}"\n{extra}\n[load]\n{load}\n',
        Path("limits.toml"))


def test_descriptors_needed_per_worker_process() -> None:
    big = scenario(1000)
    assert fds_needed(big, 1) == 1000 + BASE_FDS + 2
    assert fds_needed(big, 4) == 250 + BASE_FDS + 8          # each worker process opens its shard only
    assert fds_needed(scenario(1000, socket="shared"), 1) == 1 + BASE_FDS + 2
    spread = scenario(1000, socket="shared", extra='source_addresses = "127.0.0.2-127.0.0.11"')
    assert fds_needed(spread, 1) == 10 + BASE_FDS + 2


def test_too_few_descriptors_is_a_clear_message_with_the_command() -> None:
    message = check_resources(scenario(1000), 1, nofile=(256, 256), port_range=(32768, 60999))
    assert message is not None
    assert "needs about 1066 file descriptors" in message and "limit is 256" in message
    assert "1000 per-endpoint UDP sockets" in message
    assert "`ulimit -n 1066`" in message and "hard limit is 256" in message
    assert 'endpoints.socket = "shared"' in message
    assert check_resources(scenario(1000, socket="shared"), 1, nofile=(256, 256)) is None
    assert check_resources(scenario(1000), 8, nofile=(256, 256)) is None          # 125 per worker fits
    tcp = scenario(300, target="sip:127.0.0.1:5070;transport=tcp")
    tcp_message = check_resources(tcp, 1, nofile=(128, 1_000_000))
    assert tcp_message is not None and "per-endpoint TCP connections" in tcp_message
    assert "hard limit" not in tcp_message.split("ulimit -n")[1].split(";")[0]  # the soft limit is enough to raise


def test_the_soft_limit_is_raised_when_the_hard_one_allows_it() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    need = fds_needed(scenario(500), 1)
    if hard != resource.RLIM_INFINITY and hard < need:
        pytest.skip(f"hard limit {hard} below {need}")
    resource.setrlimit(resource.RLIMIT_NOFILE, (128, hard))
    try:
        assert check_resources(scenario(500), 1) is None
        assert resource.getrlimit(resource.RLIMIT_NOFILE)[0] == need
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


def test_too_few_ephemeral_ports_is_a_clear_message() -> None:
    message = check_resources(scenario(1000), 4, nofile=(1 << 20, 1 << 20), port_range=(40000, 40499))
    assert message is not None
    assert "binds 1000 local ports on one source address" in message and "40000-40499 has 500" in message
    assert "net.ipv4.ip_local_port_range" in message and "endpoints.source_addresses" in message
    spread = scenario(1000, extra='source_addresses = "127.0.0.2-127.0.0.5"')
    assert ports_needed_per_address(spread, 4) == 250
    assert check_resources(spread, 4, nofile=(1 << 20, 1 << 20), port_range=(40000, 40499)) is None
    low, high = read_port_range()
    assert 0 < low <= high <= 65535


def test_sipload_run_refuses_to_start_without_enough_descriptors(tmp_path: Path) -> None:
    """A real process with `ulimit -n 100` (soft and hard): exit 2 and the command, before anything starts."""
    path = tmp_path / "many.toml"
    path.write_text('name = "many"\n[endpoints]\ncount = 400\nsocket = "per-endpoint"\n'
                    '[load]\nrate = 100\nduration = "10s"\n')
    out = tmp_path / "out"

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    proc = subprocess.run([sys.executable, "-m", "sipload", "run", str(path), "--out", str(out), "--workers", "1"],
                          cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True, text=True,
                          timeout=60, preexec_fn=limit, check=False)
    assert proc.returncode == ExitCode.USAGE, proc
    assert "ulimit -n 466" in proc.stderr and "limit is 100" in proc.stderr, proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr
    assert not out.exists()                                  # nothing was started


async def test_a_run_against_a_black_hole_is_bounded_in_time_and_requests(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(run_module, "_write_report", lambda out, progress: None)
    received = 0

    def count(data: bytes, addr: tuple[str, int]) -> None:
        nonlocal received
        received += 1

    with UdpSocket("127.0.0.1", 0) as hole:
        sc = scenario(10, socket="shared", target=f"sip:127.0.0.1:{hole.port}",
                      load='rate = 20\nduration = "1s"\nunregister_timeout = "1s"\ninterval = "500ms"',
                      extra='[timers]\nt1 = "50ms"\nmax_retries = 5')
        async with trio.open_nursery() as nursery:
            nursery.start_soon(hole.serve, count)
            start = time.monotonic()
            with trio.fail_after(time_bound(sc)):
                outcome = await run_scenario(sc, tmp_path, progress=lambda _: None, handle_signals=False,
                                             probe=False, workers=1)
            elapsed = time.monotonic() - start
            nursery.cancel_scope.cancel()
    assert elapsed < sc.load.duration + sc.load.unregister_timeout + 2
    r = outcome.result
    assert r.registrations.succeeded == 0
    assert sum(r.failures.values()) == 10                     # every endpoint accounted for: interrupted
    # Timer E doubles from 50 ms: at most ~6 sends per endpoint in the 2 s the run lasted
    assert 10 <= received <= 10 * math.ceil(math.log2(2 / 0.05) + 1), received


def test_a_worker_checks_its_own_process_limits(tmp_path: Path) -> None:
    """What a remote cluster's shard does on its load host (the client cannot see that host's limits):
    a Worker in a process with `ulimit -n 100` refuses before opening a socket, with the command."""
    path = tmp_path / "many.toml"
    path.write_text('name = "many"\n[endpoints]\ncount = 400\nsocket = "per-endpoint"\n'
                    '[load]\nrate = 100\nduration = "10s"\n')
    code = (
        "import sys, trio\n"
        "from sipload.engine.worker import Shard, Worker, WorkerError\n"
        "from sipload.scenario import load_scenario\n"
        f"sc = load_scenario({str(path)!r})\n"
        "try:\n"
        "    trio.run(Worker(sc, ('127.0.0.1', 9), shard=Shard(0, 2)).run)\n"
        "except WorkerError as exc:\n"
        "    print('refused:', exc)\n"
    )

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (100, 100))

    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True, timeout=60, preexec_fn=limit, check=False)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith("refused: "), proc.stdout + proc.stderr
    assert "ulimit -n" in proc.stdout and "limit is 100" in proc.stdout, proc.stdout
