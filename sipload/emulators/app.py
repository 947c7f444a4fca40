"""The emulators' HTTP side: one Starlette app served by hypercorn's trio worker.

`serve_api(store, host, port, ...)` is started with `nursery.start()` and returns the bound port;
it serves Telnyx under `/v2`, Audian under `/v1` and `/v2` (`/accounts/{accountId}/...`) and
Ultravox under `/api/sip/registrations`, all backed by the registrar's binding store, until
cancelled. The Ultravox emulator's SIP agent (its own UDP socket) runs alongside.
"""

from __future__ import annotations

import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import cast

import trio
from hypercorn.app_wrappers import ASGIWrapper
from hypercorn.config import Config, Sockets
from hypercorn.trio.run import worker_serve
from hypercorn.typing import ASGIFramework
from starlette.applications import Starlette
from starlette.routing import BaseRoute

from sipload.emulators.audian_emulator import AudianEmulator, audian_error, read_token
from sipload.emulators.gate import Gate
from sipload.emulators.knobs import NO_FAULTS, ApiKeys, ApiKnobs
from sipload.emulators.telnyx_emulator import TelnyxEmulator, read_bearer, telnyx_gate_error
from sipload.emulators.ultravox_agent import SipAgent
from sipload.emulators.ultravox_emulator import UltravoxEmulator, read_api_key, ultravox_error
from sipload.emulators.views import StoreView
from sipload.registrar.bindings import BindingStore
from sipload.registrar.core import RegistrarCore
from sipload.registrar.settings import RegistrarSettings

log = logging.getLogger("sipload.emulators")


@dataclass
class Emulators:
    """The three emulators of one app (tests read their gates' counters and directories)."""

    view: StoreView
    telnyx: TelnyxEmulator
    audian: AudianEmulator
    ultravox: UltravoxEmulator

    def gates(self) -> dict[str, Gate]:
        return {"telnyx": self.telnyx.gate, "audian": self.audian.gate, "ultravox": self.ultravox.gate}


def build_emulators(store: BindingStore, agent: SipAgent, *, knobs: ApiKnobs, keys: ApiKeys,
                    clock: Callable[[], float] = trio.current_time, wall: Callable[[], float] = time.time,
                    registrar: RegistrarCore | None = None) -> Emulators:
    view = StoreView(store, knobs, clock=clock, wall=wall)
    return Emulators(
        view,
        TelnyxEmulator(view, Gate("telnyx", keys, knobs, read_bearer, telnyx_gate_error), wall),
        AudianEmulator(view, Gate("audian", keys, knobs, read_token, audian_error), knobs.audian_account, wall,
                       registrar=registrar),
        UltravoxEmulator(agent, Gate("ultravox", keys, knobs, read_api_key, ultravox_error), wall),
    )


def build_app(emulators: Emulators) -> Starlette:
    routes: list[BaseRoute] = []
    routes += emulators.audian.routes("/v1")
    routes += emulators.audian.routes("/v2")     # before Telnyx's /v2 catch-all
    routes += emulators.ultravox.routes()
    routes += emulators.telnyx.routes("/v2")
    return Starlette(routes=routes)


def hypercorn_config() -> Config:
    """No access log (nothing of a request is logged); hypercorn's own messages go to `sipload.emulators`."""
    config = Config()
    config.accesslog = None
    config.errorlog = log
    config.graceful_timeout = 1.0
    config.keep_alive_timeout = 30.0
    return config


async def serve_api(
    store: BindingStore,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    knobs: ApiKnobs = NO_FAULTS,
    keys: ApiKeys | None = None,
    registrar_settings: RegistrarSettings | None = None,
    on_ready: Callable[[Emulators], object] | None = None,
    registrar: RegistrarCore | None = None,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve the emulators until cancelled; `await nursery.start(serve_api, store, host, port)` -> port.

    `keys` None: from TELNYX_API_KEY / AUDIAN_AUTH_TOKEN / ULTRAVOX_API_KEY (unset: any key).
    `registrar_settings.users` (a users file) pre-provisions a Telnyx connection and an Audian
    device for each listed user, so never-seen users can be checked. `on_ready` receives the
    emulators (tests). Raises OSError when the address cannot be bound.

    `registrar` (the core that owns `store`) gives the Audian emulator its troubleshooting
    endpoints (its device log is turned on) and its webhooks the store's transitions; without
    it the webhooks hook the store directly.
    """
    agent = SipAgent(knobs.ultravox_sip_host, expires=knobs.ultravox_expires)
    emulators = build_emulators(store, agent, knobs=knobs, keys=keys if keys is not None else ApiKeys.from_env(),
                                registrar=registrar)
    hub = emulators.audian.hub
    if registrar_settings is not None and registrar_settings.users is not None:
        for user in registrar_settings.users:
            emulators.telnyx.directory.create(user, user, True, [])
            emulators.audian.provision(user)
    if on_ready is not None:
        on_ready(emulators)
    app = build_app(emulators)
    config = hypercorn_config()
    listener = listening_socket(host, port, config.backlog)  # OSError here, plainly, when the port is taken
    bound_port = int(listener.getsockname()[1])
    asgi = ASGIWrapper(cast(ASGIFramework, app))  # Starlette is ASGI 3; hypercorn's Protocol spells it otherwise
    if registrar is not None:
        registrar.enable_device_log()
        registrar.watch(hub.on_change)
    elif store.on_change is None:
        store.on_change = hub.on_change
    try:
        async with trio.open_nursery() as nursery:
            await nursery.start(hub.run)
            await nursery.start(agent.run)
            await nursery.start(partial(worker_serve, asgi, config, sockets=Sockets([], [listener], [])))
            log.info("provider emulators on http://%s:%d (Telnyx /v2, Audian /v1 /v2, Ultravox /api)",
                     host, bound_port)
            task_status.started(bound_port)
    finally:
        if registrar is not None:
            registrar.unwatch(hub.on_change)
        elif store.on_change == hub.on_change:
            store.on_change = None
        listener.close()


def listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A bound, listening TCP socket (what hypercorn would make), so that bind errors surface here."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
        sock.setblocking(False)
    except OSError:
        sock.close()
        raise
    return sock
