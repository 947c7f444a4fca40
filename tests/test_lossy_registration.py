"""The client `Registration` machine against the `RegistrarCore`, through a lossy in-memory network.

No sockets and no sleeping: deliveries sit in a heap keyed by virtual time, and the loop jumps
`now` to the next event (a machine's `next_timer()` or the network's next delivery), like
aioquic's and trio's test_dtls.py lossy networks. Every random choice comes from seeded RNGs.
"""

from __future__ import annotations

import heapq
import random
from collections.abc import Callable
from dataclasses import dataclass, field

from sipload.registrar.bindings import UserState
from sipload.registrar.core import RegistrarCore
from sipload.registrar.settings import RegistrarSettings, parse_delay
from sipload.sip.digest import DigestClient
from sipload.sip.failures import FailureReason
from sipload.sip.ids import IdSource
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message
from sipload.sip.registration import (
    Challenged,
    Failed,
    Op,
    Profile,
    RegEvent,
    Registered,
    Registration,
    RegState,
    Retransmitted,
    Unregistered,
)

Address = tuple[str, int]
REGISTRAR: Address = ("127.0.0.1", 5060)
DOMAIN = "sipload.test"


@dataclass(order=True)
class _Delivery:
    at: float
    seq: int
    data: bytes = field(compare=False)
    source: Address = field(compare=False)
    to: Address = field(compare=False)


class LossyNet:
    """Datagrams are lost, duplicated and delayed (so reordered) with seeded randomness."""

    def __init__(self, seed: int, *, loss: float = 0.0, duplicate: float = 0.0,
                 latency: tuple[float, float] = (0.001, 0.001)) -> None:
        self.rng = random.Random(seed)
        self.loss = loss
        self.duplicate = duplicate
        self.latency = latency
        self.heap: list[_Delivery] = []
        self.seq = 0
        self.lost = 0
        self.duplicated = 0
        self.log: list[tuple[float, Address, Address, bytes]] = []  # (sent at, from, to, data)

    def send(self, at: float, data: bytes, source: Address, to: Address) -> None:
        self.log.append((at, source, to, data))
        copies = 1
        if self.rng.random() < self.duplicate:
            copies = 2
            self.duplicated += 1
        for _ in range(copies):
            if self.rng.random() < self.loss:
                self.lost += 1
                continue
            self.seq += 1
            heapq.heappush(self.heap, _Delivery(at + self.rng.uniform(*self.latency), self.seq, data, source, to))

    def next_delivery(self) -> float | None:
        return self.heap[0].at if self.heap else None

    def pop_due(self, now: float) -> list[_Delivery]:
        due = []
        while self.heap and self.heap[0].at <= now:
            due.append(heapq.heappop(self.heap))
        return due

    def sent_by(self, source: Address) -> list[tuple[float, Request]]:
        out = []
        for at, src, _, data in self.log:
            if src == source:
                message = parse_message(data)
                assert isinstance(message, Request)
                out.append((at, message))
        return out

    def responses_to(self, address: Address) -> list[tuple[float, Response]]:
        out = []
        for at, _, to, data in self.log:
            if to == address:
                message = parse_message(data)
                assert isinstance(message, Response)
                out.append((at, message))
        return out


class World:
    """Registrations + registrar core + network, driven by virtual time."""

    def __init__(self, core: RegistrarCore, net: LossyNet) -> None:
        self.core = core
        self.net = net
        self.now = 0.0
        self.endpoints: dict[Address, Registration] = {}
        self.events: dict[str, list[RegEvent]] = {}

    def add(self, user: str, *, password: str | None = None, profile: Profile | None = None,
            seed: int = 0) -> Registration:
        address = ("127.0.0.1", 5080 + len(self.endpoints))
        ids = IdSource(random.Random(seed * 1000 + len(self.endpoints)))
        reg = Registration(
            profile or Profile(domain=DOMAIN, registrar_uri=f"sip:{DOMAIN}"),
            user=user, contact=f"sip:{user}@{address[0]}:{address[1]}", sent_by=f"{address[0]}:{address[1]}",
            auth=DigestClient(user, password if password is not None else f"pw-{user}", cnonce=ids.cnonce),
            ids=ids,
        )
        self.endpoints[address] = reg
        self.events[user] = []
        return reg

    def address_of(self, reg: Registration) -> Address:
        return next(a for a, r in self.endpoints.items() if r is reg)

    def flush(self) -> None:
        for address, reg in self.endpoints.items():
            for data in reg.take_outgoing():
                self.net.send(self.now, data, address, REGISTRAR)
            self.events[reg.user].extend(reg.take_events())

    def run(self, until: float, *, stop_when: Callable[[], bool] | None = None,
            max_steps: int = 200_000) -> None:
        """Advance to `until` (or until stop_when()), event by event; bounded in steps."""
        self.flush()
        for _ in range(max_steps):
            if stop_when is not None and stop_when():
                return
            deadlines = [t for t in (r.next_timer() for r in self.endpoints.values()) if t is not None]
            delivery = self.net.next_delivery()
            if delivery is not None:
                deadlines.append(delivery)
            if not deadlines or min(deadlines) > until:
                self.now = until
                return
            self.now = max(self.now, min(deadlines))
            for item in self.net.pop_due(self.now):
                self._deliver(item)
            for reg in self.endpoints.values():
                deadline = reg.next_timer()
                if deadline is not None and deadline <= self.now:
                    reg.handle_timer(self.now)
            self.flush()
        raise AssertionError(f"no quiescence within {max_steps} steps (now={self.now})")

    def _deliver(self, item: _Delivery) -> None:
        if item.to == REGISTRAR:
            outcome = self.core.handle_bytes(item.data, item.source, "udp", self.now)
            if outcome.response is not None:
                self.net.send(self.now + outcome.delay, outcome.response.to_bytes(), REGISTRAR, item.source)
            return
        response = parse_message(item.data)
        assert isinstance(response, Response)
        self.endpoints[item.to].receive(response, self.now)

    def of(self, user: str, kind: type) -> list[RegEvent]:
        return [e for e in self.events[user] if isinstance(e, kind)]


