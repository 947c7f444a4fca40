"""The binding store of the embedded registrar: AoR -> contacts with expiry (RFC 3261 §10.3).

Theory of operation
-------------------
Time is the `now` parameter (seconds, any monotonic origin); no clock is read here and no task or
timer exists per binding. A binding is live while `now < expires_at`.

* `register(aor, user, changes, info, now)` applies the Contact values of one REGISTER (step 7):
  a contact is matched to a binding by its `+sip.instance` (with reg-id) when it has one, else by
  its URI (scheme, user, host, port, transport). An existing binding with the same Call-ID and a
  CSeq not lower than the request's aborts the whole request (OUT_OF_ORDER; RFC 3261 §10.3 says
  "the update MUST be aborted and the request fails": the core answers 500, the code the RFC
  gives for a failed binding update). Updates are atomic: checked first, then applied.
  Expires 0 removes a binding.
* `remove_all(aor, user, info, now)` is `Contact: *` with `Expires: 0` (step 6), same CSeq rule.
* Expiry is lazy: an AoR's expired bindings are dropped when it is touched, and `purge(now,
  limit)` pops a heap of (expires_at, aor, key) entries, at most `limit` per call. A refresh pushes
  a new heap entry and leaves the old one stale (skipped when popped); when stale entries
  outnumber the bindings the heap is rebuilt, so its size stays proportional to the live bindings.
* Per-user history (`user_state`) keeps, for the user part of the AoR, the last explicit change
  (registered, unregistered, rejected by auth), its time, and until when the user's bindings live.
  LIVE wins over a rejected attempt while a binding is live (the registrar still routes to it).
  History records are kept in change order and capped at `max_history`: the oldest non-live
  records are evicted first.
* `on_change` (None by default: nothing is called) is told of a user's transitions, with the
  binding concerned and the time: "registered" (nothing live -> a live binding), "unregistered"
  (an explicit removal left nothing live), "offline" (the last live binding expired, found by a
  purge or when the AoR is next touched, or its flow failed: `flow_failed`). Refreshes call
  nothing. The callback must be cheap and must not call back into the store (it enqueues).
"""

from __future__ import annotations

import enum
import heapq
import itertools
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from sipload.sip.errors import ParseError
from sipload.sip.headers import parse_uri

Address = tuple[str, int]
ChangeHook = Callable[[str, str, "Binding | None", float], None]   # (kind, user, binding, now)
REGISTERED, UNREGISTERED, OFFLINE = "registered", "unregistered", "offline"
_NEVER = float("-inf")
_EVICT_SCAN = 8


@dataclass(frozen=True, slots=True)
class Binding:
    contact: str                 # the Contact URI as registered
    expires_at: float
    call_id: str
    cseq: int
    source: Address
    transport: str               # "udp" | "tcp" | "tls"
    user_agent: str | None
    instance: str | None         # +sip.instance, quotes removed
    reg_id: str | None
    path: tuple[str, ...]
    registered_at: float         # first time this binding was created
    last_refresh: float          # last REGISTER that updated it

    def expires_in(self, now: float) -> int:
        """Whole seconds left, for the `;expires=` parameter (at least 1 while live, else 0)."""
        left = self.expires_at - now
        return max(1, round(left)) if left > 0 else 0


@dataclass(frozen=True, slots=True)
class ContactChange:
    """One Contact value of a REGISTER, its expiry already chosen by the registrar (0 removes)."""

    uri: str
    expires: int
    instance: str | None = None
    reg_id: str | None = None


@dataclass(frozen=True, slots=True)
class RequestInfo:
    """What a REGISTER tells about the binding beyond its contacts."""

    call_id: str
    cseq: int
    source: Address
    transport: str
    user_agent: str | None = None
    path: tuple[str, ...] = ()


class UpdateStatus(enum.Enum):
    OK = "ok"
    OUT_OF_ORDER = "out_of_order"    # same Call-ID, CSeq not higher: the request fails
    TOO_MANY = "too_many"            # more contacts than max_contacts


