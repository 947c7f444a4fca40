"""Passwords and API keys never appear in results, logs, reports or error messages.

Every secret here contains "SECRET" and nothing else does. A real registrar process (`sipload
registrar`, its provider emulators holding the API key), a real `sipload run` whose endpoints use
those passwords (one of them wrong) and whose [crosscheck] asks the Telnyx emulator with the key
from the environment, `sipload check` with the right and with a wrong key, and scenarios that fail
to load because of a password: every file the run wrote and everything any of them printed is
searched for "SECRET".
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import trio

from sipload.registrar.settings import RegistrarSettings, load_users
from sipload.scenario import ScenarioError, parse_scenario
from sipload.sip.digest import DigestClient

ROOT = Path(__file__).resolve().parent.parent
MARK = b"SECRET"
API_KEY = "key-SECRET-0123456789"
COUNT = 6

SCENARIO = """
name = "secrets"
seed = 9
thresholds = ["register.success_rate == 100%"]
[target]
registrar = "sip:127.0.0.1:{sip}"
domain = "sipload.test"
[endpoints]
csv = "users.csv"
expires = 30
[load]
rate = 50
duration = "1500ms"
interval = "500ms"
unregister = false
[timers]
t1 = "50ms"
max_retries = 0
[crosscheck]
provider = "telnyx"
base_url = "http://127.0.0.1:{api}/v2"
api_key_env = "SIPLOAD_TEST_TELNYX_KEY"
"""


def env(**extra: str) -> dict[str, str]:
    out = {**os.environ, "PYTHONUNBUFFERED": "1", **extra}
    out["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), out.get("PYTHONPATH", "")) if p)
    return out


async def sipload(*args: str, cwd: Path, extra_env: dict[str, str] | None = None,
                  timeout: float = 60) -> tuple[int, bytes]:
    with trio.fail_after(timeout):
        proc = await trio.run_process([sys.executable, "-m", "sipload", *args], cwd=cwd, env=env(**(extra_env or {})),
                                      capture_stdout=True, capture_stderr=True, check=False,
                                      stdin=subprocess.DEVNULL)
    return proc.returncode, proc.stdout + b"\n" + proc.stderr


def leaks(data: bytes) -> list[str]:
    return [data[max(0, m.start() - 60): m.end() + 60].decode(errors="replace")
            for m in re.finditer(MARK, data)]


async def test_no_secret_in_any_output_of_a_run_that_used_them(tmp_path: Path) -> None:
    users = tmp_path / "users.csv"
    users.write_text("SEQUENTIAL\n" + "".join(f"user{n};pw-SECRET-{n};\n" for n in range(1, COUNT))
                     + f"user{COUNT};WRONG-SECRET-{COUNT};\n")                # one wrong password
    registrar_users = tmp_path / "registrar-users.txt"
    registrar_users.write_text("".join(f"user{n};pw-SECRET-{n}\n" for n in range(1, COUNT + 1)))
    outputs: dict[str, bytes] = {}

    proc = await trio.lowlevel.open_process(
        [sys.executable, "-m", "sipload", "registrar", "--listen", "udp:127.0.0.1:0", "--users", str(registrar_users),
         "--realm", "sipload.test", "--api", "127.0.0.1:0", "--duration", "40"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, cwd=tmp_path,
        env=env(TELNYX_API_KEY=API_KEY, AUDIAN_AUTH_TOKEN=API_KEY, ULTRAVOX_API_KEY=API_KEY))
    assert proc.stdout is not None
    registrar_out = b""
    try:
        with trio.fail_after(30):
            while b"provider emulators on" not in registrar_out:
                chunk = await proc.stdout.receive_some(4096)
                assert chunk, registrar_out
                registrar_out += chunk
        sip = int(re.search(rb"listening on udp:127\.0\.0\.1:(\d+)", registrar_out)[1])  # type: ignore[index]
        api = int(re.search(rb"provider emulators on http://127\.0\.0\.1:(\d+)", registrar_out)[1])  # type: ignore[index]
        path = tmp_path / "secrets.toml"
        path.write_text(SCENARIO.format(sip=sip, api=api))
        out = tmp_path / "out"

        async def run() -> None:
            code, text = await sipload("run", str(path), "--out", str(out), "--workers", "1", cwd=tmp_path,
                                       extra_env={"SIPLOAD_TEST_TELNYX_KEY": API_KEY})
            outputs["run"] = text
            assert code == 1, text                                     # the wrong password failed the gate
            assert b"auth_rejected 1" in text, text
            code, text = await sipload("check", "--provider", "telnyx", "--base-url", f"http://127.0.0.1:{api}/v2",
                                       "--results", str(out), "--min-agreement", "0", cwd=tmp_path,
                                       extra_env={"TELNYX_API_KEY": API_KEY})
            outputs["check"] = text
            assert code == 0, text

        async def wrong_key() -> None:
            code, text = await sipload("check", "--provider", "telnyx", "--base-url", f"http://127.0.0.1:{api}/v2",
                                       "--users", "user{n}", "--count", "2", cwd=tmp_path,
                                       extra_env={"TELNYX_API_KEY": "key-SECRET-wrong"})
            outputs["check with a wrong key"] = text
            assert code != 0 and text.strip(), text                  # refused, and it says so

        async def broken_scenarios() -> None:
            bad_template = tmp_path / "bad-template.toml"
            bad_template.write_text(SCENARIO.format(sip=sip, api=api).replace(
                'csv = "users.csv"', 'count = 2\npassword = "pw-SECRET-{nope}"'))
            code, text = await sipload("run", str(bad_template), cwd=tmp_path)
            outputs["bad template"] = text
            assert code == 2 and b"endpoints.password" in text, text
            short = tmp_path / "short.csv"
            short.write_text("SEQUENTIAL\nuser1;pw-SECRET-1;x\nuserSECRETpw\n")
            bad_csv = tmp_path / "bad-csv.toml"
            bad_csv.write_text(SCENARIO.format(sip=sip, api=api).replace('"users.csv"', '"short.csv"'))
            code, text = await sipload("run", str(bad_csv), cwd=tmp_path)
            outputs["short csv line"] = text
            assert code == 2 and b"short.csv:3" in text, text

        async with trio.open_nursery() as nursery:   # independent: at the same time (the check reads the run)
            nursery.start_soon(run)
            nursery.start_soon(broken_scenarios)
            nursery.start_soon(wrong_key)
    finally:
        proc.send_signal(2)
        with trio.move_on_after(10):
            while chunk := await proc.stdout.receive_some(4096):
                registrar_out += chunk
            await proc.wait()
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    outputs["registrar"] = registrar_out

    files = sorted(p for p in out.rglob("*") if p.is_file())
    names = {p.name for p in files}
    assert {"summary.json", "endpoints.csv", "junit.xml", "report.html", "intervals.jsonl"} <= names, names
    assert b'"crosscheck"' in (out / "summary.json").read_bytes()      # the key was used by the run
    found = {f"file {p.relative_to(tmp_path)}": leaks(p.read_bytes()) for p in files}
    found.update({f"output of {name}": leaks(data) for name, data in outputs.items()})
    assert not {k: v for k, v in found.items() if v}, found


def test_reprs_and_errors_of_the_configuration_hide_secrets(tmp_path: Path) -> None:
    load = '[load]\nrate = 1\nduration = "10s"\n'
    scenario = parse_scenario('name = "r"\n[endpoints]\ncount = 2\npassword = "pw-SECRET-{n}"\n'
                              f'{load}[registrar]\npassword = "pw-SECRET-{{user}}"\n', tmp_path / "r.toml")
    shown = repr(scenario) + repr(scenario.endpoints.credentials(0)) + repr(scenario.registrar)
    assert "SECRET" not in shown
    assert "SECRET" not in repr(RegistrarSettings(password_template="pw-SECRET-{user}"))
    assert "SECRET" not in repr(DigestClient("u", "pw-SECRET", cnonce=lambda: "c"))
    for bad in ('password = "SECRET"', 'password = 5', 'password = "a\\nSECRET"'):
        try:
            parse_scenario(f'name = "r"\n[endpoints]\ncount = 1\n{load}[registrar]\n{bad}\n', tmp_path / "r.toml")
        except ScenarioError as exc:
            assert "SECRET" not in str(exc) and "registrar.password" in str(exc), exc
        else:
            raise AssertionError(bad)
    users = tmp_path / "u.txt"
    users.write_text("u1;pw-SECRET\n;pw-SECRET-2\n")
    try:
        load_users(users)
    except ValueError as exc:
        assert "SECRET" not in str(exc) and ":2:" in str(exc)
    else:
        raise AssertionError("accepted a line without a user")