def make_world(*, seed: int = 1, loss: float = 0.0, duplicate: float = 0.0,
               latency: tuple[float, float] = (0.001, 0.001), **settings: object) -> World:
    core = RegistrarCore(RegistrarSettings(seed=seed, **settings), now=0.0)  # type: ignore[arg-type]
    return World(core, LossyNet(seed, loss=loss, duplicate=duplicate, latency=latency))


def registered(world: World, *regs: Registration) -> Callable[[], bool]:
    """True once every registration got a 200 or gave up."""
    return lambda: all(world.of(r.user, Registered) or any(isinstance(e, Failed) and e.final
                                                           for e in world.events[r.user]) for r in regs)


# --- clean network -------------------------------------------------------------------------------


def test_clean_registration_challenge_then_200_binds_the_contact() -> None:
    world = make_world()
    reg = world.add("alice")
    reg.start(0.0)
    world.run(60.0, stop_when=registered(world, reg))
    assert [type(e) for e in world.events["alice"] if isinstance(e, Challenged | Registered)] == [
        Challenged, Registered]
    (done,) = world.of("alice", Registered)
    assert isinstance(done, Registered) and done.op is Op.REGISTER and done.expires == 3600
    assert reg.state is RegState.REGISTERED
    (binding,) = world.core.store.bindings(f"sip:alice@{DOMAIN}", world.now)
    assert binding.contact == reg.contact and binding.call_id == reg.call_id
    assert binding.source == world.address_of(reg)
    assert world.core.counters.responses == {401: 1, 200: 1}
    assert world.core.store.user_state("alice", world.now).state is UserState.LIVE


def test_refreshes_over_hours_keep_the_call_id_and_raise_the_cseq_then_unregister() -> None:
    world = make_world(nonce_lifetime=300.0)
    reg = world.add("alice")
    reg.start(0.0)
    cseqs: list[int] = []
    for hour in range(1, 7):  # six virtual hours, sampled every half hour
        for half in (0.5, 1.0):
            world.run((hour - 1 + half) * 3600.0)
            (binding,) = world.core.store.bindings(f"sip:alice@{DOMAIN}", world.now)
            assert binding.call_id == reg.call_id
            cseqs.append(binding.cseq)
    assert cseqs == sorted(cseqs) and len(set(cseqs)) >= 10  # one refresh per half hour at least
    refreshes = [e for e in world.of("alice", Registered) if isinstance(e, Registered) and e.op is Op.REFRESH]
    assert len(refreshes) >= 11
    assert not world.of("alice", Failed)
    # the cached nonce expired between refreshes: each refresh was re-challenged with stale=true
    assert world.core.counters.stale_challenges == len(refreshes)
    assert world.core.store.count(world.now).bindings == 1
    reg.stop(world.now)
    world.run(world.now + 60.0, stop_when=lambda: reg.finished)
    assert world.of("alice", Unregistered)
    assert world.core.store.bindings(f"sip:alice@{DOMAIN}", world.now) == ()
    assert world.core.store.user_state("alice", world.now).state is UserState.UNREGISTERED


# --- loss ------------------------------------------------------------------------------------------------


def test_thirty_percent_loss_with_duplicates_recovers_by_retransmission() -> None:
    world = make_world(seed=3, loss=0.3, duplicate=0.2, latency=(0.005, 0.2))
    regs = [world.add(f"user{i}", seed=3) for i in range(30)]
    for i, reg in enumerate(regs):
        reg.start(i * 0.01)
    world.run(600.0, stop_when=registered(world, *regs))
    for reg in regs:
        assert reg.state is RegState.REGISTERED, (reg.user, world.events[reg.user])
    retransmitted = sum(len(world.of(r.user, Retransmitted)) for r in regs)
    assert retransmitted > 10
    assert world.net.lost > 10 and world.net.duplicated > 5
    assert world.core.counters.retransmissions > 0  # duplicates / retransmissions answered from the cache
    assert world.core.store.count(world.now).bindings == 30
    assert world.core.counters.auth_failures.get("replay", 0) == 0


