"""pyVoIP phones (an independent, thread-based UA; GPL, so only here and in a subprocess) -> the embedded registrar.

pyVoIP's habits the registrar must accept: MD5 digest without qop; a digest uri of its own
("sip:127.0.0.1;transport=UDP" while the Request-URI is "sip:127.0.0.1"); a new Call-ID for every
registration (the first, each refresh, the unregistration), so that a refresh replaces the binding
by its contact/+sip.instance rather than by Call-ID; Contact with +sip.instance; display names in
From/To. The phones run in tests/pyvoip_phones.py (a subprocess, bounded); the registrar runs
in-process (`serve_registrar`) so the test reads its binding store directly.
"""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from typing import Any

import pytest
import trio
from interop_helpers import REPO, LineProcess

from peers import free_port, require_peer
from sipload.registrar.bindings import Binding, StoreCount, UserState
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings

PHONES = 3
EXPIRES = 7  # pyVoIP re-registers EXPIRES - 5 = 2 s after each registration


def events(proc: LineProcess) -> list[dict[str, Any]]:
    out = []
    for line in proc.lines:
        if line.startswith("{"):
            event = json.loads(line)
            assert isinstance(event, dict)
            out.append(event)
    return out


def is_event(*names: str) -> Any:
    return lambda line: line.startswith("{") and json.loads(line).get("event") in names


@pytest.mark.interop
async def test_pyvoip_phones_register_refresh_and_unregister() -> None:
    require_peer("pyVoIP", importlib.util.find_spec("pyVoIP") is not None,
                 "python3 -m pip install -e '.[test]' (installs pyvoip)")
    settings = RegistrarSettings(realm="sipload.test", password_template="pw-{user}", min_expires=1)
    core = RegistrarCore(settings, now=trio.current_time())
    phones = {f"phone{k}": free_port() for k in range(1, PHONES + 1)}
    aors = {user: f"sip:{user}@127.0.0.1" for user in phones}

    def bindings() -> dict[str, tuple[Binding, ...]]:
        now = trio.current_time()
        return {user: core.store.bindings(aor, now) for user, aor in aors.items()}

    with trio.fail_after(40):
        async with trio.open_nursery() as nursery:
            [listen] = await nursery.start(functools.partial(
                serve_registrar, settings, [Listen("udp", "127.0.0.1", 0)], core=core, out=lambda line: None
            ))
            argv = [sys.executable, str(REPO / "tests" / "pyvoip_phones.py"), "--port", str(listen.port),
                    "--expires", str(EXPIRES)]
            for user, port in phones.items():
                argv += ["--user", f"{user}:{port}"]
            proc = await LineProcess.start(nursery, argv, ready=is_event("ready", "error", "done"), stdin=True)
            try:
                assert [e for e in events(proc) if e["event"] != "registered"] == [{"event": "ready"}], proc.output
                # every phone is bound with its own contact, instance, Call-ID and User-Agent
                first = bindings()
                for user, port in phones.items():
                    [b] = first[user]
                    assert b.contact == f"sip:{user}@127.0.0.1:{port};transport=UDP", b
                    assert b.instance is not None and b.instance.startswith("<urn:uuid:"), b
                    assert b.call_id.endswith(f"@127.0.0.1:{port}"), b  # pyVoIP's Call-ID habit
                    assert b.cseq == 2 and b.user_agent == "pyVoIP 1.6.8" and b.source == ("127.0.0.1", port), b
                    assert b.expires_in(trio.current_time()) <= EXPIRES
                assert core.store.count(trio.current_time()) == StoreCount(PHONES, PHONES)
                assert core.counters.auth_ok == PHONES and not core.counters.auth_failures

                # pyVoIP refreshes with a new Call-ID: the binding is replaced, not duplicated
                with trio.fail_after(10):
                    while any(b[0].call_id == first[u][0].call_id for u, b in bindings().items() if b):
                        await trio.sleep(0.1)
                refreshed = bindings()
                for user in phones:
                    [b] = refreshed[user]
                    assert b.contact == first[user][0].contact and b.instance == first[user][0].instance
                    assert b.cseq > 2 and b.registered_at == first[user][0].registered_at, b
                assert core.store.count(trio.current_time()) == StoreCount(PHONES, PHONES)

                # stopping the phones unregisters them (Expires: 0, again a new Call-ID)
                await proc.send_line("stop")
                code = await proc.wait(timeout=20)
            finally:
                if proc.process.returncode is None:
                    await proc.stop()
            nursery.cancel_scope.cancel()
    assert code == 0, proc.output
    stopped = [e for e in events(proc) if e["event"] == "stopped"]
    assert sorted(e["user"] for e in stopped) == sorted(phones) and {e["status"] for e in stopped} == {"INACTIVE"}
    now = trio.current_time()
    assert core.store.count(now) == StoreCount(0, 0)
    assert {core.store.user_state(user, now).state for user in phones} == {UserState.UNREGISTERED}
    # MD5 without qop and pyVoIP's digest uri were accepted every time: never a rejected credential
    assert not core.counters.auth_failures, core.counters.auth_failures
    assert core.counters.responses[200] == core.counters.responses[401] >= 3 * PHONES
    assert set(core.counters.responses) == {200, 401}
