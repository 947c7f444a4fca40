"""The same registrations driven by the real trio `Worker` and by a plain `select.epoll` loop, side by side.

    python bench/experiments/epoll_loop.py [--rates 1000,2000,3000] [--seconds 4] [--reps 2] [--port 5460]

Per rate and repetition, each variant runs in a fresh subprocess (only that process's CPU is read) against a
fresh Kamailio (peers/kamailio, its own ports and run dir; password of userN is pw-userN), after a quiet check;
the variants alternate, their order rotating from one repetition to the next:

  trio    the real engine: one `Worker` in process on trio, as `bench/worker_cpu.py` runs it (its scenario:
          `common.sipload_scenario`, digest, no refresh, t1 500 ms, no retries; here with unregister = true).
  epoll   the same endpoints (`engine.devices.build_endpoints`: `Registration`, `DigestClient`, the engine's
          `Endpoint.flush` into a `Recorder`, interval snapshots and gauges every second), driven by a plain
          `select.epoll` loop: one non-blocking UDP socket drained with recvfrom until EAGAIN per wake,
          `parse_message`, a heap of `next_timer()` deadlines, open-loop arrivals at the offered rate, raw
          sendto. Only the loop differs from `trio`.
  bare    the same `Registration` machines and loop, without the engine's `Endpoint`/`Recorder`: outgoing
          bytes to sendto, events counted by type. The smallest driver of the sans-IO core.

Every variant registers N = rate x seconds endpoints, then (after the schedule, like the Worker) unregisters
them, paced. CPU per registration = process CPU (user + sys) while the 10th to the 90th percentile of the
registrations completed (sampled every 20 ms, start-up and unregistration excluded); "whole" = from the first
arrival to the last unregistration, per registration. A measurement counts only with 0 failures (register
and unregister). Everything goes to 127.0.0.1, every loop is bounded in iterations and time.
"""

from __future__ import annotations

import argparse
import heapq
import json
import math
import resource
import select
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))   # bench/ (common)
sys.path.insert(0, str(Path(__file__).resolve().parents[2]))   # the repository (sipload)

from common import kamailio, machine, machine_line, sipload_scenario, wait_quiet

VARIANTS = ("trio", "epoll", "bare")
SAMPLE = 0.02      # s between CPU/progress samples
BUFFER = 8 * 1024 * 1024


def _cpu() -> tuple[float, float, float]:
    """(process CPU s, user s, sys s)."""
    r = resource.getrusage(resource.RUSAGE_SELF)
    return time.process_time(), r.ru_utime, r.ru_stime


def _window(samples: list[tuple[float, float, float, int]], total: int) -> dict[str, float]:
    """CPU µs per registration (total, user, sys) while 10-90 % of `total` completed."""
    inside = [s for s in samples if 0.1 * total <= s[3] <= 0.9 * total]
    if len(inside) < 2 or inside[-1][3] <= inside[0][3]:
        return {"us": math.nan, "user_us": math.nan, "sys_us": math.nan, "window_s": 0.0}
    a, b = inside[0], inside[-1]
    n = b[3] - a[3]
    return {"us": (b[0] - a[0]) / n * 1e6, "user_us": (b[1] - a[1]) / n * 1e6,
            "sys_us": (b[2] - a[2]) / n * 1e6, "n": n}


