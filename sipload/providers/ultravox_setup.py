"""Give Ultravox something to check: one SIP registration per user, REGISTERing to `proxy`.

Ultravox is a SIP client, so a cross-check with it needs registrations made through its API first
(`sipload check --provider ultravox --create-registrations PROXY`). Passwords come from a template
(`pw-{user}`) and are only ever sent in the create request's body.
"""

from __future__ import annotations

from collections.abc import Sequence

from sipload.providers.sources import gather_bounded
from sipload.providers.status import ProviderError, ProviderState, RegistrationStatus
from sipload.providers.ultravox_client import UltravoxClient

USER = "{user}"


async def create_registrations(client: UltravoxClient, users: Sequence[str], password_template: str, proxy: str,
                               concurrency: int = 8) -> tuple[dict[str, str], dict[str, ProviderError]]:
    """-> (user -> registrationId, user -> the error that kept it from being created)."""
    if USER not in password_template:
        raise ProviderError("Ultravox: the password template must contain {user}")
    created: dict[str, str] = {}

    async def create(user: str) -> RegistrationStatus:
        reg = await client.create(username=user, password=password_template.replace(USER, user), proxy=proxy)
        created[user] = reg.registration_id
        return RegistrationStatus(user, ProviderState.UNKNOWN)

    answers = await gather_bounded(users, create, concurrency)
    return created, {u: a for u, a in answers.items() if isinstance(a, ProviderError)}


async def delete_registrations(client: UltravoxClient, ids: Sequence[str], concurrency: int = 8) -> int:
    """Delete them (the emulator unregisters each); -> how many could not be deleted."""
    async def delete(rid: str) -> RegistrationStatus:
        await client.delete(rid)
        return RegistrationStatus(rid, ProviderState.UNKNOWN)

    answers = await gather_bounded(ids, delete, concurrency)
    return sum(isinstance(a, ProviderError) for a in answers.values())
