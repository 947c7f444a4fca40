"""Measurement truth: sipload's service time of the full registration against what tcpdump sees on the wire.

    python bench/wire_truth.py [--rates 1000,20000] [--seconds 5] [--reps 2] [--engine native]
                               [--port 5670] [--write bench/RESULTS.md]
    python bench/wire_truth.py --smoke      # 200 registrations at 200/s: ~10 s

For each rate and repetition: a fresh Kamailio (peers/kamailio) on 127.0.0.1:--port, tcpdump capturing its
UDP port on the loopback interface (nanosecond timestamps, 128 MiB buffer), and `sipload run` (one worker,
--engine) sending rate x seconds digest registrations (REGISTER -> 401 -> REGISTER with credentials -> 200,
no refresh, no unregister). From the capture, per Call-ID: the time from the first REGISTER on the wire to
the 200 OK on the wire, i.e. the full registration as the network saw it; its p50 beside the p50 of
sipload's `service_ms.register` (from the first send to the 200's kernel receive timestamp) in the same run.

Target (issue: measurement truth): sipload's p50 within 100 µs + 10 % of the wire's, at 1,000/s and at
20,000/s. Loopback has no wire: tcpdump's timestamps are taken where the packet passes the loopback
device, between the sender's sendmsg and the receiver's socket queue, so the two differ by the kernel's
path on each side, which is what the target bounds. A capture that dropped packets (tcpdump says so) is
flagged: its figures cover the registrations it saw.

Needs root (tcpdump on lo), tcpdump (peers/install) and Kamailio.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import struct
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import SMOKE_HELP, kamailio, machine, machine_line, percentile, run_sipload, say, smoke_peers, wait_quiet

from sipload.testing.peers import free_ports_in_a_row

PCAP_NANO = 0xA1B23C4D
PCAP_MICRO = 0xA1B2C3D4
DLT_EN10MB, DLT_LINUX_SLL, DLT_LINUX_SLL2 = 1, 113, 276


def pcap_udp(path: Path) -> list[tuple[float, int, int, bytes]]:
    """(timestamp s, source port, destination port, payload) of every IPv4 UDP packet in a pcap file."""
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = struct.unpack_from("<I", data)[0]
    if magic not in (PCAP_NANO, PCAP_MICRO):
        raise ValueError(f"{path}: not a little-endian pcap file (magic {magic:#x})")
    scale = 1e-9 if magic == PCAP_NANO else 1e-6
    link = struct.unpack_from("<I", data, 20)[0]
    skip = {DLT_EN10MB: 14, DLT_LINUX_SLL: 16, DLT_LINUX_SLL2: 20}.get(link)
    if skip is None:
        raise ValueError(f"{path}: link type {link} is not handled")
    out = []
    pos = 24
    while pos + 16 <= len(data):
        sec, frac, caplen, _ = struct.unpack_from("<IIII", data, pos)
        frame = data[pos + 16:pos + 16 + caplen]
        pos += 16 + caplen
        ip = frame[skip:]
        if len(ip) < 28 or ip[0] >> 4 != 4 or ip[9] != 17:
            continue
        ihl = (ip[0] & 0x0F) * 4
        sport, dport = struct.unpack_from("!HH", ip, ihl)
        out.append((sec + frac * scale, sport, dport, ip[ihl + 8:]))
    return out


def header(payload: bytes, *names: bytes) -> bytes | None:
    """The value of the first header of these names (lower-case, long or compact form)."""
    for line in payload.split(b"\r\n")[1:]:
        if not line:
            break
        name, _, value = line.partition(b":")
        if name.strip().lower() in names:
            return value.strip()
    return None


@dataclass(slots=True)
class Wire:
    registrations: int = 0          # Call-IDs with a first REGISTER and a 200
    full_us: list[float] = field(default_factory=list)
    packets: int = 0


def wire_registrations(packets: list[tuple[float, int, int, bytes]], registrar_port: int) -> Wire:
    """Per Call-ID, first REGISTER sent to the registrar -> first 200 from it."""
    first: dict[bytes, float] = {}
    done: dict[bytes, float] = {}
    for t, sport, dport, payload in packets:
        call_id = header(payload, b"call-id", b"i")
        if call_id is None:
            continue
        if dport == registrar_port and payload.startswith(b"REGISTER "):
            first.setdefault(call_id, t)
        elif sport == registrar_port and payload.startswith(b"SIP/2.0 200") and call_id in first:
            done.setdefault(call_id, t)
    w = Wire(packets=len(packets))
    w.full_us = sorted((done[c] - first[c]) * 1e6 for c in done)
    w.registrations = len(w.full_us)
    return w


@dataclass(slots=True)
class Row:
    rate: float
    rep: int
    sipload_p50_us: float
    wire_p50_us: float
    wire_p99_us: float
    sipload_ok: int
    wire_seen: int
    dropped: str
    quiet: str

    @property
    def bound_us(self) -> float:
        return 100.0 + 0.10 * self.wire_p50_us

    @property
    def within(self) -> bool:
        return abs(self.sipload_p50_us - self.wire_p50_us) <= self.bound_us


def capture(port: int, pcap: Path) -> subprocess.Popen[bytes]:
    """tcpdump on lo for this UDP port, started and listening."""
    proc = subprocess.Popen(["tcpdump", "-i", "lo", "-n", "-s", "1024", "-B", "131072",
                             "--time-stamp-precision=nano", "-w", str(pcap), "udp", "port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert proc.stderr is not None
    deadline = time.monotonic() + 10
    line = b""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if b"listening on" in line or not line:
            break
    if b"listening on" not in line:
        proc.kill()
        raise SystemExit(f"tcpdump did not start: {line.decode(errors='replace').strip()}")
    return proc


def stop_capture(proc: subprocess.Popen[bytes]) -> str:
    """Stop tcpdump; its count of packets dropped by the kernel ('' if none)."""
    time.sleep(0.2)   # the last packets reach the capture buffer
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    for line in err.decode(errors="replace").splitlines():
        if "dropped by kernel" in line and not line.startswith("0 "):
            return line.strip()
    return ""


def one(rate: float, seconds: float, rep: int, args: argparse.Namespace, work: Path) -> Row:
    total = max(1, int(rate * seconds))
    quiet = wait_quiet(0.9, args.quiet_wait)
    pcap = work / f"wire-{rate:g}-{rep}.pcap"
    with kamailio(args.port, args.port + 1, work / "kamailio"):
        tcpdump = capture(args.port, pcap)
        try:
            result = run_sipload(f"sip:127.0.0.1:{args.port}", rate, total, work / f"run-{rate:g}-{rep}",
                                 timeout=seconds + 120, workers=1, engine=args.engine)
        finally:
            dropped = stop_capture(tcpdump)
    wire = wire_registrations(pcap_udp(pcap), args.port)
    pcap.unlink()
    return Row(rate, rep, result.p50_ms * 1e3, percentile(wire.full_us, 50), percentile(wire.full_us, 99),
               result.ok, wire.registrations, dropped, quiet.text())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,20000")
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--engine", choices=("native", "python", "auto"), default="native")
    ap.add_argument("--port", type=int, default=5670)
    ap.add_argument("--quiet-wait", type=float, default=60)
    ap.add_argument("--write", type=Path, default=None, help="append the report to this markdown file")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    if args.smoke:
        args.rates, args.seconds, args.reps, args.quiet_wait = "200", 1.0, 1, 0.0
        args.port = free_ports_in_a_row(2)
        if not smoke_peers("wire_truth", "kamailio", "tcpdump"):
            return
    if os.geteuid() != 0:
        raise SystemExit("wire_truth: tcpdump on lo needs root")
    rates = [float(r) for r in args.rates.split(",")]
    m = machine()
    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="sipload-wire-") as tmp:
        for rep in range(args.reps):
            for rate in rates:
                row = one(rate, args.seconds, rep, args, Path(tmp))
                rows.append(row)
                say(f"  {rate:g}/s rep {rep + 1}: sipload p50 {row.sipload_p50_us:.0f} µs, wire p50 "
                    f"{row.wire_p50_us:.0f} µs ({row.sipload_ok} ok, {row.wire_seen} seen on the wire)"
                    f"{', ' + row.dropped if row.dropped else ''}  [{row.quiet}]")
    lines = [f"## Measurement truth: sipload's service time vs tcpdump ({m['date']})", "",
             f"Machine: {machine_line(m)}", "",
             f"Command: python bench/wire_truth.py --rates {args.rates} --seconds {args.seconds:g} --reps {args.reps} "
             f"--engine {args.engine}", "",
             "| rate/s | rep | sipload p50 µs | wire p50 µs | difference µs | bound µs | within | wire p99 µs "
             "| ok / seen on the wire | capture |",
             "|---:|---:|---:|---:|---:|---:|---|---:|---|---|"]
    for r in rows:
        lines.append(f"| {r.rate:,.0f} | {r.rep + 1} | {r.sipload_p50_us:.0f} | {r.wire_p50_us:.0f} | "
                     f"{r.sipload_p50_us - r.wire_p50_us:+.0f} | {r.bound_us:.0f} | {'yes' if r.within else 'NO'} | "
                     f"{r.wire_p99_us:.0f} | {r.sipload_ok:,} / {r.wire_seen:,} | {r.dropped or 'no drops'} |")
    lines.append("")
    for rate in rates:
        mine = [r for r in rows if r.rate == rate]
        diff = statistics.median(r.sipload_p50_us - r.wire_p50_us for r in mine)
        lines.append(f"{rate:,.0f}/s: median difference {diff:+.0f} µs; within 100 µs + 10 % in "
                     f"{sum(r.within for r in mine)} of {len(mine)} repetitions")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.write is not None:
        with args.write.open("a") as f:
            f.write("\n" + text)
    summary = {"rows": [{"rate": r.rate, "sipload_p50_us": r.sipload_p50_us, "wire_p50_us": r.wire_p50_us,
                         "within": r.within} for r in rows]}
    say(json.dumps(summary))


if __name__ == "__main__":
    main()
