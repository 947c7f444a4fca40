"""The client hot path and the codec with the sans-IO core compiled by mypyc, side by side with pure Python.

    python bench/experiments/compiled_core.py [--endpoints 20000] [--reps 5] [--rounds 2] [--codec-number 20000]

1. Copies the current `sipload/` twice into a temporary directory (a "pure" and a "compiled" tree, the
   same snapshot) and compiles with mypyc, in the compiled tree, as many of `sipload/sip/*.py` as compile
   (one `mypycify` group through a generated setup.py, `build_ext --inplace`). A module that mypyc
   rejects is left interpreted (its first error line is recorded) and the rest rebuilt; so is one that
   compiles but fails at run time (a smoke run of the hot path and the codec on the compiled tree; the
   module is the innermost compiled frame of the traceback). Nothing under the repository is touched.
2. Runs bench/hotpath.py's measurement (Kamailio-like 401 and 200 fed to a real `Worker`, no sockets;
   CPU µs per registration split into arrival / 401 / 200) and bench/codec.py's micro-benchmarks, each in
   a fresh subprocess per tree, the two trees alternating (the first one alternates too), `--reps` times.
   The machine is shared: each repetition first waits (bounded) for a quiet machine and prints the load;
   medians, bests and the compiled/pure ratio of each repetition (both trees measured back to back).
3. Prints the tables, which modules compiled (and why the others did not) and where the time went.
Exits non-zero only when the harness itself fails; the temporary directory is removed (unless --keep).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
BENCH = REPO / "bench"
SIP_MODULE = re.compile(r"sipload/sip/(\w+)\.py")
ERROR_LINE = re.compile(r"^(sipload/sip/\w+\.py):(\d+): (.*)$", re.MULTILINE)
BUILD_TIMEOUT = 600.0
CHILD_TIMEOUT = 300.0
# the sans-IO unit tests (~700, ~10 s), run in the smoke check against each tree
SMOKE_TESTS = ("test_codec.py", "test_digest.py", "test_registration.py", "test_transaction.py", "test_keepalive.py",
               "test_fast_paths.py")

# The smallest source changes that let mypyc compile (and run) the codec: applied to a third temporary
# tree ("patched") only, never to the repository. Each: (module, what, old text, new text).
PATCHES = (
    ("message", "Headers._from_normalized: cls() instead of cls.__new__(cls) (mypyc crashes on __new__)",
     "obj = cls.__new__(cls)\n", "obj = cls()\n"),
    ("parser", "_new_response: the constructor instead of object.__new__ (refused for native classes)",
     "    response = _object_new(Response)\n    response.headers = headers\n    response.body = b\"\"\n"
     "    response._cseq = None\n    response._via = None\n    response.status = status\n"
     "    response.reason = reason\n    return response\n",
     "    return Response(status, reason, headers)\n"),
    ("parser", "parse_message accepts str in its annotation (mypyc checks argument types at the call: a str "
     "raised TypeError before the function's own ParseError)",
     "def parse_message(data: bytes | bytearray | memoryview) ->",
     "def parse_message(data: bytes | bytearray | memoryview | str) ->"),
    ("headers", "_new_via: Via(...) instead of object.__new__ + slot-descriptor setters",
     "    via = object.__new__(Via)\n    set_transport, set_host, set_port, set_params = _VIA_SETTERS\n"
     "    set_transport(via, transport)\n    set_host(via, host)\n    set_port(via, port)\n"
     "    set_params(via, params)\n    return via\n",
     "    return Via(transport, host, port, params)\n"),
    ("digest", "_challenge: Challenge(*values) instead of object.__new__ + slot-descriptor setters",
     "    challenge = object.__new__(Challenge)\n    for set_field, value in zip(_CHALLENGE_SETTERS, values, "
     "strict=True):\n        set_field(challenge, value)\n    return challenge\n",
     "    return Challenge(*values)  # type: ignore[arg-type]\n"),
)

SETUP_PY = """\
from setuptools import setup
from mypyc.build import mypycify