@dataclass(frozen=True, slots=True)
class UpdateResult:
    status: UpdateStatus
    bindings: tuple[Binding, ...]    # the AoR's live bindings after the update (before it if failed)


class UserState(enum.Enum):
    LIVE = "live"
    EXPIRED = "expired"
    UNREGISTERED = "unregistered"
    REJECTED = "rejected"            # the last attempt failed authentication and nothing is live
    NEVER_SEEN = "never_seen"


@dataclass(frozen=True, slots=True)
class UserStatus:
    state: UserState
    since: float | None              # time of the last change (None for NEVER_SEEN)


@dataclass(frozen=True, slots=True)
class StoreCount:
    bindings: int                    # live bindings
    aors: int                        # AoRs with at least one live binding


class _History:
    __slots__ = ("aors", "changed_at", "last", "live_since", "until")

    def __init__(self) -> None:
        self.last = UserState.NEVER_SEEN
        self.changed_at = _NEVER
        self.live_since = _NEVER
        self.until = _NEVER
        self.aors: tuple[str, ...] = ()  # usually one AoR: a tuple is 4x smaller than a set


def _refreshed(binding: Binding) -> float:
    return binding.last_refresh


def binding_key(uri: str, instance: str | None, reg_id: str | None) -> str:
    """The identity of a binding within its AoR (RFC 5626 instance/reg-id, else the URI)."""
    if instance is not None:
        return f"instance:{instance}|{reg_id or ''}"
    try:
        u = parse_uri(uri)
    except ParseError:
        return f"uri:{uri}"
    return f"uri:{u.scheme}:{u.user}@{u.host.lower()}:{u.port}|{u.transport or ''}"


