"""Audian's registration webhooks: subscriptions and the asynchronous delivery of events.

Theory of operation
-------------------
The registrar's binding store tells the hub of each transition (`BindingStore.on_change`, through
`RegistrarCore.watch`): registered, unregistered, offline. On that SIP path the hub only appends
`(kind, user, binding, now)` to the queue of every subscription that wants the event: a
`collections.deque` bounded at `queue_size` (a full queue drops its oldest entry, counted in
`dropped`), and wakes the subscription's delivery task if it sleeps. Nothing is formatted or sent
there.

One trio task per subscription delivers its queue in order: it builds the body
`{"event", "timestamp", "data": {"deviceId", "status", "ipAddress", "port", "registeredAt"}}`
(`timestamp`: when the change happened, wall clock) and POSTs it as JSON. An answer 2xx is a
delivery; anything else (another status, a connection error, no answer within `timeout`) is
retried after `backoff`, doubled each time up to `backoff_max`, `max_attempts` attempts in all,
then counted `failed` and the next event goes. A slow or dead receiver therefore holds up only its
own queue, whose memory stays bounded.

Fault knobs (`ApiKnobs`): `webhook_loss` (that share of events is never sent, counted `lost`),
`webhook_delay` (each event's first attempt that long after its change at the earliest),
`webhook_queue` (the queue bound).

Offline events need expiries found promptly: while anyone subscribes, the hub's sweeper purges the
store at its nearest expiry (at least once a second), so a binding that expired is announced within
milliseconds rather than at the registrar's next one-second tick. With no subscription no timer runs.
"""

from __future__ import annotations

import itertools
import json
import random
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx
import trio

from sipload.emulators.knobs import ApiKnobs
from sipload.emulators.views import StoreView, iso_z
from sipload.registrar.bindings import Binding

EVENTS = ("device.registered", "device.unregistered", "device.offline")
EVENT_OF = {"registered": "device.registered", "unregistered": "device.unregistered", "offline": "device.offline"}
MAX_SUBSCRIPTIONS = 20          # per account
_SWEEP = 1.0                    # seconds between purges at the latest
_SWEEP_FLOOR = 0.001            # and at the soonest (a heap top already due never spins)

Poster = Callable[[str, bytes], Awaitable[int]]   # (url, JSON body) -> HTTP status; raises when nothing came back
Queued = tuple[str, str, Binding | None, float]    # (kind, user, binding, store time)


@dataclass
class Subscription:
    webhook_id: str
    account: str
    url: str
    events: tuple[str, ...]
    created_at: float                       # wall clock
    queue: deque[Queued] = field(repr=False, default_factory=deque)
    delivered: int = 0
    failed: int = 0                         # given up after max_attempts
    retries: int = 0
    dropped: int = 0                        # oldest entries dropped from a full queue
    lost: int = 0                           # never sent (webhook_loss)
    waiting: bool = field(default=False, repr=False)
    wake: trio.Event = field(default_factory=trio.Event, repr=False)
    scope: trio.CancelScope = field(default_factory=trio.CancelScope, repr=False)

    def shape(self) -> dict[str, object]:
        """The subscription as the API shows it (flat camelCase)."""
        return {"webhookId": self.webhook_id, "url": self.url, "events": list(self.events),
                "createdAt": iso_z(self.created_at, millis=False), "status": "active",
                "delivered": self.delivered, "failed": self.failed, "retries": self.retries,
                "dropped": self.dropped, "pending": len(self.queue)}