setup(name="sipload-mypyc-bench", packages=[], py_modules=[],
      ext_modules=mypycify({paths!r}, opt_level="3"))
"""


def say(text: str) -> None:
    print(text, flush=True)


# ------------------------------------------------------------------------------------------- child side
def _load(name: str, path: Path) -> Any:
    """Import a bench module by path; `sipload` must already be imported from the tree under test (the
    module's own sys.path.insert of the repository then no longer matters: the package is cached)."""
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _enter_tree(tree: str) -> dict[str, bool]:
    """Import sipload from `tree`; {sip module: compiled?}."""
    sys.path.insert(0, tree)
    import sipload

    if not Path(sipload.__file__ or "").resolve().is_relative_to(Path(tree).resolve()):
        raise SystemExit(f"sipload imported from {sipload.__file__}, not from {tree}")
    compiled = {}
    for py in sorted((Path(tree) / "sipload" / "sip").glob("*.py")):
        name = "sipload.sip" if py.stem == "__init__" else f"sipload.sip.{py.stem}"
        module = importlib.import_module(name)
        compiled[py.stem] = not str(module.__file__).endswith(".py")
    return compiled


def _codec_cases(codec: Any) -> list[tuple[str, Any]]:
    cases = [("(machine reference: sum(range(100)))", lambda: sum(range(100))),
             ("parse 401 + status, call_id, cseq, branch, WWW-Auth", codec.parse_401)]
    if codec.parse_challenges is not None:
        cases.append(("parse 401 + those fields + parse_challenges", codec.parse_401_challenge))
    cases += [("parse 200 + Contact expires", codec.parse_200), ("build authenticated REGISTER", codec.build_register)]
    return cases


def _blame(tb: traceback.StackSummary, compiled: set[str]) -> str | None:
    """The module to leave interpreted: the innermost frame in a compiled sip module (mypyc adds its
    frames to tracebacks); None when no compiled code is on the stack (e.g. a test that introspects a
    class: `Credentials.__slots__` does not exist on a native class)."""
    sip_frames = [m.group(1) for f in tb if (m := SIP_MODULE.search(f.filename.replace(os.sep, "/")))]
    for stem in reversed(sip_frames):
        if stem in compiled:
            return stem
    return None


def child_smoke(tree: str) -> dict[str, Any]:
    """Import everything; run the codec cases, a small hot-path round and the sans-IO unit tests
    (SMOKE_TESTS, in this process); every failure with the module it is blamed on."""
    compiled_map = _enter_tree(tree)
    compiled = {m for m, c in compiled_map.items() if c}
    failures: list[dict[str, Any]] = []

    def record(where: str, text: str, tb: traceback.StackSummary) -> None:
        module = _blame(tb, compiled)
        failures.append({"where": where, "module": module, "error": (text.strip().splitlines() or ["?"])[-1][:300],
                         "traceback": "".join(tb.format())[-2000:]})

    codec = _load("codec", BENCH / "codec.py")
    for label, fn in _codec_cases(codec):
        try:
            fn()
        except Exception as exc:
            record(f"codec: {label}", f"{type(exc).__name__}: {exc}", traceback.extract_tb(exc.__traceback__))

    hotpath = _load("hotpath", BENCH / "hotpath.py")
    import trio

    from sipload.engine.worker import Worker

    swallowed: list[tuple[str, traceback.StackSummary]] = []
    original = getattr(Worker, "_on_message", None)
    if original is not None:  # the Worker counts a handler's exception and goes on: keep the first one
        def recording(self: Any, msg: Any) -> Any:
            try:
                return original(self, msg)
            except Exception as exc:
                if not swallowed:
                    swallowed.append((f"{type(exc).__name__}: {exc}", traceback.extract_tb(exc.__traceback__)))
                raise

        Worker._on_message = recording
    try:
        trio.run(hotpath.one_round, 200)
    except BaseException as exc:  # SystemExit too: hotpath's "the harness is broken"
        text, tb = swallowed[0] if swallowed else (f"{type(exc).__name__}: {exc}",
                                                   traceback.extract_tb(exc.__traceback__))
        record("hot path round", text, tb)
    if original is not None:
        Worker._on_message = original

    import hypothesis
    import pytest

    # no shrinking (a failing property would shrink for minutes) and no deadlines (a busy machine)
    hypothesis.settings.register_profile("compiled_core", database=None, deadline=None, phases=(
        hypothesis.Phase.explicit, hypothesis.Phase.reuse, hypothesis.Phase.generate))
    hypothesis.settings.load_profile("compiled_core")
    counts = {"passed": 0, "failed": 0, "skipped": 0}

    class Recorder:
        def pytest_runtest_logreport(self, report: Any) -> None:
            if report.when == "call" or report.outcome != "passed":
                counts[report.outcome] = counts.get(report.outcome, 0) + 1

        def pytest_exception_interact(self, node: Any, call: Any, report: Any) -> None:
            if call.excinfo is not None:
                record(node.nodeid, call.excinfo.exconly(), traceback.extract_tb(call.excinfo.tb))

    tests = [str(REPO / "tests" / t) for t in SMOKE_TESTS if (REPO / "tests" / t).exists()]
    with contextlib.redirect_stdout(sys.stderr):
        pytest.main(["-q", "--no-header", "-p", "no:cacheprovider", "--rootdir", str(REPO),
                     "-c", str(REPO / "pyproject.toml"), *tests], plugins=[Recorder()])
    return {"compiled": compiled_map, "failures": failures, "tests": counts}


def child_hotpath(tree: str, endpoints: int, rounds: int) -> dict[str, Any]:
    compiled = _enter_tree(tree)
    hotpath = _load("hotpath", BENCH / "hotpath.py")
    import trio

    return {"compiled": compiled, "rounds": [list(trio.run(hotpath.one_round, endpoints)) for _ in range(rounds)]}


def child_codec(tree: str, number: int, repeat: int) -> dict[str, Any]:
    compiled = _enter_tree(tree)
    codec = _load("codec", BENCH / "codec.py")
    cases = _codec_cases(codec)
    results = codec.measure([fn for _, fn in cases], number, repeat)
    return {"compiled": compiled, "cases": [[label, *r] for (label, _), r in zip(cases, results, strict=True)]}


# ------------------------------------------------------------------------------------------ parent side
def run_child(tree: Path, *args: str, timeout: float = CHILD_TIMEOUT) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONSTARTUP")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    cmd = [sys.executable, str(Path(__file__).resolve()), "--child", *args, "--tree", str(tree)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env, cwd=tree)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith("RESULT "):
            return json.loads(line[7:])  # type: ignore[no-any-return]
    raise RuntimeError(f"child {args} on {tree} failed (exit {proc.returncode}):\n{proc.stderr[-3000:]}")


def copy_tree(dest: Path) -> None:
    shutil.copytree(REPO / "sipload", dest / "sipload",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.pyc"))


def apply_patches(tree: Path) -> list[str]:
    """PATCHES into `tree`; the ones whose old text is no longer in the source (someone changed it)."""
    missing = []
    for module, what, old, new in PATCHES:
        path = tree / "sipload" / "sip" / f"{module}.py"
        text = path.read_text()
        if text.count(old) != 1:
            missing.append(f"{module}.py: {what}")
            continue
        path.write_text(text.replace(old, new))
    return missing


def build(tree: Path, stems: list[str]) -> tuple[bool, str, float]:
    """mypycify `stems` (of sipload/sip) in `tree`: (ok, output, seconds)."""
    for so in list(tree.rglob("*.so")):
        so.unlink()
    paths = [f"sipload/sip/{s}.py" for s in stems]
    (tree / "setup.py").write_text(SETUP_PY.format(paths=paths))
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, "setup.py", "build_ext", "--inplace"], cwd=tree, capture_output=True,
                          text=True, timeout=BUILD_TIMEOUT)
    return proc.returncode == 0, proc.stdout + proc.stderr, time.monotonic() - t0


