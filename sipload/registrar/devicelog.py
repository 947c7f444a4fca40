"""The registrar's own record of each device, for troubleshooting (Audian's `.../devices/{id}/logs`).

Theory of operation
-------------------
`DeviceLog.add(user, now, kind, args)` appends one entry, `(now, kind, args)`, to the user's ring
(a deque of `per_device` entries: the oldest go first); at most `max_devices` users are kept (the
least recently written go first). Nothing is formatted when an entry is written: `lines()` turns
entries into text with `TEMPLATES`, so the registrar's per-request cost is one tuple and one append.

What the core writes (see `core.py`): every REGISTER seen (source, transport, CSeq), each challenge,
each rejection with its reason, the expiry granted by each 200 and the store's transitions
(registered, unregistered, offline). Nothing of an Authorization header is written: no digest
response, no password, ever.
"""

from __future__ import annotations

from collections import OrderedDict, deque
from dataclasses import dataclass

Entry = tuple[float, str, tuple[object, ...]]

TEMPLATES: dict[str, str] = {
    "request": "REGISTER from {0}:{1} over {2}, CSeq {3}",
    "challenge": "challenged (401, stale={0})",
    "rejected": "rejected: {0}",
    "ok": "200 OK: {0} binding(s), expires {1} s",
    "removed": "200 OK: bindings removed",
    "registered": "registered from {0}:{1}",
    "unregistered": "unregistered",
    "offline": "offline: the binding from {0}:{1} expired or its flow failed",
}


@dataclass(frozen=True, slots=True)
class LogLine:
    at: float          # the registrar's time (the store's clock)
    kind: str
    text: str


class DeviceLog:
    """Per-user bounded rings of entries (see the module docstring)."""

    def __init__(self, per_device: int = 50, max_devices: int = 100_000) -> None:
        if per_device < 1 or max_devices < 1:
            raise ValueError("per_device and max_devices: must be >= 1")
        self.per_device = per_device
        self.max_devices = max_devices
        self._rings: OrderedDict[str, deque[Entry]] = OrderedDict()

    def add(self, user: str, now: float, kind: str, args: tuple[object, ...] = ()) -> None:
        rings = self._rings
        ring = rings.get(user)
        if ring is None:
            ring = rings[user] = deque(maxlen=self.per_device)
            if len(rings) > self.max_devices:
                rings.popitem(last=False)
        else:
            rings.move_to_end(user)
        ring.append((now, kind, args))

    def lines(self, user: str, last: int | None = None) -> list[LogLine]:
        """The user's last `last` entries (all kept when None), oldest first, as text."""
        ring = self._rings.get(user)
        if ring is None:
            return []
        entries = list(ring)
        if last is not None:
            entries = entries[-last:] if last > 0 else []
        return [LogLine(at, kind, TEMPLATES.get(kind, kind).format(*args)) for at, kind, args in entries]

    def __len__(self) -> int:
        return len(self._rings)
