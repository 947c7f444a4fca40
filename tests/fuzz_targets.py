"""Fuzz targets shared by hypothesis (tests/test_fuzz_registrar.py) and atheris (run this file).

The invariants:

* `client_target(data)`: bytes that arrive for an endpoint while its REGISTER is in flight. They are
  unparseable (ParseError) or a message the registration machine takes or leaves (`receive` returns
  a bool); nothing else is raised, and the machine stays usable (timers, stop).
* `registrar_target(data)`: bytes that arrive at the embedded registrar. `handle_bytes` answers with
  a SIP response (which parses again) or nothing; it never raises.

`python tests/fuzz_atheris.py [libFuzzer options] [corpus dirs]` fuzzes both with atheris
(`pip install atheris`), the corpus being tests/data/hostile/.
"""

from __future__ import annotations

import random

from hostile_registrar import CORPUS_BRANCH, CORPUS_CALL_ID

from sipload.registrar.core import RegistrarCore
from sipload.registrar.settings import RegistrarSettings
from sipload.sip.digest import DigestClient
from sipload.sip.errors import ParseError
from sipload.sip.ids import IdSource
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message
from sipload.sip.registration import Profile, Registration, RegState
from sipload.sip.transaction import Timers

SOURCE = ("127.0.0.1", 5080)
PROFILE = Profile(domain="sipload.test", registrar_uri="sip:sipload.test", expires=60, max_retries=1,
                  timers=Timers(t1=0.5))


def new_registration() -> tuple[Registration, Request]:
    """An endpoint whose first REGISTER is in flight, and that REGISTER."""
    ids = IdSource(random.Random(1))
    reg = Registration(PROFILE, user="user1", contact="sip:user1@127.0.0.1:5080;transport=udp",
                       sent_by="127.0.0.1:5080", auth=DigestClient("user1", "pw-user1", cnonce=ids.cnonce),
                       ids=ids)
    reg.start(0.0)
    [data] = reg.take_outgoing()
    request = parse_message(data)
    assert isinstance(request, Request)
    return reg, request


def aimed(data: bytes, request: Request) -> bytes:
    """Corpus datagrams name CORPUS_CALL_ID / CORPUS_BRANCH: point them at this endpoint's request."""
    return (data.replace(CORPUS_CALL_ID.encode(), request.call_id.encode())
            .replace(CORPUS_BRANCH.encode(), (request.branch or "").encode()))


def client_target(data: bytes) -> None:
    reg, request = new_registration()
    for now, chunk in ((0.01, aimed(data, request)), (0.02, aimed(data, request))):  # and its duplicate
        try:
            msg = parse_message(chunk)
        except ParseError:
            continue
        if isinstance(msg, Response):
            assert isinstance(reg.receive(msg, now), bool)
        reg.take_outgoing()
        reg.take_events()
    # the machine goes on: timers and the stop work in whatever state the bytes left it
    deadline = reg.next_timer()
    if deadline is not None:
        reg.handle_timer(min(deadline, 1e6))
    reg.stop(1e6 + 1)
    assert reg.state in RegState
    assert len(reg.take_outgoing()) <= 2


_CORE = RegistrarCore(RegistrarSettings(realm="sipload.test", min_expires=1), now=0.0, rng=random.Random(0))


def registrar_target(data: bytes) -> None:
    outcome = _CORE.handle_bytes(data, SOURCE, "udp", 1.0)
    if outcome.response is not None:
        assert 200 <= outcome.response.status <= 599
        again = parse_message(outcome.response.to_bytes())
        assert isinstance(again, Response)


def both(data: bytes) -> None:
    client_target(data)
    registrar_target(data)
