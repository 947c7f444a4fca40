"""SIP messages: requests and responses, their headers, and their wire form.

A message keeps its headers as an ordered list of (lower-case full name, value) pairs, one pair per
header line (a comma-joined line stays one pair). Lookups are by lower-case full name; callers
may pass any spelling or compact form. Derived fields that the registration hot path needs
(Call-ID, CSeq, the top Via branch) are parsed on first use and cached.
"""

from __future__ import annotations

from collections.abc import Iterable

from sipload.sip.errors import ParseError
from sipload.sip.headers import (
    KNOWN_KEYS,
    LIST_HEADERS,
    NameAddr,
    Via,
    canonical_name,
    normalize_name,
    parse_cseq,
    parse_delta,
    parse_name_addr,
    parse_via,
    split_list,
    via_branch,
)

REASON_PHRASES: dict[int, str] = {
    100: "Trying",
    180: "Ringing",
    200: "OK",
    202: "Accepted",
    400: "Bad Request",
    401: "Unauthorized",
    403: "Forbidden",
    404: "Not Found",
    405: "Method Not Allowed",
    407: "Proxy Authentication Required",
    408: "Request Timeout",
    420: "Bad Extension",
    423: "Interval Too Brief",
    480: "Temporarily Unavailable",
    481: "Call/Transaction Does Not Exist",
    482: "Loop Detected",
    483: "Too Many Hops",
    500: "Server Internal Error",
    501: "Not Implemented",
    503: "Service Unavailable",
    504: "Server Time-out",
    505: "Version Not Supported",
    513: "Message Too Large",
    600: "Busy Everywhere",
    603: "Decline",
}

HeaderItems = Iterable[tuple[str, str]]


class Headers:
    """Ordered, case-insensitive header lines."""

    __slots__ = ("_items",)

    def __init__(self, items: HeaderItems = ()) -> None:
        self._items: list[tuple[str, str]] = [(normalize_name(n), v) for n, v in items]

    @classmethod
    def _from_normalized(cls, items: list[tuple[str, str]]) -> Headers:
        obj = cls.__new__(cls)
        obj._items = items
        return obj

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first line of this header, or default."""
        key = KNOWN_KEYS.get(name) or normalize_name(name)
        for k, v in self._items:
            if k == key:
                return v
        return default

    def get_all(self, name: str) -> list[str]:
        """Every line of this header, as sent (not split on commas)."""
        key = KNOWN_KEYS.get(name) or normalize_name(name)
        return [v for k, v in self._items if k == key]

    def get_list(self, name: str) -> list[str]:
        """Every element of a list header: lines split on commas outside quotes and <...>."""
        key = normalize_name(name)
        if key not in LIST_HEADERS:
            return self.get_all(key)
        out: list[str] = []
        for k, v in self._items:
            if k == key:
                out.extend(split_list(v))
        return out

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        key = normalize_name(name)
        return any(k == key for k, _ in self._items)

    def add(self, name: str, value: str) -> None:
        self._items.append((normalize_name(name), value))

    def set(self, name: str, value: str) -> None:
        """Replace every line of this header by one line (appended if absent)."""
        key = normalize_name(name)
        for i, (k, _) in enumerate(self._items):
            if k == key:
                self._items[i] = (key, value)
                self._items = [item for j, item in enumerate(self._items) if j <= i or item[0] != key]
                return
        self._items.append((key, value))

    def remove(self, name: str) -> None:
        key = normalize_name(name)
        self._items = [item for item in self._items if item[0] != key]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def copy(self) -> Headers:
        return Headers._from_normalized(list(self._items))

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Headers) and self._items == other._items

    __hash__ = None  # type: ignore[assignment]


class Message:
    """What requests and responses share: headers, body, and the fields parsed from them."""

    __slots__ = ("_cseq", "_via", "body", "headers")

    def __init__(self, headers: Headers | HeaderItems = (), body: bytes = b"") -> None:
        self.headers = headers if isinstance(headers, Headers) else Headers(headers)
        self.body = body
        self._cseq: tuple[int, str] | None = None
        self._via: Via | None = None

    # --- derived fields (parsed lazily, cached) ---------------------------------------------
    @property
    def call_id(self) -> str:
        value = self.headers.get("call-id")
        if value is None:
            raise ParseError("missing Call-ID header")
        value = value.strip()
        if not value:
            raise ParseError("empty Call-ID header")
        return value

    @property
    def cseq(self) -> tuple[int, str]:
        if self._cseq is None:
            value = self.headers.get("cseq")
            if value is None:
                raise ParseError("missing CSeq header")
            self._cseq = parse_cseq(value)
        return self._cseq

    def _top_via_value(self) -> str:
        first = self.headers.get("via")
        if first is None:
            raise ParseError("missing Via header")
        if "," in first:
            vias = split_list(first)
            if not vias:
                raise ParseError(f"empty Via header {first[:40]!r}")
            first = vias[0]
        return first

    @property
    def top_via(self) -> Via:
        if self._via is None:
            self._via = parse_via(self._top_via_value())
        return self._via

    @property
    def branch(self) -> str | None:
        """The top Via's branch (the Via is checked, but not built unless it was already)."""
        if self._via is not None:
            return self._via.branch
        return via_branch(self._top_via_value())

    @property
    def from_addr(self) -> NameAddr:
        return _required_addr(self, "from")

    @property
    def to_addr(self) -> NameAddr:
        return _required_addr(self, "to")

    def contacts(self) -> list[NameAddr] | None:
        """The Contact values; None for the wildcard '*'."""
        values = self.headers.get_list("contact")
        if len(values) == 1 and values[0] == "*":
            return None
        return [parse_name_addr(v) for v in values]

    def expires(self) -> int | None:
        """The Expires header as delta-seconds (0 .. 2**32-1), or None."""
        value = self.headers.get("expires")
        if value is None:
            return None
        if len(value.split()) != 1:
            raise ParseError(f"invalid Expires {value[:40]!r}")
        return parse_delta(value, "Expires")

    # --- serialization ------------------------------------------------------------------------
    def _start_line(self) -> str:
        raise NotImplementedError

    def to_bytes(self) -> bytes:
        """The wire form; Content-Length is always written and always matches the body."""
        lines = [self._start_line()]
        for key, value in self.headers._items:
            if key != "content-length":
                lines.append(f"{canonical_name(key)}: {value}")
        lines.append(f"Content-Length: {len(self.body)}")
        head = "\r\n".join(lines) + "\r\n\r\n"
        return head.encode("utf-8", "surrogateescape") + self.body

    def __bytes__(self) -> bytes:
        return self.to_bytes()


