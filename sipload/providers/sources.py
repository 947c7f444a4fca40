"""One interface over the four providers for the cross-check: `StatusSource.statuses(users)`.

Each source answers, for every user asked, a `RegistrationStatus` or the `ProviderError` that kept
it from knowing (one user's error never stops the others). `NotProvisioned` means the provider
has nothing for the user (no Telnyx connection, Audian device or Ultravox registration).

* Telnyx: the credential connections are listed once (user_name -> id; listed again when a user is
  not in it), then `check_registration_status` per connection.
* Audian: the bulk status (limit/offset pages) for many users; single-device calls when few users
  are asked (propagation polling). A user is the device whose `name` or `deviceId` is the user.
* Ultravox: the registrations listed (cursor pages); a user is the registration with that
  `username` (the successful one, else the newest).
* Kamailio: `ul.lookup` per user.

Per-user calls run on `concurrency` workers; the clients bound their own concurrency too. A listing
answered 404 (the base URL is not the provider's API, or the Audian account does not exist) is a
`ProviderConfigError` raised for the whole check, never a 404 per user; `probe()` asks the same with
one small page, for a run to refuse a wrong base URL before its load.
"""

from __future__ import annotations

import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

import anyio

from sipload.providers.audian_client import AudianClient, DeviceRegistration
from sipload.providers.errors import NotProvisioned, ProviderConfigError, ProviderNotFound, wrong_base_url
from sipload.providers.http_api import Sleep
from sipload.providers.kamailio import KamailioRpc
from sipload.providers.ratelimit import RetryPolicy
from sipload.providers.settings import CrossCheckConfig
from sipload.providers.status import ProviderError, RegistrationStatus

if TYPE_CHECKING:  # the Telnyx SDK takes ~1.5 s to import: only when a Telnyx check runs
    from sipload.providers.telnyx_client import TelnyxClient
from sipload.providers.ultravox_client import SipRegistration, UltravoxClient

Answer = RegistrationStatus | ProviderError
_EXPECTED = {
    "telnyx": "https://api.telnyx.com/v2, or http://HOST:PORT/v2 for `sipload registrar --api`",
    "audian": "https://api.audian.com:8443/v2 or .../v1, or http://HOST:PORT/v2 or /v1 for `sipload registrar "
              "--api`, with the account id",
    "ultravox": "https://api.ultravox.ai, or http://HOST:PORT for `sipload registrar --api`",
}


def _not_found(provider: str, base_url: str, exc: ProviderNotFound) -> ProviderError:
    return wrong_base_url(provider, base_url, exc, _EXPECTED[provider])
SINGLE_CALLS_UP_TO = 20


class StatusSource(Protocol):
    name: str

    async def statuses(self, users: Sequence[str]) -> dict[str, Answer]: ...

    async def probe(self) -> None:
        """One cheap request: ProviderConfigError when the base URL is not the provider's API."""

    async def aclose(self) -> None: ...


async def gather_bounded(users: Sequence[str], ask: Callable[[str], Awaitable[RegistrationStatus]],
                         concurrency: int) -> dict[str, Answer]:
    """ask(user) for every user on `concurrency` workers; a ProviderError is that user's answer."""
    out: dict[str, Answer] = {}
    todo = iter(users)

    async def worker() -> None:
        for user in todo:
            try:
                out[user] = await ask(user)
            except ProviderError as exc:
                out[user] = exc

    async with anyio.create_task_group() as tg:
        for _ in range(max(1, min(concurrency, len(users)))):
            tg.start_soon(worker)
    return out


class TelnyxSource:
    name = "telnyx"

    def __init__(self, client: TelnyxClient, concurrency: int) -> None:
        self.client = client
        self._concurrency = concurrency
        self._ids: dict[str, str] | None = None

    async def statuses(self, users: Sequence[str]) -> dict[str, Answer]:
        try:
            if self._ids is None or any(u not in self._ids for u in users):
                conns = await self.client.list_connections()
                self._ids = {c.user_name: c.id for c in conns if c.user_name}
        except ProviderNotFound as exc:
            raise _not_found(self.name, self.client.url, exc) from None
        except ProviderError as exc:
            return dict.fromkeys(users, exc)
        ids = self._ids

        async def ask(user: str) -> RegistrationStatus:
            conn_id = ids.get(user)
            if conn_id is None:
                raise NotProvisioned(f"Telnyx: no credential connection with user_name {user!r}")
            return (await self.client.check_registration_status(conn_id)).to_status(user)

        return await gather_bounded(users, ask, self._concurrency)

    async def probe(self) -> None:
        try:
            await self.client.first_connections()
        except ProviderNotFound as exc:
            raise _not_found(self.name, self.client.url, exc) from None

    async def aclose(self) -> None:
        await self.client.close()


