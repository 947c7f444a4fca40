"""Watching a provider's registration events for the length of a run (Audian's webhooks).

`watch_events(config)` is an async context manager: it starts sipload's webhook receiver on
`config.events_listen`, subscribes it (`POST .../webhooks`, every event type) at `config.events_url`
or at `http://<the receiver's address>/sipload/events`, and yields an `EventWatch`. On the way out, also
when cancelled (Ctrl-C), it deletes the subscription (shielded, within `UNSUBSCRIBE_WITHIN` seconds) and
stops the receiver. A subscription that fails raises ProviderError before anything runs.

`EventWatch.finish(states, wait)` waits up to `wait` seconds for the events still missing (re-matching
as they come, in batches of `BATCH` seconds), then matches them (`events.match_events`). A device is the
run's user of that name, or the user the provider's device list names for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager

import trio

from sipload.hostport import parse_host_port
from sipload.providers.audian_client import AudianClient
from sipload.providers.events import EVENT_NAMES, EventsResult, match_events
from sipload.providers.settings import CrossCheckConfig
from sipload.providers.sources import open_audian
from sipload.providers.status import ProviderError
from sipload.providers.webhook_receiver import WebhookReceiver
from sipload.report.result import EndpointState

UNSUBSCRIBE_WITHIN = 5.0
BATCH = 0.05
PATH = "/sipload/events"


class EventWatch:
    def __init__(self, receiver: WebhookReceiver, client: AudianClient, url: str) -> None:
        self.receiver = receiver
        self.client = client
        self.url = url
        self.webhook_id: str | None = None
        self.unsubscribe_error: str | None = None

    async def _devices(self) -> dict[str, str]:
        """deviceId -> name, from the provider's device list ({} when it cannot be read)."""
        try:
            return {d.device_id: d.name for d in await self.client.all_devices() if d.name}
        except ProviderError:
            return {}

    async def finish(self, states: Sequence[EndpointState], wait: float) -> EventsResult:
        transitions = {s.username: s.transitions for s in states}
        names: dict[str, str] = {}

        def user_of(device_id: str) -> str | None:
            return device_id if device_id in transitions else names.get(device_id)

        started = trio.current_time()
        deadline = started + wait
        names = await self._devices()
        result = match_events(transitions, self.receiver.events, user_of)
        while result.pending and trio.current_time() < deadline:
            if await self.receiver.wait_change(deadline):
                await trio.sleep(BATCH)
                result = match_events(transitions, self.receiver.events, user_of)
        if result.unknown_device:   # devices created while the run went: read the list again
            names = await self._devices()
            result = match_events(transitions, self.receiver.events, user_of)
        result.waited_s = trio.current_time() - started
        result.rejected, result.overflow = self.receiver.rejected, self.receiver.overflow
        return result


@asynccontextmanager
async def watch_events(config: CrossCheckConfig, env: Mapping[str, str] | None = None) -> AsyncIterator[EventWatch]:
    host, port = parse_host_port(config.events_listen)
    receiver = WebhookReceiver()
    client = open_audian(config, env)
    try:
        bound = await receiver.bind(host, port)
        shown = f"[{host}]" if ":" in host else host
        watch = EventWatch(receiver, client, config.events_url or f"http://{shown}:{bound}{PATH}")
        watch.webhook_id = (await client.subscribe(watch.url, list(EVENT_NAMES))).webhook_id
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(receiver.serve)
                yield watch
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(UNSUBSCRIBE_WITHIN) as scope:
                try:
                    await client.unsubscribe(watch.webhook_id)
                except ProviderError as exc:
                    watch.unsubscribe_error = str(exc)
            if scope.cancelled_caught:
                watch.unsubscribe_error = f"no answer within {UNSUBSCRIBE_WITHIN:g} s"
    finally:
        with trio.CancelScope(shield=True):
            await receiver.aclose()
            await client.close()
