"""What the 200 of a REGISTER says about our binding, sans-IO: the granted expiry, and with RFC 5626
outbound / RFC 5627 GRUU our flow's GRUUs and whether the registrar applied outbound.

The registration machine (`sipload.sip.registration`) calls `granted_expiry` for a plain endpoint
(a shortcut reads the usual `Contact: <ours>;expires=N` without parsing addresses; the general path
gives the same answer for every input, tests/test_fast_paths.py) and `read_flow` for an endpoint
with a `Flow`. Our binding is the Contact with our URI (user, host, port: `contact_key`); with a
flow, the one with our +sip.instance (and reg-id with outbound), else one with our URI. Its expires
parameter wins, then the Expires header, then what we asked for. Every delta-seconds read here goes
through `delta_param`: digits only, clamped at 2**32-1 (RFC 3261 §20.19).
"""

from __future__ import annotations

from sipload.sip.errors import ParseError
from sipload.sip.headers import parse_uri, quote, unquote
from sipload.sip.message import Response

MAX_DELTA = 2**32 - 1       # the largest delta-seconds (RFC 3261 §20.19)


def delta_param(value: str | None) -> int | None:
    """An expires parameter as delta-seconds, clamped at MAX_DELTA; None unless it is plain ASCII digits."""
    if value is None or not value.isascii() or not value.isdigit():
        return None
    return min(int(value), MAX_DELTA) if len(value) <= 10 else MAX_DELTA  # bounded, no overflow


def granted_expiry(response: Response, mine: str, requested: int) -> int:
    """The expiry a 200 granted our Contact `mine`: its expires param, else the Expires header, else `requested`."""
    lines = response.headers.get_all("contact")
    if len(lines) == 1:  # the usual answer, "<our contact>;expires=N", read without parsing addresses
        line = lines[0]
        end = len(mine) + 11
        if (line[end - 10 : end] == ">;expires=" and line[1 : end - 10] == mine and line[:1] == "<"
                and "," not in line and "<" not in mine and ">" not in mine and mine.strip() == mine):
            seconds = delta_param(line[end:])  # what the general path below returns for it
            if seconds is not None:
                return seconds
    try:
        contacts = response.contacts() or []
        ours: tuple[str | None, str, int | None] | None = None
        for addr in contacts:
            if addr.uri != mine:  # the same text is the same key: parse URIs only when it differs
                if ours is None:
                    ours = contact_key(mine)
                if contact_key(addr.uri) != ours:
                    continue
            seconds = delta_param(addr.params.get("expires"))
            if seconds is not None:
                return seconds
            break
        header = response.expires()
    except ParseError:
        header = None
    return header if header is not None else requested


def read_flow(flow: Flow, response: Response, mine: str, requested: int) -> int:
    """The 200 of an outbound / GRUU registration: our binding's expiry (returned), GRUUs and Require (into `flow`).

    Our binding is the Contact with our instance (and reg-id, with outbound), else one with our URI.
    """
    flow.outbound_required = any(t.lower() == "outbound" for t in response.headers.get_list("require"))
    flow.pub_gruu = flow.temp_gruu = None
    try:
        contacts = response.contacts() or []
    except ParseError:
        contacts = []
    ours = None
    key = contact_key(mine)
    for addr in contacts:
        params = addr.params
        raw = params.get("+sip.instance")
        try:
            instance = unquote(raw) if raw is not None and raw.startswith('"') else raw
        except ParseError:
            instance = None
        if instance is not None:
            if instance.strip("<>") != flow.instance:
                continue
            if flow.reg_id is not None and params.get("reg-id") not in (None, str(flow.reg_id)):
                continue
            ours = addr
            break
        if ours is None and (addr.uri == mine or contact_key(addr.uri) == key):
            ours = addr
    if ours is not None:
        flow.pub_gruu = gruu_param(ours.params.get("pub-gruu"))
        flow.temp_gruu = gruu_param(ours.params.get("temp-gruu"))
        seconds = delta_param(ours.params.get("expires"))
        if seconds is not None:
            return seconds
    try:
        header = response.expires()
    except ParseError:
        header = None
    return header if header is not None else requested


class Flow:
    """What outbound / GRUU add to one registration: its identity on the wire, what the 200 said."""

    __slots__ = ("contact_params", "instance", "outbound_required", "pub_gruu", "reg_id", "supported", "temp_gruu")

    def __init__(self, outbound: bool, gruu: bool, instance: str, reg_id: int) -> None:
        if not instance.startswith("urn:") or any(ch in instance for ch in '<>" \t\r\n'):
            raise ValueError(f"instance: expected a URN such as urn:uuid:..., got {instance!r}")
        if reg_id < 1:
            raise ValueError(f"reg_id: must be >= 1, got {reg_id}")
        self.instance = instance
        self.reg_id: int | None = reg_id if outbound else None
        params = f";+sip.instance={quote(f'<{instance}>')}"
        if self.reg_id is not None:
            params += f";reg-id={reg_id}"
        self.contact_params = params
        tags = (["path", "outbound"] if outbound else []) + (["gruu"] if gruu else [])
        self.supported = f"Supported: {', '.join(tags)}\r\n"
        self.pub_gruu: str | None = None
        self.temp_gruu: str | None = None
        self.outbound_required = False


def gruu_param(value: str | None) -> str | None:
    """A pub-gruu / temp-gruu parameter value (a quoted URI), unquoted; None when absent or malformed."""
    if value is None:
        return None
    try:
        text = unquote(value) if value.startswith('"') else value
    except ParseError:
        return None
    return text or None


def contact_key(uri: str) -> tuple[str | None, str, int | None]:
    """What makes two Contact URIs the same binding here: user, host (any case), port."""
    try:
        parsed = parse_uri(uri)
    except ParseError:
        return (uri, "", None)
    return (parsed.user, parsed.host.lower(), parsed.port)
