"""SIPp as the client against sipload's embedded registrar, beside Kamailio, in the same run.

    python bench/registrar_sipp.py [--rates 1000,2000,3000,5000,8000,12000,16000,20000] [--seconds 10]
                                   [--reps 1] [--port 5670] [--write bench/RESULTS.md] [--base DIR]
    python bench/registrar_sipp.py --smoke      # 200 registrations per registrar, free ports: ~4 s

For every offered rate and repetition, SIPp (peers/sipp/register-digest.xml: REGISTER -> 401 -> REGISTER with
digest -> 200) runs rate x seconds registrations against each target, fresh for the run:
`python -m sipload registrar --listen udp:127.0.0.1:PORT` (one trio process) and Kamailio
(peers/kamailio: 4 children). A quiet machine is awaited before each run (bounded).

Per run: SIPp's achieved rate, registrations not OK, retransmissions, p50/p99 of the full registration
(RTD 1, whole ms), and the registrar's CPU µs per registration. Clean: every registration OK, 0
retransmissions, p99 <= 20 ms, achieved >= 97 % of offered in every repetition. A target that was not
clean at two rates in a row is not tried at higher rates. Ends with each registrar's maximum clean rate.

`--base DIR` adds a third registrar, `sipload registrar` run from another checkout (e.g. `git archive HEAD |
tar -x -C DIR`): before and after a change, measured side by side in the same run.
"""

from __future__ import annotations

import argparse
import contextlib
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    REPO,
    SMOKE_HELP,
    TABLE_HEAD,
    RunResult,
    kamailio,
    kill_group,
    machine,
    machine_line,
    run_sipp,
    say,
    smoke_peers,
    tree_cpu,
    wait_quiet,
)

from sipload.testing.peers import free_port, free_ports_in_a_row

BASE = "embedded@base"


class Embedded:
    def __init__(self, proc: subprocess.Popen[str]) -> None:
        self.proc = proc

    def cpu(self) -> float:
        return tree_cpu(self.proc.pid)


@contextlib.contextmanager
def embedded_registrar(port: int, workdir: Path, tree: Path = REPO) -> Iterator[Embedded]:
    cmd = [sys.executable, "-m", "sipload", "registrar", "--listen", f"udp:127.0.0.1:{port}", "--quiet",
           "--min-expires", "60", "--duration", "600s"]
    log = (workdir / "registrar.log").open("w")
    proc = subprocess.Popen(cmd, cwd=tree, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while True:  # bound: the port is taken when the registrar listens
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
                try:
                    probe.bind(("127.0.0.1", port))
                except OSError:
                    break
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"sipload registrar did not start: {(workdir / 'registrar.log').read_text()}")
            time.sleep(0.1)
        yield Embedded(proc)
    finally:
        kill_group(proc)
        log.close()


def one_run(target: str, rate: float, args: argparse.Namespace, work: Path) -> RunResult:
    total = int(rate * args.seconds)
    quiet = wait_quiet(args.quiet_idle, args.quiet_wait)
    port = args.port if target == "Kamailio" else args.port + 2
    ctx = (kamailio(port, port + 1, work / "kamailio") if target == "Kamailio"
           else embedded_registrar(port, work, args.base if target == BASE else REPO))
    with ctx as registrar:
        cpu0 = registrar.cpu()
        result = run_sipp("127.0.0.1", port, rate, total, work / "sipp", local_port=free_port(),
                          timeout=args.seconds * 3 + 30)
        result.target_cpu_s = registrar.cpu() - cpu0
    result.tool = target
    result.quiet = quiet.text()
    return result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rates", default="1000,2000,3000,5000,8000,12000,16000,20000")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--reps", type=int, default=1)
    ap.add_argument("--port", type=int, default=5670)
    ap.add_argument("--quiet-idle", type=float, default=0.9)
    ap.add_argument("--quiet-wait", type=float, default=120.0)
    ap.add_argument("--write", type=Path, default=None, help="append the report to this markdown file")
    ap.add_argument("--base", type=Path, default=None,
                    help="also run `sipload registrar` from this checkout (row 'embedded@base')")
    ap.add_argument("--smoke", action="store_true", help=SMOKE_HELP)
    args = ap.parse_args()
    targets = ([BASE] if args.base is not None else []) + ["embedded", "Kamailio"]
    if args.smoke:
        args.rates, args.seconds, args.reps, args.quiet_wait = "200", 1.0, 1, 0.0
        args.port = free_ports_in_a_row(3)   # Kamailio's SIP and JSON-RPC, then sipload registrar's
        if not smoke_peers("registrar_sipp", "sipp"):
            return
        if not smoke_peers("the Kamailio runs", "kamailio"):
            targets.remove("Kamailio")
    rates = [float(r) for r in args.rates.split(",")]
    m = machine()
    head = [f"## SIPp against the embedded registrar and Kamailio ({m['date']})", "",
            f"Machine: {machine_line(m)}", "",
            f"Command: python bench/registrar_sipp.py --rates {args.rates} --seconds {args.seconds:g} "
            f"--reps {args.reps}" + (f" --base {args.base}" if args.base is not None else ""), "",
            "tool column = the registrar; the generator is SIPp in every row; 'registrar µs/reg' = the "
            "registrar's CPU.", "", TABLE_HEAD]
    for line in head:
        say(line)
    rows: list[str] = []
    notes: list[str] = []
    best: dict[str, float] = {}
    misses: dict[str, int] = dict.fromkeys(targets, 0)
    with tempfile.TemporaryDirectory(prefix="sipload-registrar-sipp-") as tmp:
        work = Path(tmp)
        for rate in rates:
            for target in targets:
                if misses[target] >= 2:
                    continue
                runs = [one_run(target, rate, args, work) for _ in range(args.reps)]
                for r in runs:
                    rows.append(r.row())
                    say(r.row())
                    if not r.quiet.startswith("quiet") or r.notes:
                        note = f"  {target} at {rate:.0f}/s: {r.quiet}" + (f"; {'; '.join(r.notes)}" if r.notes else "")
                        notes.append(note)
                        say(note)
                if all(r.clean for r in runs):
                    best[target] = max(best.get(target, 0.0), rate)
                    misses[target] = 0
                else:
                    misses[target] += 1
    tail = [""] + ([f"max clean rate, embedded registrar from {args.base}: {best.get(BASE, 0.0):.0f}/s"]
                   if args.base is not None else []) + [
            f"max clean rate, embedded registrar: {best.get('embedded', 0.0):.0f}/s",
            f"max clean rate, Kamailio: {best.get('Kamailio', 0.0):.0f}/s"]
    kam = best.get("Kamailio", 0.0)
    tail.append(f"ratio embedded / Kamailio: {best.get('embedded', 0.0) / kam:.2f}" if kam else "ratio: n/a")
    if any(n >= 2 for n in misses.values()):
        tail.append("(a registrar not clean at two rates in a row was not tried at higher rates)")
    for line in tail:
        say(line)
    if args.write is not None:
        with args.write.open("a") as f:
            f.write("\n" + "\n".join([*head, *rows, "", *notes, *tail]) + "\n")


if __name__ == "__main__":
    main()