class WebhookHub:
    """Subscriptions and their delivery tasks (see the module docstring); `run` hosts the tasks."""

    def __init__(self, view: StoreView, knobs: ApiKnobs, *, device_id: Callable[[str], str],
                 wall: Callable[[], float], post: Poster | None = None, timeout: float = 5.0,
                 max_attempts: int = 6, backoff: float = 0.5, backoff_max: float = 10.0) -> None:
        self.view = view
        self.knobs = knobs
        self.queue_size = knobs.webhook_queue
        self._device_id = device_id
        self._wall = wall
        self._post = post
        self.timeout = timeout
        self.max_attempts = max_attempts
        self.backoff = backoff
        self.backoff_max = backoff_max
        self.subscriptions: dict[str, Subscription] = {}
        self._wanted: dict[str, list[Subscription]] = {event: [] for event in EVENTS}
        self._ids = itertools.count(1)
        self._rng = random.Random(knobs.seed)
        self._nursery: trio.Nursery | None = None
        self._client: httpx.AsyncClient | None = None
        self._sweeping = False

    # --- the SIP path: enqueue only --------------------------------------------------------------
    def on_change(self, kind: str, user: str, binding: Binding | None, now: float) -> None:
        subscribers = self._wanted.get(EVENT_OF.get(kind, ""))
        if not subscribers:
            return
        item = (kind, user, binding, now)
        for sub in subscribers:
            queue = sub.queue
            if len(queue) >= self.queue_size:
                queue.popleft()
                sub.dropped += 1
            queue.append(item)
            if sub.waiting:
                sub.waiting = False
                sub.wake.set()

    # --- subscriptions ---------------------------------------------------------------------------
    def subscribe(self, account: str, url: str, events: tuple[str, ...]) -> Subscription:
        """A new subscription, delivering from now on. RuntimeError when the hub is not running."""
        if self._nursery is None:
            raise RuntimeError("the webhook hub is not running")
        sub = Subscription(f"wh_{next(self._ids):06d}", account, url, events, self._wall())
        self.subscriptions[sub.webhook_id] = sub
        for event in events:
            self._wanted[event].append(sub)
        self._nursery.start_soon(self._deliver_all, sub)
        if not self._sweeping:
            self._sweeping = True
            self._nursery.start_soon(self._sweep)
        return sub

    def unsubscribe(self, webhook_id: str) -> bool:
        sub = self.subscriptions.pop(webhook_id, None)
        if sub is None:
            return False
        for event in sub.events:
            self._wanted[event].remove(sub)
        sub.scope.cancel()
        return True

    def of_account(self, account: str) -> list[Subscription]:
        return [s for s in self.subscriptions.values() if s.account == account]

    # --- the tasks -------------------------------------------------------------------------------
    async def run(self, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Host the delivery tasks and the expiry sweeper until cancelled."""
        async with httpx.AsyncClient() as client:
            self._client = client
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    task_status.started()
                    await trio.sleep_forever()
            finally:
                self._nursery = None
                self._client = None

    async def _sweep(self) -> None:
        """Purge expired bindings at the store's nearest expiry while anyone subscribes (then it ends:
        no timer runs for an emulator nobody watches)."""
        store = self.view.store
        while self.subscriptions:
            now = self.view.now()
            due = store.next_expiry()
            await trio.sleep(_SWEEP if due is None else min(max(due - now, _SWEEP_FLOOR), _SWEEP))
            store.purge(self.view.now(), 4096)
        self._sweeping = False

    async def _deliver_all(self, sub: Subscription) -> None:
        with sub.scope:
            while True:
                if not sub.queue:
                    sub.waiting = True
                    await sub.wake.wait()
                    sub.wake = trio.Event()
                    continue
                item = sub.queue.popleft()
                loss = self.knobs.webhook_loss
                if loss and self._rng.random() < loss:
                    sub.lost += 1
                    continue
                delay = self.knobs.webhook_delay.sample(self._rng)
                if delay > 0:   # from the change: a delay of propagation, not of each delivery after another
                    await trio.sleep(max(0.0, item[3] + delay - self.view.now()))
                await self._deliver(sub, self.body(item))

    async def _deliver(self, sub: Subscription, body: bytes) -> None:
        wait = self.backoff
        for attempt in range(1, self.max_attempts + 1):
            if await self._attempt(sub.url, body):
                sub.delivered += 1
                return
            if attempt == self.max_attempts:
                break
            sub.retries += 1
            await trio.sleep(wait)
            wait = min(wait * 2, self.backoff_max)
        sub.failed += 1

    async def _attempt(self, url: str, body: bytes) -> bool:
        try:
            with trio.fail_after(self.timeout):
                status = await (self._post or self._http_post)(url, body)
        except (trio.TooSlowError, OSError, httpx.HTTPError):
            return False
        return 200 <= status < 300

    async def _http_post(self, url: str, body: bytes) -> int:
        assert self._client is not None
        response = await self._client.post(url, content=body, headers={"Content-Type": "application/json"},
                                           timeout=self.timeout)
        return response.status_code

    def body(self, item: Queued) -> bytes:
        kind, user, binding, now = item
        unix = self.view.unix
        data: dict[str, object] = {
            "deviceId": self._device_id(user),
            "status": kind,
            "ipAddress": binding.source[0] if binding is not None else None,
            "port": binding.source[1] if binding is not None else None,
            "registeredAt": iso_z(unix(binding.registered_at), millis=False) if binding is not None else None,
        }
        return json.dumps({"event": EVENT_OF[kind], "timestamp": iso_z(unix(now)), "data": data}).encode()
