"""CPU per registration of sipload's client hot path, without sockets or a registrar.

    python bench/hotpath.py [--endpoints 20000] [--repeat 5]
    python bench/hotpath.py --instructions      # instructions per registration, under callgrind: ~1.5 min
    python bench/hotpath.py --smoke             # 200 endpoints, once: a second

A `Worker` is built for N endpoints exactly as a run builds it; its sends go to a no-op. Kamailio's
own 401 and 200 (captured from peers/kamailio, no qop) are prepared per endpoint before the clock
starts. Timed: for every endpoint, the arrival (start + flush: REGISTER built and "sent"), the 401
(datagram handler: parse, match, digest, second REGISTER) and the 200 (parse, granted expiry, events,
histograms). What is NOT in it: the sendto/recvfrom syscalls, trio's wake-ups and the scheduler's
timer heap pops (see bench/README.md for those, measured end to end).

Prints process CPU µs per registration (median and best of `repeat`, split as arrival + 401 + 200), or
with --instructions the instructions per registration (valgrind's callgrind: a run with the passes minus
one that only builds, divided by the endpoints), which do not move with the load of the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import trio

from sipload.engine.worker import Worker
from sipload.scenario import parse_scenario

SCENARIO = """
name = "hotpath"
[target]
registrar = "sip:127.0.0.1:5070"
domain = "127.0.0.1"
[endpoints]
count = {count}
username = "user{{n}}"
password = "pw-user{{n}}"
expires = 3600
[load]
rate = 1000
max_in_flight = 1000000
duration = "{duration}s"
unregister = false
"""

# What Kamailio 5.6 (peers/kamailio/kamailio.cfg) answers, with the per-endpoint fields as slots.
K401 = (
    "SIP/2.0 401 Unauthorized\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:50320;branch={branch};rport=50320;received=127.0.0.1\r\n"
    "From: <sip:{user}@127.0.0.1>;tag={tag}\r\n"
    "To: <sip:{user}@127.0.0.1>;tag=1e3b0cc639417e0df20ca39488876c28.fec52636\r\n"
    "Call-ID: {call_id}\r\n"
    "CSeq: 1 REGISTER\r\n"
    'WWW-Authenticate: Digest realm="127.0.0.1", nonce="awRmoWsEZXUrVpXRavFG2EMDefq1pmBm"\r\n'
    "Content-Length: 0\r\n\r\n"
)
K200 = (
    "SIP/2.0 200 OK\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:50320;branch={branch};rport=50320;received=127.0.0.1\r\n"
    "From: <sip:{user}@127.0.0.1>;tag={tag}\r\n"
    "To: <sip:{user}@127.0.0.1>;tag=1e3b0cc639417e0df20ca39488876c28.e7f12636\r\n"
    "Call-ID: {call_id}\r\n"
    "CSeq: 2 REGISTER\r\n"
    "Contact: <{contact}>;expires=3600\r\n"
    "Content-Length: 0\r\n\r\n"
)
ADDR = ("127.0.0.1", 5070)


class _Capture:
    """The endpoint's send: keeps the last request (its Via branch goes into the response)."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last = b""

    def __call__(self, data: bytes) -> bool:
        self.last = data
        return True


def _branch(request: bytes) -> str:
    return request.split(b";branch=", 1)[1].split(b";", 1)[0].decode()


async def one_round(count: int, setup_only: bool = False) -> tuple[float, float, float]:
    """Timed in three passes (every arrival; every 401; every 200); the responses, which carry the
    request's branch, are made between the passes, off the clock."""
    scenario = parse_scenario(SCENARIO.format(count=count, duration=count / 1000 + 1))
    worker = Worker(scenario, ADDR)
    worker._create_endpoints({0: worker._open_udp(count)})  # the one (default) group's channel slots
    for sock in worker._sockets:
        sock.close()
    captures = []
    fields = []
    for e in worker.endpoints:
        capture = _Capture()
        e.send = capture
        captures.append(capture)
        fields.append({"user": e.username, "tag": e.reg.from_tag, "call_id": e.reg.call_id,
                       "contact": e.reg.contact})
    endpoints = worker.endpoints
    after_input, on_datagram = worker._after_input, worker._on_datagram
    clock = time.process_time
    if setup_only:  # for instruction counts: callgrind(run) - callgrind(setup only) = the passes
        return (0.0, 0.0, 0.0)
    now = trio.current_time()
    t0 = clock()
    for e in endpoints:
        e.intended = now
        e.reg.start(now)
        after_input(e)
    arrivals = clock() - t0
    r401 = [K401.format(branch=_branch(c.last), **f).encode() for c, f in zip(captures, fields, strict=True)]
    t0 = clock()
    for data in r401:
        on_datagram(data, ADDR)
    challenges = clock() - t0
    r200 = [K200.format(branch=_branch(c.last), **f).encode() for c, f in zip(captures, fields, strict=True)]
    t0 = clock()
    for data in r200:
        on_datagram(data, ADDR)
    oks = clock() - t0
    ok = sum(1 for e in endpoints if e.registrations == 1)
    if ok != count:
        raise SystemExit(f"only {ok} of {count} registered: the harness is broken ({worker.report})")
    return (arrivals / count * 1e6, challenges / count * 1e6, oks / count * 1e6)


def instructions(count: int) -> float:
    """Ir of (setup + loop) minus Ir of (setup only), per registration, under callgrind."""
    import re
    import subprocess

    def run(*extra: str) -> int:
        cmd = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null", sys.executable, __file__,
               "--endpoints", str(count), "--repeat", "1", *extra]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, timeout=1800).stderr
        m = re.search(r"Collected : (\d+)", out)
        if m is None:
            raise SystemExit(f"no callgrind total in:\n{out[-2000:]}")
        return int(m.group(1))

    return (run() - run("--setup-only")) / count


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--setup-only", action="store_true", help="build everything, run nothing (see --instructions)")
    ap.add_argument("--instructions", action="store_true",
                    help="count instructions per registration with valgrind (callgrind): immune to a busy machine")
    ap.add_argument("--smoke", action="store_true",
                    help="200 endpoints, once, to show that the script still runs: its figures measure nothing")
    args = ap.parse_args()
    if args.smoke:
        args.endpoints, args.repeat = 200, 1
    if args.instructions:
        print(f"client hot path (no syscalls): {instructions(args.endpoints):,.0f} instructions/registration")
        return
    results = [trio.run(one_round, args.endpoints, args.setup_only) for _ in range(args.repeat)]
    totals = [sum(r) for r in results]
    best = min(results, key=sum)
    print(f"client hot path (no syscalls): median {statistics.median(totals):.1f} µs/registration, "
          f"best {min(totals):.1f} µs = arrival {best[0]:.1f} + 401 {best[1]:.1f} + 200 {best[2]:.1f}"
          f"  ({args.endpoints} endpoints x {args.repeat})")


if __name__ == "__main__":
    main()