def test_total_loss_times_out_with_bounded_retries() -> None:
    world = make_world(loss=1.0)
    profile = Profile(domain=DOMAIN, registrar_uri=f"sip:{DOMAIN}", max_retries=3)
    reg = world.add("alice", profile=profile)
    reg.start(0.0)
    world.run(3600.0)
    failures = [e for e in world.of("alice", Failed) if isinstance(e, Failed)]
    assert [f.reason for f in failures] == [FailureReason.TIMEOUT] * 4
    assert [f.final for f in failures] == [False, False, False, True]
    assert failures[0].now == 32.0  # Timer F = 64 * T1
    assert reg.state is RegState.FAILED and reg.next_timer() is None
    sent = world.net.sent_by(world.address_of(reg))
    assert len(sent) == 4 * 11  # 4 transactions x (1 send + 10 retransmissions)
    assert len(world.of("alice", Retransmitted)) == 40
    assert world.core.counters.total_received == 0


# --- registrar answers --------------------------------------------------------------------------------------


def test_503_with_retry_after_backs_off_then_succeeds() -> None:
    world = make_world(seed=5, error_503=0.5, retry_after=7)
    profile = Profile(domain=DOMAIN, registrar_uri=f"sip:{DOMAIN}", max_retries=20)
    reg = world.add("alice", profile=profile)
    reg.start(0.0)
    world.run(3600.0, stop_when=registered(world, reg))
    assert reg.state is RegState.REGISTERED
    soft = [e for e in world.of("alice", Failed) if isinstance(e, Failed)]
    assert soft and all(f.status == 503 and not f.final for f in soft)
    assert world.core.counters.injected_503 == len(soft)
    sends = [at for at, _ in world.net.sent_by(world.address_of(reg))]
    for failure in soft:  # the next request waits for Retry-After
        later = [at for at in sends if at > failure.now]
        assert later and later[0] >= failure.now + 7.0


def test_423_retries_with_min_expires() -> None:
    world = make_world(min_expires=120, default_expires=600)
    profile = Profile(domain=DOMAIN, registrar_uri=f"sip:{DOMAIN}", expires=60)
    reg = world.add("alice", profile=profile)
    reg.start(0.0)
    world.run(30.0, stop_when=registered(world, reg))
    (done,) = world.of("alice", Registered)
    assert isinstance(done, Registered) and done.expires == 120
    assert world.core.counters.responses[423] == 1
    requests = [r for _, r in world.net.sent_by(world.address_of(reg))]
    assert [r.expires() for r in requests][-1] == 120
    (binding,) = world.core.store.bindings(f"sip:alice@{DOMAIN}", world.now)
    assert abs(binding.expires_at - (done.now + 120)) < 0.01


def test_wrong_password_fails_auth_rejected_and_is_not_retried() -> None:
    world = make_world()
    reg = world.add("alice", password="wrong")
    reg.start(0.0)
    world.run(7200.0)
    failures = [e for e in world.of("alice", Failed) if isinstance(e, Failed)]
    assert len(failures) == 1
    assert failures[0].reason is FailureReason.AUTH_REJECTED and failures[0].final
    assert reg.state is RegState.FAILED
    assert world.core.counters.received == {"REGISTER": 2}
    assert world.core.counters.auth_failures == {"wrong_response": 1}
    assert world.core.store.user_state("alice", world.now).state is UserState.REJECTED


def test_hours_of_refreshes_under_loss_delay_and_drops_then_everyone_unregisters() -> None:
    world = make_world(seed=2, loss=0.3, duplicate=0.2, latency=(0.005, 0.3), drop=0.05,
                       delay=parse_delay("uniform:1ms:300ms"))
    profile = Profile(domain=DOMAIN, registrar_uri=f"sip:{DOMAIN}", expires=600, refresh_jitter=0.1)
    regs = [world.add(f"user{i}", seed=2, profile=profile) for i in range(20)]
    for i, reg in enumerate(regs):
        reg.start(i * 0.05)
    world.run(3 * 3600.0)
    assert all(reg.state is RegState.REGISTERED for reg in regs)
    assert world.core.store.count(world.now).bindings == 20
    assert all(not (isinstance(e, Failed) and e.final) for r in regs for e in world.events[r.user])
    assert world.core.counters.drops > 0 and world.core.counters.retransmissions > 0
    for reg in regs:
        reg.stop(world.now)
    world.run(world.now + 600.0, stop_when=lambda: all(r.finished for r in regs))
    assert all(reg.state is RegState.UNREGISTERED for reg in regs)
    assert world.core.store.count(world.now).bindings == 0
    assert world.core.store.user_state("user7", world.now).state is UserState.UNREGISTERED
