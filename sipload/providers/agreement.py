"""When does a provider's answer agree with what a sipload endpoint knows?

sipload's state for an endpoint is the registration machine's (`registered`, `refreshing`,
`unregistered`, `idle`, `registering`, `backoff`, `unregistering`) or `failed:<reason>`; `expired`
is accepted too. Providers differ in how finely they report a registration that is gone (Kamailio
cannot tell "unregistered" from "never registered"; Telnyx says "Failed" after rejected credentials,
Kamailio just has no contact), so agreement is a set of provider states per sipload state:

=============================  ====================================================
sipload state                  provider states that agree
=============================  ====================================================
registered, refreshing         registered
unregistered                   unregistered, not_registered
expired, idle, failed:<any>    not_registered, unregistered, expired, failed
registering, backoff,          any answer (the endpoint is between two states), but
unregistering, other           not "missing" or "error"
=============================  ====================================================

Two columns exist besides the ProviderState values: `missing` (the provider has no connection,
device or registration for the user) and `error` (the provider could not be asked); neither ever
agrees.
"""

from __future__ import annotations

from sipload.providers.status import ProviderState

MISSING = "missing"
ERROR = "error"
COLUMNS: tuple[str, ...] = (*(s.value for s in ProviderState), MISSING, ERROR)

BOUND = frozenset({"registered", "refreshing"})
_GONE = frozenset({ProviderState.NOT_REGISTERED.value, ProviderState.UNREGISTERED.value,
                   ProviderState.EXPIRED.value, ProviderState.FAILED.value})
_EXPECTED: dict[str, frozenset[str]] = {
    "registered": frozenset({ProviderState.REGISTERED.value}),
    "refreshing": frozenset({ProviderState.REGISTERED.value}),
    "unregistered": frozenset({ProviderState.UNREGISTERED.value, ProviderState.NOT_REGISTERED.value}),
    "expired": _GONE,
    "idle": _GONE,
}
_ANY = frozenset(s.value for s in ProviderState)


def expected(ours: str) -> frozenset[str]:
    """The provider states (column names) that agree with sipload's state `ours`."""
    if ours in _EXPECTED:
        return _EXPECTED[ours]
    if ours.startswith("failed"):
        return _GONE
    return _ANY


def agrees(ours: str, theirs: str) -> bool:
    return theirs in expected(ours)


def expects_registered(ours: str) -> bool:
    return ours in BOUND
