"""The Audian emulator's webhooks and troubleshooting endpoints, end to end over real sockets on 127.0.0.1:
SIP REGISTERs over UDP to the embedded registrar, the API read through sipload's Audian client, events
delivered to sipload's webhook receiver. Real clock, every wait bounded (an expiry of 1 s at most).
"""

from __future__ import annotations

import itertools
import json

import pytest
import trio
import trio.testing
from audian_rig import ACCOUNT, EVENTS, TOKEN, Phone, phone, rig

from sipload.emulators import ApiKnobs
from sipload.emulators.views import StoreView
from sipload.emulators.webhooks import WebhookHub
from sipload.providers.audian_client import AudianClient
from sipload.providers.errors import ProviderHttpError, ProviderNotFound
from sipload.providers.webhook_receiver import WebhookReceiver
from sipload.registrar.bindings import BindingStore
from sipload.registrar.settings import parse_delay
from sipload.sip.registration import RegState


# --- subscriptions -----------------------------------------------------------------------------------
async def test_subscribe_list_get_and_delete() -> None:
    async with rig() as r:
        hook = await r.client.subscribe(r.hook_url, EVENTS)
        assert hook.url == r.hook_url and hook.events == tuple(EVENTS) and hook.webhook_id.startswith("wh_")
        assert [h.webhook_id for h in await r.client.webhooks()] == [hook.webhook_id]
        shown = await r.client.api.call("GET", f"/accounts/{ACCOUNT}/webhooks/{hook.webhook_id}")
        assert shown["status"] == "active" and shown["delivered"] == 0 and shown["pending"] == 0
        await r.client.unsubscribe(hook.webhook_id)
        assert await r.client.webhooks() == []
        with pytest.raises(ProviderNotFound, match="webhook wh_000001 not found"):
            await r.client.unsubscribe(hook.webhook_id)


@pytest.mark.parametrize(("body", "message"), [
    ({"url": "ftp://x/y", "events": EVENTS}, "url must be an absolute http"),
    ({"url": "http://127.0.0.1:9/h", "events": []}, "events must be a non-empty list"),
    ({"url": "http://127.0.0.1:9/h", "events": ["device.exploded"]}, "events must be a non-empty list"),
    ([1, 2], "the body must be a JSON object"),
])
async def test_bad_subscriptions_are_400_in_audians_envelope(body: object, message: str) -> None:
    async with rig() as r:
        with pytest.raises(ProviderHttpError, match=message) as caught:
            await r.client.api.call("POST", f"/accounts/{ACCOUNT}/webhooks", body=body)
        assert caught.value.status == 400
        other = AudianClient(TOKEN, "acc_other", r.client.api.url)
        with pytest.raises(ProviderNotFound, match="account not found"):
            await other.subscribe(r.hook_url, EVENTS)
        await other.close()


# --- deliveries --------------------------------------------------------------------------------------
async def test_register_unregister_delete_and_expiry_each_deliver_their_event() -> None:
    async with rig() as r:
        await r.client.subscribe(r.hook_url, EVENTS)
        async with phone(r, "alice") as alice, phone(r, "bob", expires=1) as bob:
            assert await alice.register() is RegState.REGISTERED
            (first,) = await r.events(1)
            assert (first.event, first.device_id, first.status) == ("device.registered", "dev_sip_alice",
                                                                   "registered")
            assert await alice.unregister() is RegState.UNREGISTERED
            assert [e.event for e in await r.events(2)][1] == "device.unregistered"
            alice.reg = Phone("alice", alice.sock, r.sip, seed=1).reg   # a new Call-ID
            assert await alice.register() is RegState.REGISTERED
            await r.events(3)
            await r.client.unregister("dev_sip_alice")           # DELETE .../registration
            assert [e.event for e in await r.events(4)][3] == "device.unregistered"
            assert await bob.register() is RegState.REGISTERED  # 1 s, never refreshed: offline
            events = await r.events(6, limit=4.0)
        assert [(e.event, e.device_id) for e in events[4:]] == [("device.registered", "dev_sip_bob"),
                                                                ("device.offline", "dev_sip_bob")]
        assert 0.9 < events[5].at - events[4].at < 2.0   # found by the sweeper, not a second later
        (hook,) = await r.client.webhooks()
        shown = await r.client.api.call("GET", f"/accounts/{ACCOUNT}/webhooks/{hook.webhook_id}")
        assert shown["delivered"] == 6 and shown["failed"] == 0


