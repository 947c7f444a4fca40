"""SIPp (Debian `sip-tester`, a third-party UA) -> `sipload registrar` (the standalone CLI, as a subprocess).

SIPp runs peers/sipp/register-digest.xml (REGISTER -> 401 -> REGISTER with MD5 digest, qop=auth ->
200) at 300 registrations/s; the registrar's own per-second lines and final totals say what it holds.
"""

from __future__ import annotations

import functools

import pytest
import trio
from interop_helpers import RegistrarProcess, line_fields

from peers import SippResult, free_port, run_sipp

USERS = range(1, 1501)
RATE = 300


async def sipp_register(target: str, **kwargs: object) -> SippResult:
    call = functools.partial(run_sipp, target, USERS, **kwargs)  # type: ignore[arg-type]
    return await trio.to_thread.run_sync(call)


@pytest.mark.interop
async def test_sipp_registers_1500_at_300_per_s_and_unregisters_them(sipp: str) -> None:
    port = free_port()
    target = f"127.0.0.1:{port}"
    total = len(USERS)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            registrar = await RegistrarProcess.launch(
                nursery, ["--listen", f"udp:{target}", "--password", "pw-{user}", "--realm", "sipload.test"]
            )
            try:
                registered = await sipp_register(target, rate=RATE, total=total, timeout=30)
                assert (registered.successful, registered.failed, registered.created) == (total, 0, total), (
                    registered.output_tail
                )
                assert registered.retransmissions == 0, registered.counters
                # the next per-second line shows every binding held
                mark = len(registrar.lines)
                line = await registrar.wait_line(lambda s: " live=" in s, timeout=3, start=mark)
                assert (line_fields(line)["live"], line_fields(line)["aors"]) == (str(total), str(total)), line

                # SIPp unregisters them: Expires: 0 from the same contacts, with new Call-IDs
                unregistered = await sipp_register(
                    target, rate=1000, total=total, expires=0, local_port=registered.local_port, timeout=30
                )
                assert (unregistered.successful, unregistered.failed) == (total, 0), unregistered.output_tail
                mark = len(registrar.lines)
                line = await registrar.wait_line(lambda s: " live=" in s, timeout=3, start=mark)
                assert line_fields(line)["live"] == "0", line
            finally:
                code = await registrar.stop()
    assert code == 0, registrar.output
    totals = await registrar.wait_line(lambda s: s.startswith("totals after"), timeout=1)
    fields = line_fields(totals)
    assert fields["received"] == str(4 * total), totals  # 2 REGISTERs per registration and per unregistration
    assert (fields["200"], fields["401"]) == (str(2 * total), str(2 * total)), totals
    assert fields["auth_failures"] == "none", totals
    assert (fields["drops"], fields["retransmissions"], fields["parse_errors"]) == ("0", "0", "0"), totals
    assert (fields["live"], fields["aors"]) == ("0", "0"), totals
