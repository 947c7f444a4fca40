"""The embedded registrar's security: no binding without a valid digest, replayed nonce counts rejected,
an expired nonce answered with stale=true, challenges rate-limited per source, loopback by default."""

from __future__ import annotations

import itertools
import random

from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.ratelimit import ChallengeLimiter, default_challenge_rate
from sipload.registrar.settings import RegistrarSettings
from sipload.scenario import RegistrarConfig
from sipload.sip.digest import DigestClient, parse_challenges
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message

A = ("127.0.0.1", 5080)
B = ("127.0.0.2", 5080)
_PHONES = itertools.count()


def core(**kwargs: object) -> RegistrarCore:
    settings = RegistrarSettings(realm="sipload.test", min_expires=1, nonce_lifetime=30.0, **kwargs)  # type: ignore[arg-type]
    return RegistrarCore(settings, now=0.0, rng=random.Random(2))


class Phone:
    def __init__(self, user: str = "alice", password: str | None = None, to_user: str | None = None) -> None:
        self.user, self.to = user, to_user or user
        self.client = DigestClient(user, password or f"pw-{user}", cnonce=lambda: "0a4f113b")
        self.cseq = 0
        self.auth: str | None = None
        self.call_id = f"{user}-{next(_PHONES)}@phone"     # phones never share a transaction

    def request(self, *, expires: int = 60, auth: str | None = None) -> Request:
        self.cseq += 1
        lines = [
            "REGISTER sip:sipload.test SIP/2.0",
            f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bK{self.call_id}{self.cseq};rport",
            f"From: <sip:{self.to}@sipload.test>;tag=1", f"To: <sip:{self.to}@sipload.test>",
            f"Call-ID: {self.call_id}", f"CSeq: {self.cseq} REGISTER",
            f"Contact: <sip:{self.user}@127.0.0.1:5080>", f"Expires: {expires}",
        ]
        value = auth if auth is not None else self.auth
        if value is not None:
            lines.append(f"Authorization: {value}")
        message = parse_message(("\r\n".join([*lines, "Content-Length: 0", "", ""])).encode())
        assert isinstance(message, Request)
        return message

    def answer(self, challenge: Response) -> str:
        chosen = parse_challenges(challenge.headers.get_all("www-authenticate"))[0]
        self.auth = self.client.authorize(chosen, "REGISTER", "sip:sipload.test")[1]
        return self.auth


def send(c: RegistrarCore, request: Request, now: float, source: tuple[str, int] = A) -> Response | None:
    return c.handle(request, source, "udp", now).response


def status(response: Response | None) -> int | None:
    return None if response is None else response.status


def test_no_binding_without_a_valid_digest() -> None:
    c = core()
    challenge = send(c, Phone().request(), 0.0)
    assert status(challenge) == 401 and c.store.count(0.0).bindings == 0
    assert challenge is not None
    wrong = Phone(password="not-it")
    wrong.answer(challenge)
    assert status(send(c, wrong.request(), 0.1)) == 401                      # wrong password
    forged = Phone()
    forged.answer(challenge)
    assert forged.auth is not None
    assert status(send(c, forged.request(auth=forged.auth.replace('nonce="', 'nonce="x')), 0.2)) == 401  # not our nonce
    other = Phone("alice", to_user="bob")                                   # alice's credentials for bob's AoR
    other.answer(challenge)
    assert status(send(c, other.request(), 0.3)) == 403
    assert c.store.count(0.3).bindings == 0
    good = Phone()
    good.answer(challenge)
    assert status(send(c, good.request(), 0.4)) == 401           # nc 1 of this nonce was used (by the 403)
    fresh = send(c, Phone().request(), 0.5)
    assert fresh is not None
    good.answer(fresh)
    assert status(send(c, good.request(), 0.6)) == 200 and c.store.count(0.6).bindings == 1


def test_a_replayed_nonce_count_is_rejected() -> None:
    c = core()
    phone = Phone()
    challenge = send(c, phone.request(), 0.0)
    assert challenge is not None
    captured = phone.answer(challenge)                                       # nc=00000001
    assert status(send(c, phone.request(), 0.1)) == 200
    # an attacker replays the captured credentials in a new transaction to remove the binding
    attacker = Phone()
    attacker.cseq = 10
    assert status(send(c, attacker.request(expires=0, auth=captured), 0.2)) == 401
    assert c.store.count(0.2).bindings == 1
    assert c.counters.auth_failures["replay"] == 1
    # the phone itself goes on with nc=00000002 on the same nonce
    phone.answer(challenge)
    assert "nc=00000002" in (phone.auth or "")
    assert status(send(c, phone.request(), 0.3)) == 200


def test_an_expired_nonce_is_answered_with_stale_true_and_then_accepted() -> None:
    c = core()
    phone = Phone()
    challenge = send(c, phone.request(), 0.0)
    assert challenge is not None
    phone.answer(challenge)
    assert status(send(c, phone.request(), 1.0)) == 200
    phone.answer(challenge)                                                  # the old nonce, 40 s later
    stale = send(c, phone.request(), 41.0)
    assert stale is not None and stale.status == 401
    assert "stale=true" in " ".join(stale.headers.get_all("www-authenticate"))
    assert c.counters.stale_challenges == 1
    phone.answer(stale)
    assert status(send(c, phone.request(), 41.1)) == 200


def test_challenges_are_rate_limited_per_source() -> None:
    c = core(challenge_rate=5.0, challenge_burst=5.0)
    answered = [status(send(c, Phone(f"u{i}").request(), 0.0)) for i in range(20)]
    assert answered == [401] * 5 + [None] * 15                               # no answer over the limit
    assert c.counters.challenges_limited == 15 and c.counters.challenges == 5
    assert status(send(c, Phone("other").request(), 0.0, B)) == 401          # another source: its own bucket
    assert [status(send(c, Phone(f"v{i}").request(), 1.0)) for i in range(6)] == [401] * 5 + [None]  # refilled
    # authenticated requests are never limited
    phone = Phone("w")
    limited = core(challenge_rate=1.0, challenge_burst=1.0)
    challenge = send(limited, phone.request(), 0.0)
    assert challenge is not None
    assert [status(send(limited, phone.request(auth=phone.answer(challenge)), 0.0)) for _ in range(5)] == [200] * 5


def test_the_rate_limiter_keeps_bounded_state() -> None:
    limiter = ChallengeLimiter(1.0, 1.0, max_sources=100)
    for i in range(10_000):
        limiter.allow(f"10.0.{i // 256}.{i % 256}", 0.0)
    assert len(limiter) == 100


def test_the_registrar_listens_on_loopback_unless_told_otherwise() -> None:
    from sipload.cli.registrar import DEFAULT_LISTENS

    hosts = [Listen.parse(text).host for text in DEFAULT_LISTENS]
    assert hosts and all(h in ("127.0.0.1", "::1") for h in hosts)
    assert RegistrarConfig().listen_host == "127.0.0.1"                     # the embedded one of a scenario
    assert default_challenge_rate(hosts) == 0.0                              # a load test from this host
    assert default_challenge_rate(["0.0.0.0"]) > 0 and default_challenge_rate(["127.0.0.1", "192.0.2.1"]) > 0