async def test_event_body_is_exactly_the_documented_shape() -> None:
    bodies: list[bytes] = []

    async def post(url: str, body: bytes) -> int:
        bodies.append(body)
        return 200

    async with rig() as r:
        r.hub._post = post
        await r.client.subscribe(r.hook_url, ["device.registered"])
        async with phone(r, "carol") as carol:
            await carol.register()
            with trio.fail_after(5):
                while not bodies:
                    await trio.sleep(0.01)
            sock_port = carol.sock.getsockname()[1]
    event = json.loads(bodies[0])
    assert set(event) == {"event", "timestamp", "data"} and event["event"] == "device.registered"
    assert event["data"]["deviceId"] == "dev_sip_carol" and event["data"]["status"] == "registered"
    assert event["data"]["ipAddress"] == "127.0.0.1" and event["data"]["port"] == sock_port
    assert set(event["data"]) == {"deviceId", "status", "ipAddress", "port", "registeredAt"}
    assert event["timestamp"].endswith("Z") and event["data"]["registeredAt"].endswith("Z")


async def test_a_failing_receiver_is_retried_with_backoff_until_it_answers() -> None:
    refusals = iter([503, 500])
    receiver = WebhookReceiver(answer=lambda _: next(refusals, 200))
    async with rig(receiver=receiver) as r:
        r.hub.backoff = 0.05
        hook = await r.client.subscribe(r.hook_url, EVENTS)
        async with phone(r, "dave") as dave:
            await dave.register()
            (event,) = await r.events(1)
        shown = await r.client.api.call("GET", f"/accounts/{ACCOUNT}/webhooks/{hook.webhook_id}")
    assert receiver.refused == 2 and event.device_id == "dev_sip_dave"
    assert shown["retries"] == 2 and shown["delivered"] == 1


async def test_lost_and_delayed_events_injected_by_the_knobs() -> None:
    async with rig(ApiKnobs(audian_account=ACCOUNT, webhook_loss=1.0)) as r:
        hook = await r.client.subscribe(r.hook_url, EVENTS)
        async with phone(r, "erin") as erin:
            await erin.register()
        with trio.fail_after(5):
            while r.hub.subscriptions[hook.webhook_id].lost < 1:
                await trio.sleep(0.01)
        assert r.receiver.events == []
    async with rig(ApiKnobs(audian_account=ACCOUNT, webhook_delay=parse_delay("300ms"))) as r:
        await r.client.subscribe(r.hook_url, EVENTS)
        async with phone(r, "frank") as frank:
            await frank.register()
            sent = trio.current_time()
            await r.events(1)
            assert trio.current_time() - sent >= 0.3


async def test_registrations_are_answered_while_the_receiver_hangs() -> None:
    """A receiver that never answers holds up only its own bounded queue, never the SIP path."""
    hang = trio.Event()

    async def post(url: str, body: bytes) -> int:
        await hang.wait()
        return 200

    async with rig(ApiKnobs(audian_account=ACCOUNT, webhook_queue=3)) as r:
        r.hub._post = post
        r.hub.timeout = 30.0
        hook = await r.client.subscribe(r.hook_url, EVENTS)
        sub = r.hub.subscriptions[hook.webhook_id]
        for n in range(8):
            async with phone(r, f"user{n}") as p:
                with trio.fail_after(2):
                    assert await p.register() is RegState.REGISTERED
        assert len(sub.queue) == 3 and sub.dropped == 4    # one in delivery, 3 queued, the oldest 4 dropped
        hang.set()


async def test_backoff_doubles_to_its_cap_then_gives_up_on_a_virtual_clock(
        autojump_clock: trio.testing.MockClock) -> None:
    attempts: list[float] = []

    async def post(url: str, body: bytes) -> int:
        attempts.append(trio.current_time())
        return 500

    knobs = ApiKnobs()
    hub = WebhookHub(StoreView(BindingStore(), knobs), knobs, device_id=lambda user: f"dev_sip_{user}",
                     wall=lambda: 1_700_000_000.0, post=post, max_attempts=5, backoff=0.5, backoff_max=2.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(hub.run)
        sub = hub.subscribe(ACCOUNT, "http://127.0.0.1:9/h", ("device.registered",))
        hub.on_change("registered", "u1", None, trio.current_time())
        hub.on_change("unregistered", "u1", None, trio.current_time())   # not subscribed: not queued
        await trio.sleep(60)
        nursery.cancel_scope.cancel()
    gaps = [round(b - a, 6) for a, b in itertools.pairwise(attempts)]
    assert gaps == [0.5, 1.0, 2.0, 2.0]
    assert (sub.failed, sub.retries, sub.delivered, len(sub.queue)) == (1, 4, 0, 0)
