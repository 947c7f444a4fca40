"""The device groups' behaviours: churn, flap and avalanche, on the worker's scheduler.

Theory of operation
-------------------
The fleet plan (`sipload.scenario.groups`) gives each device a role. `Behaviours` keeps a heap of
events, (due, seq, act, endpoint or group index), which the worker's scheduler pops when they are
due, in virtual time when the clock is mocked:

- churn: a device VANISHes (drops off the network without unregistering, every `churn.every` times
  a per-device draw in [0.5, 1.5)) and RETURNs `churn.away` later, registering afresh;
- flap: a registered device unregisters (FLAP_DOWN) every `flap.period` and registers again half a
  period later (FLAP_UP);
- avalanche: at each of the group's times, every present device of the group registers again at once.

A device that registers again is first renewed by the worker (a fresh, idle Registration: new
Call-ID and From tag, CSeq from 1, the same +sip.instance), then queued on `rearrivals`,
(intended, seq, endpoint index), which the scheduler starts like arrivals: max_in_flight applies and
their lag is measured from their intended time. The draws come from a random source per device,
seeded from the scenario's seed: the same whatever the sharding.
"""

from __future__ import annotations

import enum
import heapq
import random
from collections.abc import Callable, Mapping, Sequence

from sipload.engine.endpoint import Endpoint
from sipload.engine.transitions import OFFLINE
from sipload.scenario.groups import FleetPlan, Role
from sipload.sip.registration import RegState


class Act(enum.IntEnum):
    """Behaviour events on the heap."""

    VANISH = 0      # churn: the device drops off the network without unregistering
    RETURN = 1      # churn: it comes back and registers afresh (new Call-ID, CSeq 1)
    FLAP_DOWN = 2   # flap: unregister
    FLAP_UP = 3     # flap: register again
    AVALANCHE = 4   # every device of a group registers again at once (the index is the group's)


class Behaviours:
    """A worker's behaviour events and queued re-registrations (see the module docstring)."""

    def __init__(
        self,
        plan: FleetPlan,
        seed: int | None,
        endpoints: Sequence[Endpoint],
        by_index: Mapping[int, Endpoint],
        *,
        renew: Callable[[Endpoint, bool], None],
        after_input: Callable[[Endpoint], None],
        wake_at: Callable[[float], None],
    ) -> None:
        self.plan = plan
        self._seed = seed
        self._endpoints = endpoints
        self._by_index = by_index
        self._renew = renew                # the worker's: a fresh, idle Registration (optionally on route 0)
        self._after_input = after_input
        self._wake_at = wake_at
        self.acts: list[tuple[float, int, int, int]] = []       # (due, seq, act, endpoint or group index)
        self.rearrivals: list[tuple[float, int, int]] = []      # (intended, seq, endpoint index)
        self._seq = 0
        self._rngs: dict[int, random.Random] = {}

    def start(self, start: float, duration: float) -> None:
        """Schedule the groups' avalanches of a run that starts at `start`."""
        for g, group in enumerate(self.plan.groups):
            for at in group.avalanche:
                if at < duration:
                    self.act(start + at, Act.AVALANCHE, g)

    def clear(self) -> None:
        """The run is stopping: no more behaviours, no more re-registrations."""
        self.acts.clear()
        self.rearrivals.clear()

    def act(self, when: float, act: Act, which: int) -> None:
        self._seq += 1
        heapq.heappush(self.acts, (when, self._seq, int(act), which))
        self._wake_at(when)

    def again(self, endpoint: Endpoint, intended: float) -> None:
        """Queue a fresh registration of the endpoint (it already has a new, idle Registration)."""
        self._seq += 1
        heapq.heappush(self.rearrivals, (intended, self._seq, endpoint.index))
        self._wake_at(intended)

    def _rng(self, index: int) -> random.Random:
        rng = self._rngs.get(index)
        if rng is None:  # per device, from the scenario's seed: the same draws whatever the sharding
            rng = self._rngs[index] = random.Random(f"{0 if self._seed is None else self._seed}:behaviour:{index}")
        return rng

    def arrived(self, endpoint: Endpoint, intended: float) -> None:
        """An endpoint made its first registration: schedule its behaviour."""
        role = self.plan.role[endpoint.index]
        group = self.plan.groups[endpoint.group]
        if role == Role.CHURN and group.churn is not None:
            self.act(intended + group.churn.every * self._rng(endpoint.index).uniform(0.5, 1.5),
                     Act.VANISH, endpoint.index)
        elif role == Role.FLAP and group.flap is not None:
            self.act(intended + group.flap.period, Act.FLAP_DOWN, endpoint.index)

    def due(self, now: float) -> None:
        """Run the behaviour events due by `now`."""
        acts = self.acts
        while acts and acts[0][0] <= now:
            _, _, act, which = heapq.heappop(acts)
            self._behave(Act(act), which, now)

    def _behave(self, act: Act, which: int, now: float) -> None:
        if act is Act.AVALANCHE:
            for endpoint in self._endpoints:
                if endpoint.group != which or endpoint.away or endpoint.reg.state is RegState.IDLE:
                    continue  # not arrived yet, or off the network
                endpoint.avalanches += 1
                self._renew(endpoint, False)
                self.again(endpoint, now)
            return
        endpoint = self._by_index[which]
        group = self.plan.groups[endpoint.group]
        if act is Act.VANISH and group.churn is not None:
            if endpoint.reg.state not in (RegState.IDLE, RegState.UNREGISTERED) and not endpoint.away:
                endpoint.vanished += 1
                endpoint.away = True
                if endpoint.trace is not None:
                    endpoint.trace.down(OFFLINE, now)
                self._renew(endpoint, True)
                self.act(now + group.churn.away, Act.RETURN, which)
            else:
                self.act(now + group.churn.every * self._rng(which).uniform(0.5, 1.5), Act.VANISH, which)
        elif act is Act.RETURN and group.churn is not None:
            endpoint.away = False
            endpoint.returned += 1
            self.again(endpoint, now)
            self.act(now + group.churn.every * self._rng(which).uniform(0.5, 1.5), Act.VANISH, which)
        elif act is Act.FLAP_DOWN and group.flap is not None:
            if endpoint.reg.state is RegState.REGISTERED:
                endpoint.flaps += 1
                endpoint.reg.stop(now)
                self._after_input(endpoint)
                self.act(now + group.flap.period / 2, Act.FLAP_UP, which)
            self.act(now + group.flap.period, Act.FLAP_DOWN, which)
        elif act is Act.FLAP_UP:
            if endpoint.reg.state is RegState.UNREGISTERED:  # the unregistration was answered
                self._renew(endpoint, False)
                self.again(endpoint, now)
