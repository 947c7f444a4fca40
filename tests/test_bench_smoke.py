"""Every maintained benchmark (bench/README.md) runs in its --smoke mode and prints its figures, so that a
benchmark cannot rot unseen. Seconds each, tiny counts, loopback only; the figures themselves mean nothing
and are not judged, only that they are there. A script whose peers are missing skips (fails under CI=true).
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from peers import HOW_TO_INSTALL_KAMAILIO, HOW_TO_INSTALL_SIPP, have, require_peer

ROOT = Path(__file__).resolve().parent.parent
NUMBER = r"\d[\d,]*(?:\.\d+)?"
ROW = rf"\|\s+200 \| {{tool}}\s+\|\s+{NUMBER} \|\s+0 \|"   # offered 200/s, achieved, none not ok

# script -> (the peers it needs, the lines its output must have)
SMOKES: dict[str, tuple[tuple[str, ...], list[str]]] = {
    "hotpath.py": ((), [rf"client hot path \(no syscalls\): median {NUMBER} µs/registration, best {NUMBER} µs = "
                        rf"arrival {NUMBER} \+ 401 {NUMBER} \+ 200 {NUMBER}  \(200 endpoints x 1\)"]),
    "codec.py": ((), [r"1 x 200 iterations", rf"parse 401 \+ status, call_id, cseq, branch, WWW-Auth\s+{NUMBER}",
                      rf"build authenticated REGISTER\s+{NUMBER}", r"target: 401 with its fields <= 10 µs: "]),
    "metrics.py": ((), [rf"Recorder.record:\s+{NUMBER} µs/call", rf"Recorder.take_interval:\s+{NUMBER} µs",
                        rf"Aggregate.add:\s+{NUMBER} µs"]),
    "hold.py": ((), [r"## hold: 40 endpoints, expires 4 s, 0.1 min against embedded",
                     r"\| registrations ok / failed \| 40 / 0 \|", r"\| unregistrations ok / failed \| 40 / 0 \|",
                     rf"\| refreshes ok / failed \| {NUMBER} / 0 \|",
                     rf"\| generator RSS, every process together \(peak\) \| {NUMBER} MiB = {NUMBER} KiB "
                     r"per endpoint \|", r"\| left registered at the end \| 0 \|",
                     rf"\| punctual refreshes \(sent <= 100 ms after schedule\) \| {NUMBER}% "]),
    "worker_cpu.py": (("kamailio",), [rf"tick default: 200/200 registered: user {NUMBER} \+ sys {NUMBER} = "
                                      rf"{NUMBER} µs/reg; register p50 {NUMBER} p99 {NUMBER} µs",
                                      rf"worker at 200/s, tick default: median user {NUMBER}"]),
    "vs_sipp.py": (("kamailio", "sipp"), [r"## sipload vs SIPp against Kamailio", r"\| offered/s \| tool \|",
                                          ROW.format(tool="SIPp"), ROW.format(tool="sipload/1w native"),
                                          ROW.format(tool="sipload/1w python"), r"max clean rate SIPp: \d+/s",
                                          r"ratio sipload/1w native / SIPp: ", r"ratio sipload/1w python / SIPp: "]),
    "registrar_sipp.py": (("kamailio", "sipp"), [r"## SIPp against the embedded registrar and Kamailio",
                                                 ROW.format(tool="embedded"), ROW.format(tool="Kamailio"),
                                                 r"max clean rate, embedded registrar: \d+/s"]),
    "cluster.py": (("kamailio",), [r"## Dask layer", rf"\| sipload \| {NUMBER} \| {NUMBER} \| {NUMBER} \|",
                                   rf"\|\s+100 \| --workers 2\s+\|\s+{NUMBER} \|\s+0 \|",
                                   rf"\|\s+100 \| --cluster local:2 \|\s+{NUMBER} \|\s+0 \|"]),
    "wire_truth.py": (("kamailio", "tcpdump"), [r"## Measurement truth: sipload's service time vs tcpdump",
                                                rf"\|\s+200 \| 1 \| {NUMBER} \| {NUMBER} \| [+-]{NUMBER} \| "
                                                rf"{NUMBER} \| (yes|NO) \| {NUMBER} \| 200 / 200 \|",
                                                r"200/s: median difference [+-]\d+ µs"]),
}
HOW_TO_INSTALL = {"kamailio": HOW_TO_INSTALL_KAMAILIO, "sipp": HOW_TO_INSTALL_SIPP,
                  "tcpdump": "peers/install (Debian package tcpdump)"}


def test_every_maintained_script_has_a_smoke_test() -> None:
    listed = set(re.findall(r"^\| `(\w+\.py)`", (ROOT / "bench" / "README.md").read_text(), re.MULTILINE))
    assert listed == set(SMOKES)


@pytest.mark.parametrize("script", list(SMOKES))
def test_smoke_run_prints_its_figures(script: str) -> None:
    needs, expected = SMOKES[script]
    for peer in needs:
        require_peer(peer, have(peer), HOW_TO_INSTALL[peer])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1"}   # this checkout's sipload
    proc = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--smoke"], cwd=ROOT, env=env,
                          stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=90)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Traceback" not in output, output
    missing = [pattern for pattern in expected if not re.search(pattern, output)]
    assert not missing, f"{script} --smoke did not print {missing}:\n{output}"