def compile_core(tree: Path, baseline: set[str]) -> tuple[list[str], dict[str, str], list[tuple[str, float]]]:
    """(compiled stems, {stem: why it is left interpreted}, [(what, seconds)]). `baseline`: where the
    smoke check fails on the pure tree too (not the compiler's doing)."""
    stems = sorted(p.stem for p in (tree / "sipload" / "sip").glob("*.py"))
    failed: dict[str, str] = {}
    spent: list[tuple[str, float]] = []
    while stems:
        ok, output, seconds = build(tree, stems)
        spent.append((f"mypyc build of {len(stems)} modules ({'ok' if ok else 'failed'})", seconds))
        if not ok:
            errors: dict[str, str] = {}
            for m in ERROR_LINE.finditer(output):
                errors.setdefault(Path(m.group(1)).stem, f"compile: line {m.group(2)}: {m.group(3).strip()}")
            culprits = [s for s in errors if s in stems]
            if not culprits:
                raise RuntimeError(f"mypyc failed and no sip module is named in its output:\n{output[-3000:]}")
            for s in culprits:
                failed[s] = errors[s]
                stems.remove(s)
                say(f"  {s}.py left interpreted: {errors[s]}")
            continue
        t0 = time.monotonic()
        smoke = run_child(tree, "smoke")
        spent.append((f"smoke check of the compiled tree ({smoke['tests']['passed']} tests passed)",
                      time.monotonic() - t0))
        built = sorted(s for s, c in smoke["compiled"].items() if c)
        if set(built) != set(stems):
            raise RuntimeError(f"asked mypyc for {stems}, the tree imports compiled {built}")
        new = [f for f in smoke["failures"] if f["where"] not in baseline]
        unblamed = [f for f in new if f["module"] not in stems]
        if any(not f["where"].startswith("tests/") for f in unblamed):
            f = next(f for f in unblamed if not f["where"].startswith("tests/"))
            raise RuntimeError(f"the benchmarks fail on the compiled tree and no compiled module is to blame: "
                               f"{f['where']}: {f['error']}\n{f['traceback']}")
        blamed: dict[str, list[dict[str, Any]]] = {}
        for f in new:
            if f["module"] in stems:
                blamed.setdefault(f["module"], []).append(f)
        if not blamed:
            for f in unblamed:  # no compiled frame on the stack: the test's own code (reported, not fatal)
                failed[f"test only: {f['where']}"] = f["error"]
                say(f"  fails only compiled, in test code: {f['where']}: {f['error']}")
            return stems, failed, spent
        for module, fs in blamed.items():
            failed[module] = f"run time ({len(fs)} failing checks, first {fs[0]['where']}): {fs[0]['error']}"
            stems.remove(module)
            say(f"  {module}.py left interpreted: {failed[module]}")
    return stems, failed, spent


