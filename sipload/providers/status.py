"""sipload's provider-neutral registration status model.

Every provider client (Kamailio JSON-RPC, Telnyx, Audian, Ultravox, ...) maps its own answer
into these types, so that `sipload check` compares what the endpoints know with one shape.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ProviderState(enum.StrEnum):
    """What a provider says about one user's registration."""

    REGISTERED = "registered"  # at least one active (unexpired or permanent) contact
    NOT_REGISTERED = "not_registered"  # the provider knows no registration for the user
    EXPIRED = "expired"  # the provider still holds the registration, but it has expired
    UNREGISTERED = "unregistered"  # the registration was removed (REGISTER with Expires: 0)
    FAILED = "failed"  # the provider reports a failed registration
    UNKNOWN = "unknown"  # the provider's answer does not say


@dataclass(frozen=True, slots=True)
class ContactInfo:
    """One contact (binding) of a user as the provider reports it."""

    address: str
    expires_in: int | None  # seconds left; 0 once expired; None when permanent or unknown
    call_id: str | None
    cseq: int | None
    user_agent: str | None
    received: str | None
    instance: str | None
    reg_id: int | None
    raw_expires: str  # the expiry exactly as the provider sent it (e.g. "3599", "permanent")


@dataclass(frozen=True, slots=True)
class RegistrationStatus:
    """A provider's view of one user's registration."""

    user: str
    state: ProviderState
    contacts: tuple[ContactInfo, ...] = ()
    detail: str | None = None  # the provider's message (fault text etc.), when there is one


class ProviderError(Exception):
    """A provider could not be asked or gave an answer sipload cannot use.

    The message names the endpoint and what happened; it never contains credentials.
    """