# ------------------------------------------------------------------------------------------ (a) trio
def run_trio(scenario_path: Path, port: int, limit: float) -> dict[str, Any]:
    import trio

    from sipload.engine.worker import Worker
    from sipload.metrics.phases import Phase
    from sipload.scenario import load_scenario

    scenario = load_scenario(scenario_path)
    total = scenario.endpoints.count
    done = {"reg": 0, "unreg": 0, "retrans": 0, "failed": 0}
    samples: list[tuple[float, float, float, int]] = []
    marks: dict[str, tuple[float, float, float]] = {}

    def sink(snap: Any) -> None:
        done["reg"] += snap.successes.get(Phase.REGISTER, 0)
        done["unreg"] += snap.successes.get(Phase.UNREGISTER, 0)
        done["retrans"] += snap.retransmissions
        done["failed"] += sum(snap.failures.values())

    async def main() -> Any:
        worker = Worker(scenario, ("127.0.0.1", port), sink=sink)
        go = trio.Event()

        async def sampler() -> None:
            await go.wait()
            for _ in range(int(limit / SAMPLE) + 1):
                samples.append((*_cpu(), done["reg"] + worker.recorder._successes[Phase.REGISTER]))
                await trio.sleep(SAMPLE)

        def ready() -> None:
            marks["go"] = _cpu()
            go.set()

        with trio.move_on_after(limit):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(sampler)
                report = await worker.run(ready=ready, go=go)
                marks["end"] = _cpu()
                nursery.cancel_scope.cancel()
                return report
        return None

    report = trio.run(main)
    if report is None:
        return {"error": f"trio run not finished after {limit:.0f} s"}
    ok = sum(e.registrations for e in report.endpoints)
    not_unregistered = sum(1 for e in report.endpoints if e.state != "unregistered")
    return {"total": total, "ok": ok, "failed": done["failed"] + (total - ok), "retrans": done["retrans"],
            "unregistered": done["unreg"], "not_unregistered": not_unregistered,
            "achieved": (report.arrivals_started - 1) / report.arrival_period if report.arrival_period else 0.0,
            "stray": report.stray + report.unparseable + report.foreign, "send_errors": report.send_errors,
            "whole_us": (marks["end"][0] - marks["go"][0]) / max(ok, 1) * 1e6, **_window(samples, total)}


# ---------------------------------------------------------------------------------- (b)/(c) epoll loop
def _udp_socket() -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for opt, force in ((socket.SO_RCVBUF, 33), (socket.SO_SNDBUF, 32)):  # *BUFFORCE as root, as UdpSocket
        sock.setsockopt(socket.SOL_SOCKET, opt, BUFFER)
        if sock.getsockopt(socket.SOL_SOCKET, opt) < BUFFER:
            try:
                sock.setsockopt(socket.SOL_SOCKET, force, BUFFER)
            except OSError:
                pass
    sock.setblocking(False)
    sock.bind(("127.0.0.1", 0))
    return sock