def _required_addr(msg: Message, key: str) -> NameAddr:
    value = msg.headers.get(key)
    if value is None:
        raise ParseError(f"missing {canonical_name(key)} header")
    return parse_name_addr(value)


class Request(Message):
    __slots__ = ("method", "uri")

    def __init__(self, method: str, uri: str, headers: Headers | HeaderItems = (), body: bytes = b"") -> None:
        Message.__init__(self, headers, body)  # not super(): a little faster, and the parser makes many
        self.method = method
        self.uri = uri

    def _start_line(self) -> str:
        return f"{self.method} {self.uri} SIP/2.0"

    def __repr__(self) -> str:
        return f"Request({self.method!r}, {self.uri!r}, {self.headers!r}, body={len(self.body)} bytes)"


class Response(Message):
    __slots__ = ("reason", "status")

    def __init__(
        self, status: int, reason: str | None = None, headers: Headers | HeaderItems = (), body: bytes = b""
    ) -> None:
        Message.__init__(self, headers, body)  # not super(): a little faster, and the parser makes many
        self.status = status
        self.reason = REASON_PHRASES.get(status, "Unknown") if reason is None else reason

    def _start_line(self) -> str:
        return f"SIP/2.0 {self.status} {self.reason}"

    def __repr__(self) -> str:
        return f"Response({self.status}, {self.reason!r}, {self.headers!r}, body={len(self.body)} bytes)"


def response_to(request: Request, status: int, reason: str | None = None, to_tag: str | None = None) -> Response:
    """A response to `request` (RFC 3261 §8.2.6.2): Via, From, To (+tag), Call-ID and CSeq copied."""
    items: list[tuple[str, str]] = []
    for key, value in request.headers._items:
        if key == "to" and to_tag is not None and ";tag=" not in value.replace(" ", "").lower():
            items.append((key, f"{value};tag={to_tag}"))
        elif key in ("via", "from", "to", "call-id", "cseq"):
            items.append((key, value))
    return Response(status, reason, Headers._from_normalized(items))
