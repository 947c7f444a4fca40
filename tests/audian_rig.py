"""A test rig for the Audian emulator over real sockets on 127.0.0.1: the embedded registrar (UDP), its API
(`serve_api` with the registrar core), sipload's Audian client and webhook receiver, and SIP phones driven by
sipload's registration machine."""

from __future__ import annotations

import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from functools import partial

import trio

from sipload.emulators import ApiKeys, ApiKnobs, serve_api
from sipload.emulators.app import Emulators
from sipload.emulators.webhooks import WebhookHub
from sipload.providers.audian_client import AudianClient
from sipload.providers.webhook_receiver import Received, WebhookReceiver
from sipload.registrar.core import RegistrarCore
from sipload.registrar.listen import Listen
from sipload.registrar.server import serve_registrar
from sipload.registrar.settings import RegistrarSettings
from sipload.sip.digest import DigestClient
from sipload.sip.ids import IdSource
from sipload.sip.message import Response
from sipload.sip.parser import parse_message
from sipload.sip.registration import Profile, Registration, RegState

TOKEN = "audian-SECRET-token"
ACCOUNT = "acc_1234567890"
EVENTS = ["device.registered", "device.unregistered", "device.offline"]
_DONE = (RegState.REGISTERED, RegState.UNREGISTERED, RegState.FAILED)


@dataclass
class Rig:
    sip: tuple[str, int]
    client: AudianClient
    core: RegistrarCore
    receiver: WebhookReceiver
    hook_url: str
    emulators: list[Emulators] = field(default_factory=list)

    @property
    def hub(self) -> WebhookHub:
        return self.emulators[0].audian.hub

    async def events(self, count: int, limit: float = 5.0) -> list[Received]:
        """Wait (bounded) until the receiver holds `count` events."""
        with trio.fail_after(limit):
            while len(self.receiver.events) < count:
                await self.receiver.wait_change(trio.current_time() + limit)
        return list(self.receiver.events)


@asynccontextmanager
async def rig(knobs: ApiKnobs | None = None, *, receiver: WebhookReceiver | None = None,
              **settings: object) -> AsyncIterator[Rig]:
    registrar_settings = RegistrarSettings(realm="sipload.test", password_template="pw-{user}", min_expires=1,
                                           seed=3, **settings)  # type: ignore[arg-type]
    core = RegistrarCore(registrar_settings, now=trio.current_time())
    ready: list[Emulators] = []
    receiver = receiver or WebhookReceiver()
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(partial(serve_registrar, registrar_settings, [Listen("udp", "127.0.0.1", 0)],
                                            core=core, out=lambda _: None))
        api_port = await nursery.start(partial(
            serve_api, core.store, "127.0.0.1", 0, knobs=knobs or ApiKnobs(audian_account=ACCOUNT),
            keys=ApiKeys(audian=TOKEN), registrar=core, on_ready=ready.append))
        hook_port = await nursery.start(receiver.serve, "127.0.0.1", 0)
        async with AudianClient(TOKEN, ACCOUNT, f"http://127.0.0.1:{api_port}/v2") as client:
            yield Rig(("127.0.0.1", bound[0].port), client, core, receiver,
                      f"http://127.0.0.1:{hook_port}/webhooks/devices", ready)
        nursery.cancel_scope.cancel()


class Phone:
    """One SIP UA over its own UDP socket, driven by sipload's registration machine."""

    def __init__(self, user: str, sock: trio.socket.SocketType, server: tuple[str, int], *, expires: int = 60,
                 password: str | None = None, seed: int = 0) -> None:
        port = sock.getsockname()[1]
        ids = IdSource(random.Random(f"{user}-{seed}"))
        self.sock, self.server = sock, server
        self.reg = Registration(
            Profile(domain="sipload.test", registrar_uri="sip:sipload.test", expires=expires),
            user=user, contact=f"sip:{user}@127.0.0.1:{port}", sent_by=f"127.0.0.1:{port}",
            auth=DigestClient(user, password or f"pw-{user}", cnonce=ids.cnonce), ids=ids)

    async def _drive(self) -> RegState:
        reg = self.reg
        with trio.fail_after(5):
            while True:
                for data in reg.take_outgoing():
                    await self.sock.sendto(data, self.server)
                reg.take_events()
                if reg.state in _DONE:
                    return reg.state
                data, _ = await self.sock.recvfrom(65535)
                response = parse_message(data)
                assert isinstance(response, Response)
                reg.receive(response, trio.current_time())

    async def register(self) -> RegState:
        self.reg.start(trio.current_time())
        return await self._drive()

    async def unregister(self) -> RegState:
        self.reg.stop(trio.current_time())
        return await self._drive()


@asynccontextmanager
async def phone(r: Rig, user: str, **kwargs: object) -> AsyncIterator[Phone]:
    with trio.socket.socket(type=trio.socket.SOCK_DGRAM) as sock:
        await sock.bind(("127.0.0.1", 0))
        yield Phone(user, sock, r.sip, **kwargs)  # type: ignore[arg-type]