def run_epoll(scenario_path: Path, port: int, limit: float, engine: bool) -> dict[str, Any]:
    """engine=True: the engine's Endpoint.flush + Recorder (variant epoll); False: bare driver (variant bare)."""
    import random

    from sipload.engine.devices import build_endpoints
    from sipload.engine.endpoint import Tally
    from sipload.engine.routes import Channel
    from sipload.metrics.phases import Phase
    from sipload.metrics.recorder import Recorder
    from sipload.scenario import load_scenario
    from sipload.scenario.groups import plan_fleet
    from sipload.sip.errors import ParseError
    from sipload.sip.ids import IdSource
    from sipload.sip.message import Response
    from sipload.sip.parser import parse_message
    from sipload.sip.registration import (
        Failed,
        Op,
        OpStarted,
        Registered,
        RegState,
        Retransmitted,
        Unregistered,
    )
    from sipload.transport.udp import read_kernel_drops

    sc = load_scenario(scenario_path)
    load = sc.load
    total = sc.endpoints.count
    dest = ("127.0.0.1", port)
    sock = _udp_socket()
    local = sock.getsockname()[:2]
    sendto = sock.sendto
    recvfrom = sock.recvfrom
    counts = {"send_errors": 0, "stray": 0, "retrans": 0, "failed": 0, "reg": 0, "unreg": 0, "in_flight": 0}

    def send(data: bytes) -> bool:
        try:
            sendto(data, dest)
        except OSError:
            counts["send_errors"] += 1
            return False
        return True

    ids = IdSource(random.Random())
    plan = plan_fleet(sc.fleet, total, sc.seed)
    endpoints = list(build_endpoints(sc, plan, range(total), {0: [[Channel(local, send)]]}, ids,
                                     lambda e: None))
    by_call_id = {e.reg.call_id: e for e in endpoints}
    recorder = Recorder(0.0)
    tally = Tally()
    successes = {"reg": 0, "unreg": 0}

    def emit(now: float) -> None:  # what Worker._emit does once per interval
        recorder.set_gauge("registered", sum(1 for e in endpoints if e.bound(now)))
        recorder.set_gauge("in_flight", tally.in_flight)
        recorder.set_gauge("retries", tally.retries)
        recorder.set_gauge("kernel_drops", read_kernel_drops(local[1]))
        snap = recorder.take_interval(now)
        successes["reg"] += snap.successes.get(Phase.REGISTER, 0)
        successes["unreg"] += snap.successes.get(Phase.UNREGISTER, 0)
        counts["retrans"] += snap.retransmissions
        counts["failed"] += sum(snap.failures.values())

    heap: list[tuple[float, int]] = []
    heappush, heappop = heapq.heappush, heapq.heappop

    if engine:
        def after(e: Any) -> None:
            e.flush(recorder, tally)
            deadline = e.reg.next_timer()
            if deadline != e.deadline:
                e.deadline = deadline
                if deadline is not None:
                    heappush(heap, (deadline, e.index))
    else:
        def after(e: Any) -> None:
            reg = e.reg
            for data in reg.take_outgoing():
                try:
                    sendto(data, dest)
                except OSError:
                    counts["send_errors"] += 1
            for ev in reg.take_events():
                kind = type(ev)
                if kind is OpStarted:
                    counts["in_flight"] += 1 if ev.op is Op.REGISTER else 0
                elif kind is Registered:
                    counts["reg"] += 1
                    counts["in_flight"] -= 1
                elif kind is Unregistered:
                    counts["unreg"] += 1
                elif kind is Failed:
                    if ev.final:
                        counts["failed"] += 1
                        if ev.op is Op.REGISTER:
                            counts["in_flight"] -= 1
                elif kind is Retransmitted:
                    counts["retrans"] += 1
            deadline = reg.next_timer()
            if deadline != e.deadline:
                e.deadline = deadline
                if deadline is not None:
                    heappush(heap, (deadline, e.index))

    def in_flight() -> int:
        return tally.in_flight if engine else counts["in_flight"]

    def progress() -> int:
        if engine:
            return successes["reg"] + recorder._successes[Phase.REGISTER]
        return counts["reg"]

    def on_datagram(data: bytes, addr: tuple[str, int], now: float) -> None:
        if addr[:2] != dest:
            counts["stray"] += 1
            return
        try:
            msg = parse_message(data)
        except ParseError:
            counts["stray"] += 1
            return
        call_id = msg.headers.get("call-id")
        if not isinstance(msg, Response) or call_id is None:
            counts["stray"] += 1
            return
        e = by_call_id.get(call_id.strip())
        if e is None or not e.reg.receive(msg, now):
            counts["stray"] += 1
            return
        if engine:
            recorder.response(msg.status)
            if msg.status >= 200:
                e.last_status = msg.status
        after(e)

    ep = select.epoll()
    ep.register(sock.fileno(), select.EPOLLIN)
    poll = ep.poll
    clock = time.monotonic
    samples: list[tuple[float, float, float, int]] = []
    max_in_flight = load.max_in_flight

    go = _cpu()
    start = clock()
    times = iter(load.arrival_times(total))
    arrivals = ((start + t, e) for t, e in zip(times, endpoints, strict=False))
    pending = next(arrivals, None)
    run_until = start + load.duration
    hard_stop = start + limit
    next_interval = start + load.interval
    next_sample = start
    stopping = False
    stop_queue: list[Any] = []
    stop_pos = 0
    stop_started = stop_deadline = next_check = math.inf
    stop_rate = 1.0
    wakes = iterations = spins = 0
    started = 0
    first_arrival: float | None = None
    last_arrival = 0.0
    for _ in range(int(limit * 100_000)):  # bound: far more than 1 ms ticks; the clock ends it first
        now = clock()
        if now >= hard_stop:
            break
        if now >= next_sample:
            samples.append((*_cpu(), progress()))
            next_sample += SAMPLE
        if not stopping and now >= run_until:
            stopping = True
            pending = None
            for e in endpoints:
                if e.reg.state is RegState.IDLE:
                    e.reg.stop(now)
                else:
                    stop_queue.append(e)
            stop_started = next_check = now
            stop_deadline = now + load.unregister_timeout
            stop_rate = max(load.rate_at(load.duration), len(stop_queue) / max(0.5 * load.unregister_timeout, 1e-3))
        while pending is not None and pending[0] <= now and in_flight() < max_in_flight:
            intended, e = pending
            e.intended = intended
            if first_arrival is None:
                first_arrival = now
            last_arrival = now
            started += 1
            e.reg.start(now)
            after(e)
            pending = next(arrivals, None)
        while stop_pos < len(stop_queue) and stop_started + stop_pos / stop_rate <= now:
            e = stop_queue[stop_pos]
            stop_pos += 1
            e.reg.stop(now)
            after(e)
        while heap and heap[0][0] <= now:
            deadline, index = heappop(heap)
            e = endpoints[index]
            if e.deadline != deadline:
                continue
            e.deadline = None
            e.reg.handle_timer(now)
            after(e)
        if engine and now >= next_interval:
            emit(now)
            next_interval = now + load.interval
        if stopping and stop_pos >= len(stop_queue):
            if now >= next_check:
                if all(e.reg.finished for e in endpoints):
                    break
                next_check = now + 0.05
            if now >= stop_deadline:
                break
        wake = min(next_sample, next_interval if engine else math.inf, hard_stop)
        if not stopping:
            wake = min(wake, run_until)
        elif stop_pos >= len(stop_queue):
            wake = min(wake, next_check)
        if heap:
            wake = min(wake, heap[0][0])
        if pending is not None and in_flight() < max_in_flight:
            wake = min(wake, pending[0])
        if stop_pos < len(stop_queue):
            wake = min(wake, stop_started + stop_pos / stop_rate)
        timeout = wake - clock()
        iterations += 1
        if timeout <= 0:
            spins += 1
        if poll(timeout if timeout > 0 else 0):
            wakes += 1
            now = clock()
            for _ in range(100_000):  # drain until EAGAIN (bounded)
                try:
                    data, addr = recvfrom(65535)
                except BlockingIOError:
                    break
                except OSError:
                    counts["send_errors"] += 1
                    continue
                on_datagram(data, addr, now)
    end = _cpu()
    end_t = clock()
    if engine:
        emit(end_t)
    ep.close()
    sock.close()
    ok = sum(e.registrations for e in endpoints) if engine else counts["reg"]
    unreg = successes["unreg"] if engine else counts["unreg"]
    not_unregistered = sum(1 for e in endpoints if e.reg.state is not RegState.UNREGISTERED)
    return {"total": total, "ok": ok, "failed": counts["failed"] + (total - ok), "retrans": counts["retrans"],
            "unregistered": unreg, "not_unregistered": not_unregistered,
            "achieved": (started - 1) / (last_arrival - first_arrival)
            if first_arrival is not None and last_arrival > first_arrival else 0.0,
            "stray": counts["stray"], "send_errors": counts["send_errors"], "wakes": wakes,
            "iterations": iterations, "zero_timeouts": spins,
            "whole_us": (end[0] - go[0]) / max(ok, 1) * 1e6, **_window(samples, total),
            "timed_out": end_t >= hard_stop}


