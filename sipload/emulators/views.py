"""The emulators' read of the registrar's binding store, and the documented mapping to each enum.

Theory of operation
-------------------
Every emulator answers from the embedded registrar's real `BindingStore`, at the store's own time
(`trio.current_time()` unless a clock is injected). `StoreView.view(user)` gives a `UserView`: the
user's `UserState` as the emulator reports it and, while live, the most recently refreshed binding
(for addresses, transport, user agent, times). Times are turned into wall-clock ISO 8601 with one
offset taken when the view is made.

Mapping of the store's state to each provider's status enum (the same table the clients invert):

=====================  ================  ==============  ===============================
binding store          Telnyx            Audian          meaning
=====================  ================  ==============  ===============================
LIVE                   Registered        registered      a binding is live
EXPIRED                Expired           expired         the last live binding expired
UNREGISTERED           Unregistered      unregistered    removed by REGISTER Expires: 0
REJECTED               Failed            invalid         last attempt failed digest auth
NEVER_SEEN             Not Registered    unregistered    the registrar never saw the user
=====================  ================  ==============  ===============================

Ultravox is a SIP client, not a registrar: its `successful` comes from its own REGISTERs
(`ultravox_agent.py`), not from this table.

Stale answers (`ApiKnobs.stale_lag`): for a chosen share of users, a change younger than the lag
is not visible yet, and the state from before it is reported: a user LIVE for less than the lag
is reported NEVER_SEEN ("not registered yet"); a user EXPIRED or UNREGISTERED for less than the
lag is reported LIVE ("still registered"); REJECTED is reported NEVER_SEEN.

Finding a user's bindings: the store is keyed by AoR (`sip:user@host`). `UserIndex` caches user ->
AoRs and rescans the live AoRs only when a LIVE user has no cached live binding, so a lookup
costs O(1) amortized.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import trio

from sipload.emulators.knobs import ApiKnobs
from sipload.registrar.bindings import Binding, BindingStore, RequestInfo, UserState, UserStatus

TELNYX_STATUS: dict[UserState, str] = {
    UserState.LIVE: "Registered",
    UserState.EXPIRED: "Expired",
    UserState.UNREGISTERED: "Unregistered",
    UserState.REJECTED: "Failed",
    UserState.NEVER_SEEN: "Not Registered",
}
AUDIAN_STATUS: dict[UserState, str] = {
    UserState.LIVE: "registered",
    UserState.EXPIRED: "expired",
    UserState.UNREGISTERED: "unregistered",
    UserState.REJECTED: "invalid",
    UserState.NEVER_SEEN: "unregistered",
}
_BEFORE: dict[UserState, UserState] = {
    UserState.LIVE: UserState.NEVER_SEEN,
    UserState.EXPIRED: UserState.LIVE,
    UserState.UNREGISTERED: UserState.LIVE,
    UserState.REJECTED: UserState.NEVER_SEEN,
}


@dataclass(frozen=True, slots=True)
class UserView:
    user: str
    state: UserState                 # as reported (after the stale lag)
    since: float | None              # store time of the change behind the real state
    binding: Binding | None          # the most recently refreshed live binding (None unless really live)
    stale: bool = False              # the reported state is not the real one


def user_of_aor(aor: str) -> str:
    """`sip:alice@host:5060` -> `alice`."""
    rest = aor.partition(":")[2] or aor
    return rest.partition("@")[0]


def iso_z(unix: float, *, millis: bool = True) -> str:
    """2018-02-02T22:25:27.521Z (or without the milliseconds)."""
    moment = datetime.fromtimestamp(unix, UTC)
    text = moment.strftime("%Y-%m-%dT%H:%M:%S")
    return f"{text}.{moment.microsecond // 1000:03d}Z" if millis else f"{text}Z"


def share_of(user: str, salt: str = "stale") -> float:
    """A stable number in [0, 1) for a user name (selects the users a knob applies to)."""
    digest = hashlib.blake2b(f"{salt}:{user}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


class UserIndex:
    """user -> AoRs where the user was seen live (see the module docstring)."""

    def __init__(self, store: BindingStore) -> None:
        self._store = store
        self._aors: dict[str, set[str]] = {}

    def bindings(self, user: str, now: float, *, live: bool) -> tuple[Binding, ...]:
        found = self._cached(user, now)
        if found or not live:
            return found
        self.rescan(now)
        return self._cached(user, now)

    def aors(self, user: str) -> set[str]:
        return set(self._aors.get(user, ()))

    def rescan(self, now: float) -> None:
        for aor, _ in self._store.aors(now):
            self._aors.setdefault(user_of_aor(aor), set()).add(aor)

    def _cached(self, user: str, now: float) -> tuple[Binding, ...]:
        out: list[Binding] = []
        for aor in self._aors.get(user, ()):
            out.extend(self._store.bindings(aor, now))
        return tuple(out)


class StoreView:
    """What the emulators know of the registrar: its store, read at the store's time."""

    def __init__(self, store: BindingStore, knobs: ApiKnobs, *, clock: Callable[[], float] = trio.current_time,
                 wall: Callable[[], float] = time.time) -> None:
        self.store = store
        self.knobs = knobs
        self._clock = clock
        self._offset = wall() - clock()
        self.index = UserIndex(store)
        self._api_ops = 0

    def now(self) -> float:
        return self._clock()

    def unix(self, store_time: float) -> float:
        return store_time + self._offset

    def users(self) -> list[str]:
        """Every user the registrar has seen (a REGISTER, or a rejected attempt), oldest change first."""
        return list(self.store.users())

    def view(self, user: str, provider: str = "") -> UserView:
        now = self.now()
        status = self.store.user_state(user, now)
        reported, stale = self._reported(user, status, now, provider)
        binding: Binding | None = None
        if status.state is UserState.LIVE:
            live = self.index.bindings(user, now, live=True)
            if live:
                binding = max(live, key=lambda b: b.last_refresh)
        return UserView(user, reported, status.since, binding, stale)

    def unregister(self, user: str) -> bool:
        """Remove every binding of the user (as REGISTER with Contact: * and Expires: 0 would).

        True when something was live. The user's state becomes UNREGISTERED."""
        now = self.now()
        if not self.index.bindings(user, now, live=self.store.user_state(user, now).state is UserState.LIVE):
            return False
        for aor in self.index.aors(user):
            self._api_ops += 1
            info = RequestInfo(call_id=f"api-unregister-{self._api_ops}@sipload", cseq=1,
                               source=("127.0.0.1", 0), transport="api")
            self.store.remove_all(aor, user, info, now)
        return True

    def _reported(self, user: str, status: UserStatus, now: float, provider: str) -> tuple[UserState, bool]:
        knobs = self.knobs
        if knobs.stale_lag <= 0 or status.since is None or (provider and not knobs.applies_to(provider)):
            return status.state, False
        if now - status.since >= knobs.stale_lag or share_of(user) >= knobs.stale_share:
            return status.state, False
        before = _BEFORE.get(status.state)
        if before is None:
            return status.state, False
        return before, True