def wait_quiet(max_wait: float) -> str:
    sys.path.insert(0, str(BENCH))
    from common import wait_quiet as common_wait_quiet

    return common_wait_quiet(max_wait=max_wait, log=say).text()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--endpoints", type=int, default=20000, help="hot path: endpoints per round (default 20000)")
    ap.add_argument("--reps", type=int, default=5, help="repetitions, trees alternating (default 5)")
    ap.add_argument("--rounds", type=int, default=2, help="hot path: rounds per subprocess (default 2)")
    ap.add_argument("--codec-number", type=int, default=20000, help="codec: iterations per timeit run")
    ap.add_argument("--codec-repeat", type=int, default=3, help="codec: timeit runs per subprocess")
    ap.add_argument("--quiet-wait", type=float, default=20.0, help="max seconds to wait for a quiet machine per rep")
    ap.add_argument("--no-patched", action="store_true", help="skip the third tree (PATCHES applied, then compiled)")
    ap.add_argument("--keep", action="store_true", help="keep the temporary directory (its path is printed)")
    ap.add_argument("--child", choices=["smoke", "hotpath", "codec"], help=argparse.SUPPRESS)
    ap.add_argument("--tree", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        if args.child == "smoke":
            result = child_smoke(args.tree)
        elif args.child == "hotpath":
            result = child_hotpath(args.tree, args.endpoints, args.rounds)
        else:
            result = child_codec(args.tree, args.codec_number, args.codec_repeat)
        print("RESULT " + json.dumps(result), flush=True)
        return 0

    started = time.monotonic()
    spent: list[tuple[str, float]] = []
    tmp = Path(tempfile.mkdtemp(prefix="sipload-mypyc-"))
    try:
        import mypy.version

        say(f"compiled core (mypyc {mypy.version.__version__}), Python {sys.version.split()[0]}, "
            f"nproc {os.cpu_count()}, load {_load_avg()}; temporary trees in {tmp}")
        t0 = time.monotonic()
        trees = {"pure": tmp / "pure", "compiled": tmp / "compiled"}
        if not args.no_patched:
            trees["patched"] = tmp / "patched"
        copy_tree(trees["pure"])
        for name in list(trees)[1:]:
            shutil.copytree(trees["pure"] / "sipload", trees[name] / "sipload")
        spent.append((f"copying sipload/ {len(trees)} times", time.monotonic() - t0))
        t0 = time.monotonic()
        smoke = run_child(trees["pure"], "smoke")
        spent.append((f"smoke check of the pure tree ({smoke['tests']['passed']} tests passed)", time.monotonic() - t0))
        baseline = {f["where"] for f in smoke["failures"]}
        if any(not f["where"].startswith("tests/") for f in smoke["failures"]):
            raise RuntimeError(f"the benchmarks fail on the pure tree: {smoke['failures'][0]}")
        if baseline:
            say(f"  the pure tree already fails {len(baseline)} smoke checks (ignored): {sorted(baseline)[:5]}")
        modules: dict[str, tuple[list[str], dict[str, str]]] = {}
        for name in list(trees)[1:]:
            say(f"{name} tree:")
            if name == "patched":
                for m in apply_patches(trees[name]):
                    say(f"  patch not applied (the source changed): {m}")
            compiled, failed, build_spent = compile_core(trees[name], baseline)
            spent += [(f"{name}: {what}", s) for what, s in build_spent]
            modules[name] = (compiled, failed)
            say(f"  compiled ({len(compiled)}): {', '.join(f'{s}.py' for s in compiled) or 'none'}")
            left = [f"{s}.py" for s in failed if not s.startswith("test only")]
            say(f"  left interpreted ({len(left)}): " + (", ".join(left) or "none"))

        hot: dict[str, list[list[float]]] = {name: [] for name in trees}
        hot_best: dict[str, list[float]] = {name: [] for name in trees}  # best total per repetition
        codec: dict[str, list[list[Any]]] = {name: [] for name in trees}
        t_quiet = t_hot = t_codec = 0.0
        names = list(trees)
        for rep in range(args.reps):
            t0 = time.monotonic()
            state = wait_quiet(args.quiet_wait)
            t_quiet += time.monotonic() - t0
            order = names[rep % len(names):] + names[:rep % len(names)]
            for name in order:
                t0 = time.monotonic()
                result = run_child(trees[name], "hotpath", "--endpoints", str(args.endpoints),
                                   "--rounds", str(args.rounds))
                t_hot += time.monotonic() - t0
                hot[name] += result["rounds"]
                hot_best[name].append(min(sum(r) for r in result["rounds"]))
                t0 = time.monotonic()
                codec[name].append(run_child(trees[name], "codec", "--codec-number", str(args.codec_number),
                                             "--codec-repeat", str(args.codec_repeat))["cases"])
                t_codec += time.monotonic() - t0
            say(f"  rep {rep + 1}/{args.reps}: {state}; hot path best µs/reg: "
                + ", ".join(f"{n} {hot_best[n][-1]:.1f}" for n in order) + f"; load after {_load_avg()}")
        spent += [("waiting for a quiet machine", t_quiet), ("hot-path subprocesses", t_hot),
                  ("codec subprocesses", t_codec)]
        report(args, hot, hot_best, codec, modules)
    except Exception:
        traceback.print_exc()
        return 1
    finally:
        if args.keep:
            say(f"kept {tmp}")
        else:
            with contextlib.suppress(OSError):
                shutil.rmtree(tmp)
    say("\ntime: " + "; ".join(f"{what} {s:.1f} s" for what, s in spent) +
        f"; total {time.monotonic() - started:.0f} s")
    return 0


def _load_avg() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def report(args: argparse.Namespace, hot: dict[str, list[list[float]]], hot_best: dict[str, list[float]],
           codec: dict[str, list[list[Any]]], modules: dict[str, tuple[list[str], dict[str, str]]]) -> None:
    med = statistics.median
    names = list(hot)
    say(f"\nclient hot path (bench/hotpath.py, no syscalls), CPU µs per registration; {args.endpoints} endpoints, "
        f"{args.reps} reps x {args.rounds} rounds per tree, trees alternating")
    say(f"  {'':<20}{'arrival':>9}{'401':>9}{'200':>9}{'total':>9}{'best':>9}   (phases and total: medians)")
    rows = {}
    for name in names:
        rounds = hot[name]
        rows[name] = (*[med(r[i] for r in rounds) for i in range(3)], med(sum(r) for r in rounds),
                      min(sum(r) for r in rounds))
        say(f"  {name:<20}" + "".join(f"{v:9.1f}" for v in rows[name]))
    for name in names[1:]:
        say(f"  {name + '/pure':<20}" + "".join(f"{c / p:9.2f}" for c, p in zip(rows[name], rows["pure"],
                                                                                 strict=True)))
    for name in names[1:]:
        ratios = [c / p for c, p in zip(hot_best[name], hot_best["pure"], strict=True)]
        say(f"  ratio {name}/pure of each repetition's best totals (same repetition): "
            f"{', '.join(f'{r:.2f}' for r in ratios)}; median {med(ratios):.2f}")

    say(f"\ncodec (bench/codec.py), CPU µs per op: median of {args.reps} subprocesses' medians (best), "
        f"{args.codec_repeat} x {args.codec_number:,} iterations each")
    say(f"  {'':<54}" + "".join(f"{n:>16}" for n in names) + "".join(f"{n + '/pure':>15}" for n in names[1:]))
    for i, (label, *_rest) in enumerate(codec["pure"][0]):
        cells, medians = [], []
        for name in names:
            runs = [c[i] for c in codec[name]]
            medians.append(med(r[1] for r in runs))
            cells.append(f"{medians[-1]:7.2f} ({min(r[2] for r in runs):5.2f})")
        say(f"  {label:<54}" + "".join(f"{c:>16}" for c in cells)
            + "".join(f"{m / medians[0]:15.2f}" for m in medians[1:]))
    for name, (compiled, failed) in modules.items():
        say(f"\n{name}: compiled {', '.join(compiled) or 'none'}")
        for stem, why in failed.items():
            say(f"  {stem} (fails only compiled; no compiled code on its stack): {why}" if stem.startswith("test only")
                else f"  left interpreted: {stem}.py: {why}")
    if "patched" in modules:
        say("patched = the compiled tree after these source changes (temporary copy only):")
        for module, what, _old, _new in PATCHES:
            say(f"  {module}.py: {what}")


if __name__ == "__main__":
    raise SystemExit(main())