# ------------------------------------------------------------------------------------------- parent
def child(args: argparse.Namespace) -> None:
    path = Path(args.scenario)
    if args.child == "trio":
        out = run_trio(path, args.port, args.limit)
    else:
        out = run_epoll(path, args.port, args.limit, engine=args.child == "epoll")
    print("RESULT " + json.dumps(out), flush=True)


def measure(variant: str, scenario: Path, port: int, limit: float) -> dict[str, Any]:
    cmd = [sys.executable, __file__, "--child", variant, "--scenario", str(scenario), "--port", str(port),
           "--limit", f"{limit:g}"]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=limit + 60, start_new_session=True)
    except subprocess.TimeoutExpired:
        return {"error": "child timed out"}
    for line in out.stdout.splitlines():
        if line.startswith("RESULT "):
            return dict(json.loads(line[7:]))
    return {"error": f"exit {out.returncode}: {(out.stderr or out.stdout)[-600:]}"}


def counted(r: dict[str, Any]) -> bool:
    return ("error" not in r and r["failed"] == 0 and r["ok"] == r["total"] and r["not_unregistered"] == 0
            and not r.get("timed_out") and not math.isnan(r["us"]))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,2000,3000")
    ap.add_argument("--seconds", type=float, default=4.0, help="arrival period per run")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--variants", default=",".join(VARIANTS))
    ap.add_argument("--port", type=int, default=5460, help="Kamailio SIP port (RPC: port + 1)")
    ap.add_argument("--quiet-wait", type=float, default=60.0)
    ap.add_argument("--child", choices=VARIANTS, help=argparse.SUPPRESS)
    ap.add_argument("--scenario", help=argparse.SUPPRESS)
    ap.add_argument("--limit", type=float, default=60.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args)
        return
    rates = [float(r) for r in args.rates.split(",")]
    variants = [v for v in args.variants.split(",") if v]
    assert all(v in VARIANTS for v in variants), variants
    print(machine_line(machine()), flush=True)
    results: dict[tuple[float, str], list[dict[str, Any]]] = {}
    with tempfile.TemporaryDirectory(prefix="sipload-epoll-loop-") as tmp:
        work = Path(tmp)
        for rate in rates:
            total = int(rate * args.seconds)
            path = sipload_scenario(work / f"r{rate:g}.toml", name="epoll-loop", target=f"sip:127.0.0.1:{args.port}",
                                    rate=rate, total=total, duration=args.seconds + 2, unregister=True)
            limit = args.seconds + 2 + 10 + 20  # schedule + unregister timeout + slack
            for rep in range(args.reps):
                order = variants[rep % len(variants):] + variants[: rep % len(variants)]
                for variant in order:
                    quiet = wait_quiet(0.9, args.quiet_wait)
                    with kamailio(args.port, args.port + 1, work / "kamailio"):
                        r = measure(variant, path, args.port, limit)
                    load = " ".join(Path("/proc/loadavg").read_text().split()[:3])
                    r["quiet"] = quiet.text()
                    results.setdefault((rate, variant), []).append(r)
                    if "error" in r:
                        print(f"  {rate:>5.0f}/s rep {rep + 1} {variant:<5} ERROR {r['error']}", flush=True)
                        continue
                    wakes = f" wakes/reg {r['wakes'] / max(r['ok'], 1):.2f}" if "wakes" in r else ""
                    print(f"  {rate:>5.0f}/s rep {rep + 1} {variant:<5} ok {r['ok']}/{r['total']} failed {r['failed']}"
                          f" retrans {r['retrans']} unreg {r['unregistered']} (left {r['not_unregistered']})"
                          f" achieved {r['achieved']:.0f}/s | 10-90%: {r['us']:6.1f} µs/reg (user {r['user_us']:.1f}"
                          f" + sys {r['sys_us']:.1f}) whole {r['whole_us']:.1f}"
                          f"{wakes}"
                          f"{'' if counted(r) else '  NOT COUNTED'}  [{quiet.text()}; load after {load}]",
                          flush=True)
    print()
    print("| offered/s | variant | runs counted | achieved/s | failures | retrans | CPU µs/reg 10-90 % (median; runs) "
          "| user + sys µs | whole-run µs/reg | ratio to trio (per-rep median) |")
    print("|---:|---|---:|---:|---:|---:|---|---|---:|---:|")
    for rate in rates:
        trio_runs = results.get((rate, "trio"), [])
        for variant in variants:
            runs = results.get((rate, variant), [])
            good = [r for r in runs if counted(r)]
            if not good:
                print(f"| {rate:.0f} | {variant} | 0/{len(runs)} | | | | | | | |")
                continue
            med = statistics.median(r["us"] for r in good)
            each = ", ".join(format(r["us"], ".0f") for r in good)
            ratios = [r["us"] / t["us"] for r, t in zip(runs, trio_runs, strict=False) if counted(r) and counted(t)]
            ratio = f"{statistics.median(ratios):.2f}" if ratios and variant != "trio" else ""
            print(f"| {rate:.0f} | {variant} | {len(good)}/{len(runs)} | "
                  f"{statistics.median(r['achieved'] for r in good):.0f} | {sum(r['failed'] for r in runs)} | "
                  f"{sum(r['retrans'] for r in runs)} | {med:.1f} ({each}) | "
                  f"{statistics.median(r['user_us'] for r in good):.1f} + "
                  f"{statistics.median(r['sys_us'] for r in good):.1f} | "
                  f"{statistics.median(r['whole_us'] for r in good):.1f} | {ratio} |")


if __name__ == "__main__":
    main()
