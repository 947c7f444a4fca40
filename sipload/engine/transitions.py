"""What a provider should announce about one endpoint: its transitions, as the endpoint saw them.

`Transitions` (only when a scenario watches provider events: `[crosscheck] events = true`) keeps, per
endpoint, `(kind, time)` for each change of whether the registrar holds it: "registered" at the 200 OK
that bound it (not at refreshes, nor at a registration again while bound), "unregistered" at the 200 of
its unregistration, "offline" at the moment it went away without unregistering (churn). Times are the
worker's clock; `unix()` gives them as Unix time for the report (`EndpointState.transitions`).
"""

from __future__ import annotations

REGISTERED, UNREGISTERED, OFFLINE = "registered", "unregistered", "offline"


class Transitions:
    __slots__ = ("events", "up")

    def __init__(self) -> None:
        self.events: list[tuple[str, float]] = []
        self.up = False

    def registered(self, now: float) -> None:
        if not self.up:
            self.up = True
            self.events.append((REGISTERED, now))

    def down(self, kind: str, now: float) -> None:
        if self.up:
            self.up = False
            self.events.append((kind, now))

    def unix(self, offset: float) -> tuple[tuple[str, float], ...]:
        return tuple((kind, at + offset) for kind, at in self.events)
