"""report.html: rendered from a real (short) smoke run, loaded in headless Chromium (Debian `chromium`,
installed by peers/install) through the DevTools protocol over a pipe: the page loads with no
console error, no exception and no network request other than the file itself, and every plot is an
SVG drawn with real size and content. Also: the page is rendered from the files alone (the same bytes
again from the same directory), is self-contained, and degrades when optional files are missing.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trio

from peers import require_peer
from sipload.engine.run import run_scenario
from sipload.report.html import REPORT, write_report
from sipload.report.intervals import INTERVALS
from sipload.report.writers import format_value
from sipload.scenario import load_scenario

REPO = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
HOW_TO_INSTALL_CHROMIUM = "run peers/install (installs the Debian package chromium)"
EXPECTED_PLOTS = {"latency-percentiles", "rate-over-time", "bindings-over-time", "failures-over-time",
                  "latency-over-time", "refresh-latency-over-time", "schedule-lag-over-time", "response-codes"}


# ------------------------------------------------------------------------------ a short smoke run

@pytest.fixture(scope="module")
def smoke_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """scenarios/smoke.toml, smaller: 40 endpoints in 1 s, each refreshes once (expiry 10 s) in 7 s."""
    out = tmp_path_factory.mktemp("smoke") / "out"
    sc = load_scenario(REPO / "scenarios" / "smoke.toml").with_overrides(endpoints=40, rate=40, duration=7)
    lines: list[str] = []
    outcome = trio.run(lambda: run_scenario(sc, out, progress=lines.append, handle_signals=False, workers=1))
    assert outcome.result.registrations.succeeded == 40, lines
    return out


def test_a_run_writes_report_html_from_its_files(smoke_dir: Path) -> None:
    page = (smoke_dir / REPORT).read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>")
    assert '<span class="verdict pass" id="verdict">PASS</span>' in page
    for expr in ("register.p99 &lt; 200ms", "refresh.success_rate == 100%", "timeouts == 0"):
        assert expr in page
    plots = set(re.findall(r'data-plot="([^"]+)"', page))
    assert plots == EXPECTED_PLOTS
    # both latency kinds, per phase
    assert "from intended start" in page and "service time" in page
    for phase in ("challenge", "auth", "register", "refresh", "unregister"):
        assert f"{phase} (n=" in page
    # rendered again from the same files: the same page, byte for byte
    before = page
    write_report(smoke_dir)
    assert (smoke_dir / REPORT).read_text(encoding="utf-8") == before


def _section(page: str, name: str) -> str:
    part = page[page.index(f'<section id="{name}">'):]
    return part[:part.index("</section>")]


def test_report_says_what_ran_with_units(smoke_dir: Path) -> None:
    """What a planner hands on: the scenario's parameters, workers, engine, host, version and target;
    threshold values with their units."""
    page = (smoke_dir / REPORT).read_text(encoding="utf-8")
    summary = json.loads((smoke_dir / "summary.json").read_text())
    ran = _section(page, "run")
    host = summary["run"]["host"]
    for label, value in (("endpoints", "40"), ("expiry", "10 s, refreshed at 50 %"), ("offered load", "constant 40/s"),
                         ("max in flight", f"{summary['run']['parameters']['max_in_flight']:,} registrations"),
                         ("workers", "1 (in-process)"), ("engine", f"{summary['run']['engine']} (asked: auto)"),
                         ("host", f"{host['name']}: {host['cores']} cores"),
                         ("sipload", summary["run"]["sipload_version"]),
                         ("target", "embedded registrar")):
        assert re.search(rf'<th class="text">{label}</th><td class="text">[^<]*{re.escape(value)}', ran), (label, ran)
    assert page.index('id="run"') < page.index('id="summary"')
    thresholds = _section(page, "summary")
    p99 = next(t["value"] for t in summary["thresholds"] if t["expr"].startswith("register.p99"))
    assert f"<td>{format_value(p99)} ms</td>" in thresholds
    assert "<td>100 %</td>" in thresholds and "<td>0</td>" in thresholds  # a success rate, a count


def test_a_clean_run_has_integer_failure_axes_and_a_refresh_latency_plot(smoke_dir: Path) -> None:
    page = (smoke_dir / REPORT).read_text(encoding="utf-8")
    svg = page[page.index('data-plot="failures-over-time"'):]
    svg = svg[:svg.index("</svg>")]
    ticks = re.findall(r"<text[^>]*>([^<]*)</text>", svg)
    numbers = [t for t in ticks if re.fullmatch(r"[0-9.]+", t.strip())]
    assert numbers and not [t for t in numbers if "." in t], numbers  # no 0.01 ... 0.05 for no failures
    assert "none in any interval" in page
    assert "refresh latency per interval" in page


def test_report_lists_its_files_and_says_the_links_are_relative(smoke_dir: Path) -> None:
    files = _section((smoke_dir / REPORT).read_text(encoding="utf-8"), "files")
    assert "opened from its run directory" in files
    assert '<a href="summary.json">summary.json</a>' in files and "the final state of every endpoint" in files
    assert "register latency from the intended start" in files


def test_report_is_self_contained(smoke_dir: Path) -> None:
    page = (smoke_dir / REPORT).read_text(encoding="utf-8")
    assert "<script" not in page
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", page), "a remote reference"
    assert "@import" not in page and "url(http" not in page
    assert not re.search(r"<link[^>]+stylesheet", page)
    # the only links are to the files beside it, or to ids inside the page (SVG markers and clip paths),
    # and ids are unique across all the plots
    ids = re.findall(r'\sid="([^"]+)"', page)
    assert len(ids) == len(set(ids))
    for href in re.findall(r'href="([^"]+)"', page):
        if href.startswith("#"):
            assert href[1:] in ids, href
        else:
            assert (smoke_dir / href).is_file(), href


def test_report_without_intervals_file_says_so(smoke_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(smoke_dir, copy)
    (copy / INTERVALS).unlink()
    page = write_report(copy).read_text(encoding="utf-8")
    assert f"No {INTERVALS} in this directory" in page
    assert 'data-plot="latency-percentiles"' in page and 'data-plot="bindings-over-time"' not in page


def test_report_of_a_failed_run_shows_the_failures(smoke_dir: Path, tmp_path: Path) -> None:
    copy = tmp_path / "copy"
    shutil.copytree(smoke_dir, copy)
    summary = json.loads((copy / "summary.json").read_text())
    summary["thresholds"][0] = {"expr": "register.p99 < 1ms", "value": 3.5, "passed": False}
    summary["passed"] = False
    summary["failures"] = {"timeout": 2}
    summary["failures_by_phase"] = {"refresh": {"timeout": 2}}
    summary["crosscheck"] = {"provider": "kamailio", "checked": 40, "agreed": 38, "agreement_pct": 95.0,
                             "passed": False, "columns": ["registered", "missing"],
                             "matrix": {"registered": {"registered": 38, "missing": 2}},
                             "disagreements": [{"username": "user7", "ours": "registered", "theirs": "missing",
                                                "detail": "no contact"}], "disagreements_total": 2}
    (copy / "summary.json").write_text(json.dumps(summary))
    page = write_report(copy).read_text(encoding="utf-8")
    assert '<span class="verdict fail" id="verdict">FAIL</span>' in page
    assert "register.p99 = 3.5 ms, wanted &lt; 1ms" in page
    assert '<section id="crosscheck">' in page and "38/40 agree" in page and "user7" in page


# --------------------------------------------------------------------- headless Chromium (DevTools)

class DevTools:
    """Chromium with --remote-debugging-pipe: JSON messages separated by NUL on fds 3 (in) and 4 (out)."""

    def __init__(self, profile: Path) -> None:
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        hi_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD, 10)
        hi_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD, 10)

        def fds() -> None:  # in the child: the pipe ends at fds 3 and 4, where Chromium expects them
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.proc = subprocess.Popen(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             "--disable-default-apps", "--disable-extensions", f"--user-data-dir={profile}",
             "--remote-debugging-pipe", "about:blank"],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            close_fds=False, preexec_fn=fds,
        )
        for fd in (to_child_r, from_child_w, hi_r, hi_w):
            os.close(fd)
        self._buf = b""
        self._next_id = 0
        self.events: list[dict[str, Any]] = []

    def close(self) -> None:
        try:
            self.send("Browser.close", timeout=5)
        except (AssertionError, OSError):
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        os.close(self._to_child)
        os.close(self._from_child)

    def _read_message(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buf:
            left = deadline - time.monotonic()
            assert left > 0, "no answer from Chromium in time"
            ready, _, _ = select.select([self._from_child], [], [], left)
            if ready:
                chunk = os.read(self._from_child, 1 << 20)
                assert chunk, f"Chromium closed the DevTools pipe (exit {self.proc.poll()})"
                self._buf += chunk
        raw, self._buf = self._buf.split(b"\0", 1)
        message: dict[str, Any] = json.loads(raw)
        return message

    def send(self, method: str, params: dict[str, Any] | None = None, session: str | None = None,
             timeout: float = 30.0) -> dict[str, Any]:
        self._next_id += 1
        msg: dict[str, Any] = {"id": self._next_id, "method": method, "params": params or {}}
        if session is not None:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + timeout
        while True:
            answer = self._read_message(deadline)
            if answer.get("id") == self._next_id:
                assert "error" not in answer, (method, answer["error"])
                result: dict[str, Any] = answer.get("result", {})
                return result
            if "method" in answer:
                self.events.append(answer)

    def wait_event(self, method: str, session: str, timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        for event in self.events:
            if event["method"] == method and event.get("sessionId") == session:
                return event
        while True:
            event = self._read_message(deadline)
            if "method" in event:
                self.events.append(event)
                if event["method"] == method and event.get("sessionId") == session:
                    return event


@pytest.fixture
def devtools() -> Iterator[DevTools]:
    require_peer("chromium", os.path.exists(CHROMIUM), HOW_TO_INSTALL_CHROMIUM)
    with tempfile.TemporaryDirectory(prefix="sipload-chromium-") as profile:
        browser = DevTools(Path(profile))
        try:
            yield browser
        finally:
            browser.close()


_PLOTS_JS = """JSON.stringify({
  title: document.title,
  verdict: (document.getElementById('verdict') || {}).textContent,
  width: document.documentElement.scrollWidth,
  plots: Array.from(document.querySelectorAll('figure.plot svg')).map(s => {
    const r = s.getBoundingClientRect();
    return {name: s.dataset.plot, w: r.width, h: r.height,
            paths: s.querySelectorAll('path').length, texts: s.querySelectorAll('text').length,
            visible: getComputedStyle(s).visibility === 'visible' && getComputedStyle(s).display !== 'none'};
  }),
  sections: Array.from(document.querySelectorAll('section')).map(s => s.id),
  legends: Array.from(document.querySelectorAll('figure.plot svg')).flatMap(s => {
    const areas = Array.from(s.querySelectorAll('g[id*="-axes_"]'))
      .map(a => a.querySelector(':scope > g[id*="-patch_"]')).filter(Boolean).map(p => p.getBoundingClientRect());
    return Array.from(s.querySelectorAll('g[id*="-legend_"]')).map(l => {
      const r = l.getBoundingClientRect();
      return {plot: s.dataset.plot, w: r.width, over: areas.filter(b => r.left < b.right - 1 && r.right > b.left + 1
                                                             && r.top < b.bottom - 1 && r.bottom > b.top + 1).length};
    });
  }),
  links: Array.from(document.querySelectorAll('#files a')).map(a => a.href),
})"""


def load_page(browser: DevTools, page: Path) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    target = browser.send("Target.createTarget", {"url": "about:blank"})["targetId"]
    session = browser.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
    for domain in ("Runtime", "Log", "Network", "Page"):
        browser.send(f"{domain}.enable", session=session)
    browser.send("Page.navigate", {"url": page.as_uri()}, session=session)
    browser.wait_event("Page.loadEventFired", session)
    value = browser.send("Runtime.evaluate", {"expression": _PLOTS_JS, "returnByValue": True},
                         session=session)["result"]["value"]
    shot = browser.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True},
                        session=session)
    assert len(shot["data"]) > 1000
    return json.loads(value), [e for e in browser.events if e.get("sessionId") == session]


def problems(events: list[dict[str, Any]]) -> list[str]:
    out = []
    for e in events:
        m, p = e["method"], e.get("params", {})
        if m == "Runtime.exceptionThrown":
            details = p.get("exceptionDetails", {})
            out.append(f"exception: {details.get('text')} {details.get('exception', {}).get('description', '')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert", "warning"):
            out.append(f"console.{p.get('type')}: {[a.get('value') for a in p.get('args', [])]}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") in ("error", "warning"):
            out.append(f"log {p['entry'].get('source')}: {p['entry'].get('text')}")
        elif m == "Network.loadingFailed":
            out.append(f"failed to load: {p.get('errorText')}")
    return out


def test_chromium_loads_the_report_without_errors_and_shows_every_plot(smoke_dir: Path, devtools: DevTools) -> None:
    page = smoke_dir / REPORT
    info, events = load_page(devtools, page)
    assert problems(events) == []
    requested = [e["params"]["request"]["url"] for e in events if e["method"] == "Network.requestWillBeSent"]
    assert requested == [page.as_uri()], "the page must load nothing but itself"
    assert info["verdict"] == "PASS" and info["title"].startswith("sipload: smoke")
    assert {"summary", "latency", "over-time", "responses", "files"} <= set(info["sections"])
    shown = {p["name"]: p for p in info["plots"]}
    assert set(shown) == EXPECTED_PLOTS
    for name, p in shown.items():
        assert p["visible"] and p["w"] > 200 and p["h"] > 100, (name, p)
        assert p["paths"] >= 5 and p["texts"] >= 3, (name, p)  # axes, ticks, labels and data drawn
    assert info["width"] <= 1400  # nothing overflows a normal window sideways
    # every plot's legend lies outside its axes: it covers no data
    assert {lg["plot"] for lg in info["legends"]} == EXPECTED_PLOTS - {"response-codes"}
    assert all(lg["w"] > 50 and lg["over"] == 0 for lg in info["legends"]), info["legends"]
    # the file links, as the browser resolves them, are the files beside the report
    assert len(info["links"]) >= 10
    for link in info["links"]:
        assert link.startswith(smoke_dir.as_uri() + "/") and (smoke_dir / link.rsplit("/", 1)[1]).is_file(), link


def test_chromium_reports_a_broken_page(tmp_path: Path, devtools: DevTools) -> None:
    """The harness itself catches console errors and remote loads (so the test above means something)."""
    bad = tmp_path / "bad.html"
    bad.write_text('<!DOCTYPE html><html><body><img src="missing.png"><script>console.error("boom");'
                   "undefinedFunction();</script></body></html>")
    _, events = load_page(devtools, bad)
    found = " | ".join(problems(events))
    assert "boom" in found and "undefinedFunction is not defined" in found and "ERR_FILE_NOT_FOUND" in found


def test_device_groups_get_a_table_with_their_states_and_behaviours(smoke_dir: Path, tmp_path: Path) -> None:
    # the smoke run has one group and no behaviour: no section
    assert 'id="groups"' not in (smoke_dir / REPORT).read_text(encoding="utf-8")
    out = tmp_path / "fleet"
    shutil.copytree(smoke_dir, out)
    summary = json.loads((out / "summary.json").read_text())
    summary["groups"] = {
        "desk-phones": {"endpoints": 28, "states": {"unregistered": 28}, "vanished": 0, "flaps": 0},
        "mobiles": {"endpoints": 12, "states": {"unregistered": 10, "failed:auth_rejected": 2},
                    "vanished": 5, "flaps": 0},
    }
    (out / "summary.json").write_text(json.dumps(summary))
    page = write_report(out).read_text(encoding="utf-8")
    section = page[page.index('<section id="groups">'):]
    section = section[:section.index("</section>")]
    assert "<th>vanished</th>" in section and "flaps" not in section.split("<tbody>")[0]  # zero everywhere: no column
    assert '<td class="text">mobiles</td><td>12</td><td class="text">unregistered 10, failed:auth_rejected 2</td>' \
           '<td>5</td>' in section