class AudianSource:
    name = "audian"

    def __init__(self, client: AudianClient, concurrency: int) -> None:
        self.client = client
        self._concurrency = concurrency
        self._device_ids: dict[str, str] = {}

    async def statuses(self, users: Sequence[str]) -> dict[str, Answer]:
        if len(users) <= SINGLE_CALLS_UP_TO and all(u in self._device_ids for u in users):
            async def ask(user: str) -> RegistrationStatus:
                return (await self.client.device_registration(self._device_ids[user])).to_status(user)

            return await gather_bounded(users, ask, self._concurrency)
        try:
            devices = await self.client.all_devices()
        except ProviderNotFound as exc:
            raise _not_found(self.name, self.client.api.url, exc) from None
        except ProviderError as exc:
            return dict.fromkeys(users, exc)
        found: dict[str, DeviceRegistration] = {d.device_id: d for d in devices}
        found.update({d.name: d for d in devices if d.name})
        out: dict[str, Answer] = {}
        for user in users:
            device = found.get(user)
            if device is None:
                out[user] = NotProvisioned(f"Audian: no device named {user!r}")
                continue
            self._device_ids[user] = device.device_id
            out[user] = device.to_status(user)
        return out

    async def probe(self) -> None:
        try:
            await self.client.bulk_status(limit=1)
        except ProviderNotFound as exc:
            raise _not_found(self.name, self.client.api.url, exc) from None

    async def aclose(self) -> None:
        await self.client.close()


class UltravoxSource:
    name = "ultravox"

    def __init__(self, client: UltravoxClient) -> None:
        self.client = client

    async def statuses(self, users: Sequence[str]) -> dict[str, Answer]:
        try:
            registrations = await self.client.list_registrations()
        except ProviderNotFound as exc:
            raise _not_found(self.name, self.client.api.url, exc) from None
        except ProviderError as exc:
            return dict.fromkeys(users, exc)
        best: dict[str, SipRegistration] = {}
        for reg in reversed(registrations):  # oldest first: newer ones replace, successful ones win
            current = best.get(reg.username)
            if current is None or current.successful is not True or reg.successful is True:
                best[reg.username] = reg
        out: dict[str, Answer] = {}
        for user in users:
            chosen = best.get(user)
            out[user] = chosen.to_status() if chosen is not None else NotProvisioned(
                f"Ultravox: no SIP registration with username {user!r}")
        return out

    async def probe(self) -> None:
        try:
            await self.client.list_page(page_size=1)
        except ProviderNotFound as exc:
            raise _not_found(self.name, self.client.api.url, exc) from None

    async def aclose(self) -> None:
        await self.client.close()


class KamailioSource:
    name = "kamailio"

    def __init__(self, rpc: KamailioRpc, concurrency: int) -> None:
        self.rpc = rpc
        self._concurrency = concurrency

    async def statuses(self, users: Sequence[str]) -> dict[str, Answer]:
        return await gather_bounded(users, self.rpc.lookup, self._concurrency)

    async def probe(self) -> None:
        """Nothing to ask: a JSON-RPC endpoint has no collection to list."""

    async def aclose(self) -> None:
        await self.rpc.close()


async def refuse_wrong_base_url(source: StatusSource) -> None:
    """ProviderConfigError when the source's base URL is not its provider's API; any other trouble (a
    wrong key, no answer) is left to the cross-check, which reports it per user."""
    try:
        await source.probe()
    except ProviderConfigError:
        raise
    except ProviderError:
        return


def open_source(config: CrossCheckConfig, *, env: Mapping[str, str] | None = None, sleep: Sleep | None = None,
                clock: Callable[[], float] = time.time) -> StatusSource:
    """The source `config` names, its key read from the scenario or the environment.

    Raises ProviderError (naming the variable, never its value) when a needed key is missing."""
    environ = os.environ if env is None else env
    retry = RetryPolicy(max_retries=config.max_retries)
    if config.provider == "kamailio":
        return KamailioSource(KamailioRpc(config.url(), timeout=config.timeout), config.concurrency)
    key = config.key(environ)
    if config.provider == "telnyx":
        from sipload.providers.telnyx_client import TelnyxClient

        return TelnyxSource(TelnyxClient(key, config.url(), timeout=config.timeout, concurrency=config.concurrency,
                                         retry=retry, sleep=sleep, clock=clock), config.concurrency)
    if config.provider == "audian":
        assert config.account_id is not None  # checked by CrossCheckConfig
        return AudianSource(AudianClient(key, config.account_id, config.url(), timeout=config.timeout,
                                         concurrency=config.concurrency, retry=retry, sleep=sleep, clock=clock),
                            config.concurrency)
    return UltravoxSource(UltravoxClient(key, config.url(), timeout=config.timeout, concurrency=config.concurrency,
                                         retry=retry, sleep=sleep, clock=clock))