class BindingStore:
    """AoR -> live bindings, plus per-user history; see the module docstring."""

    def __init__(self, *, max_contacts: int = 16, max_history: int = 1_000_000) -> None:
        self.max_contacts = max_contacts
        self.max_history = max_history
        self._aors: dict[str, dict[str, Binding]] = {}
        self._heap: list[tuple[float, str, str]] = []
        self._history: OrderedDict[str, _History] = OrderedDict()
        self._stored = 0             # bindings held (live or expired-not-yet-dropped)
        self.on_change: ChangeHook | None = None

    # --- updates ------------------------------------------------------------------------------
    def register(self, aor: str, user: str, changes: Sequence[ContactChange], info: RequestInfo,
                 now: float) -> UpdateResult:
        current = self._live(aor, now)
        keyed = {binding_key(c.uri, c.instance, c.reg_id): c for c in changes}
        for key in keyed:
            old = current.get(key)
            if old is not None and old.call_id == info.call_id and old.cseq >= info.cseq:
                return UpdateResult(UpdateStatus.OUT_OF_ORDER, tuple(current.values()))
        added = sum(1 for k, c in keyed.items() if c.expires > 0 and k not in current)
        removed = sum(1 for k, c in keyed.items() if c.expires == 0 and k in current)
        if len(current) + added - removed > self.max_contacts:
            return UpdateResult(UpdateStatus.TOO_MANY, tuple(current.values()))
        gone: Binding | None = None
        for key, change in keyed.items():
            old = current.get(key)
            if change.expires == 0:
                if old is not None:
                    del current[key]
                    self._stored -= 1
                    gone = old
                continue
            expires_at = now + change.expires
            current[key] = Binding(
                contact=change.uri, expires_at=expires_at, call_id=info.call_id, cseq=info.cseq,
                source=info.source, transport=info.transport, user_agent=info.user_agent,
                instance=change.instance, reg_id=change.reg_id, path=info.path,
                registered_at=old.registered_at if old is not None else now, last_refresh=now,
            )
            if old is None:
                self._stored += 1
            heapq.heappush(self._heap, (expires_at, aor, key))
        self._store_aor(aor, current)
        changed = self._record(user, aor, now, unregister=any(c.expires == 0 for c in keyed.values()))
        self._maybe_rebuild_heap()
        if changed is not None and self.on_change is not None:
            live = tuple(current.values())
            self.on_change(changed, user, live[-1] if changed == REGISTERED and live else gone, now)
            return UpdateResult(UpdateStatus.OK, live)
        return UpdateResult(UpdateStatus.OK, tuple(current.values()))

    def remove_all(self, aor: str, user: str, info: RequestInfo, now: float) -> UpdateResult:
        current = self._live(aor, now)
        for old in current.values():
            if old.call_id == info.call_id and old.cseq >= info.cseq:
                return UpdateResult(UpdateStatus.OUT_OF_ORDER, tuple(current.values()))
        last = max(current.values(), key=_refreshed, default=None)
        self._stored -= len(current)
        current.clear()
        self._store_aor(aor, current)
        changed = self._record(user, aor, now, unregister=True)
        if changed is not None and self.on_change is not None:
            self.on_change(changed, user, last, now)
        return UpdateResult(UpdateStatus.OK, ())

    def flow_failed(self, aor: str, user: str, source: Address, transport: str, now: float) -> int:
        """The connection `source` (over `transport`) that carried the AoR's outbound flows closed or
        went silent (RFC 5626 §5.2): drop the bindings with a reg-id that came over it. -> how many."""
        current = self._live(aor, now)
        failed = [k for k, b in current.items()
                  if b.reg_id is not None and b.source == source and b.transport == transport]
        if not failed:
            return 0
        last = current[failed[-1]]
        for key in failed:
            del current[key]
        self._stored -= len(failed)
        self._store_aor(aor, current)
        if self._record(user, aor, now, unregister=False) == OFFLINE:
            record = self._history[user]
            record.last, record.changed_at = UserState.EXPIRED, now
            self._went_offline(user, last, now)
        return len(failed)

    def mark_rejected(self, user: str, now: float) -> None:
        """The last attempt of `user` failed authentication."""
        record = self._history.get(user)
        if record is None:
            record = self._new_record(user, now)
        elif record.until > now:
            return  # a binding is live: the user stays LIVE
        record.last = UserState.REJECTED
        record.changed_at = now
        self._touch(user, record)

    # --- queries ------------------------------------------------------------------------------
    def bindings(self, aor: str, now: float) -> tuple[Binding, ...]:
        """The live bindings of an AoR (expired ones are dropped on the way)."""
        return tuple(self._live(aor, now).values())

    def user_state(self, user: str, now: float) -> UserStatus:
        record = self._history.get(user)
        if record is None:
            return UserStatus(UserState.NEVER_SEEN, None)
        if record.until > now:
            return UserStatus(UserState.LIVE, record.live_since)
        if record.last is UserState.LIVE:
            return UserStatus(UserState.EXPIRED, record.until)
        return UserStatus(record.last, record.changed_at)

    def users(self) -> Iterator[str]:
        """Every user with a history record, oldest change first."""
        return iter(list(self._history))

    def aors(self, now: float) -> Iterator[tuple[str, tuple[Binding, ...]]]:
        """(AoR, live bindings) for every AoR with at least one live binding."""
        for aor in list(self._aors):
            live = self.bindings(aor, now)
            if live:
                yield aor, live

    def count(self, now: float) -> StoreCount:
        """Live bindings and AoRs (drops everything expired first: amortized O(1) per binding)."""
        while self._heap and self._heap[0][0] <= now:  # each call pops at least one entry
            self.purge(now, 65_536)
        return StoreCount(self._stored, len(self._aors))

    def next_expiry(self) -> float | None:
        """The earliest expiry on the heap (perhaps of a binding refreshed since), None when empty."""
        return self._heap[0][0] if self._heap else None

    @property
    def stored(self) -> int:
        """Bindings held, including expired ones not yet dropped (no purge)."""
        return self._stored

    # --- expiry -------------------------------------------------------------------------------
    def purge(self, now: float, limit: int = 1024) -> int:
        """Drop up to `limit` expired bindings (earliest first); return how many were dropped."""
        heap = self._heap
        dropped = 0
        popped = 0
        while heap and heap[0][0] <= now and popped < 4 * limit and dropped < limit:
            _, aor, key = heapq.heappop(heap)
            popped += 1
            bindings = self._aors.get(aor)
            if bindings is None:
                continue
            binding = bindings.get(key)
            if binding is None or binding.expires_at > now:
                continue  # stale entry: removed or refreshed since
            del bindings[key]
            self._stored -= 1
            dropped += 1
            if not bindings:
                del self._aors[aor]
                self._expired(aor, binding, now)
        return dropped

    def _live(self, aor: str, now: float) -> dict[str, Binding]:
        """The AoR's bindings dict (a fresh one when absent), expired entries removed."""
        bindings = self._aors.get(aor)
        if bindings is None:
            return {}
        expired = [k for k, b in bindings.items() if b.expires_at <= now]
        if not expired:
            return bindings
        last = bindings[expired[-1]]
        for key in expired:
            del bindings[key]
        self._stored -= len(expired)
        if not bindings:
            del self._aors[aor]
            self._expired(aor, last, now)
        return bindings

    def _store_aor(self, aor: str, bindings: dict[str, Binding]) -> None:
        if bindings:
            self._aors[aor] = bindings
        else:
            self._aors.pop(aor, None)

    def _maybe_rebuild_heap(self) -> None:
        if len(self._heap) > 2 * self._stored + 1024:
            self._heap = [(b.expires_at, aor, key)
                          for aor, bindings in self._aors.items() for key, b in bindings.items()]
            heapq.heapify(self._heap)

    # --- history ------------------------------------------------------------------------------
    def _new_record(self, user: str, now: float) -> _History:
        record = _History()
        self._history[user] = record
        if len(self._history) > self.max_history:
            self._evict(now)
        return record

    def _touch(self, user: str, record: _History) -> None:
        """Move a changed record to the end (the history is kept in change order)."""
        self._history[user] = record
        self._history.move_to_end(user)

    def _record(self, user: str, aor: str, now: float, *, unregister: bool) -> str | None:
        """Update the user's history after a change of `aor`; the transition it made, if any
        (REGISTERED, UNREGISTERED, or OFFLINE when nothing is live any more without an unregister)."""
        record = self._history.get(user)
        if record is None:
            record = self._new_record(user, now)
        was_live = record.until > now
        if aor not in record.aors:
            record.aors = (*record.aors, aor)
        until = _NEVER
        kept: list[str] = []
        for key in record.aors:
            bindings = self._aors.get(key)
            if bindings:
                kept.append(key)
                until = max(until, max(b.expires_at for b in bindings.values()))
        record.aors = tuple(kept)
        record.until = until
        changed: str | None = None
        if until > now:
            if not was_live:
                record.live_since = now
                changed = REGISTERED
            record.last = UserState.LIVE
            record.changed_at = now
        elif unregister:
            record.last = UserState.UNREGISTERED
            record.changed_at = now
            changed = UNREGISTERED if was_live else None
        elif was_live:
            changed = OFFLINE
        self._touch(user, record)
        return changed

    def _expired(self, aor: str, binding: Binding, now: float) -> None:
        """The AoR's last binding expired (purge, or a touch after its expiry): OFFLINE once per user."""
        user = aor.partition(":")[2].partition("@")[0]
        record = self._history.get(user)
        if record is None or record.last is not UserState.LIVE or record.until > now:
            return
        record.last = UserState.EXPIRED   # what user_state() already reports: said once, from now on
        record.changed_at = record.until
        self._went_offline(user, binding, now)

    def _went_offline(self, user: str, binding: Binding | None, now: float) -> None:
        if self.on_change is not None:
            self.on_change(OFFLINE, user, binding, now)

    def _evict(self, now: float) -> None:
        """Drop the oldest non-live history records until within max_history (bounded scan)."""
        history = self._history
        for user in list(itertools.islice(history, _EVICT_SCAN)):
            if len(history) <= self.max_history:
                return
            record = history[user]
            if record.until > now:
                self._touch(user, record)  # live: keep, look further
            else:
                del history[user]
