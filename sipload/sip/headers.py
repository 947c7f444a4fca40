"""Header names and the grammar inside header values (RFC 3261 §7.3, §20, §25).

Names are compared case-insensitively and compact forms are expanded: internally every header is
keyed by its lower-case full name ("v" -> "via"). Values are parsed on demand by the small functions
here (parameters, name-addr / addr-spec, Via, CSeq, SIP URIs); each raises ParseError, never another
exception, so callers can hand them whatever arrived on the wire.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sipload.sip.errors import ParseError

COMPACT_FORMS: dict[str, str] = {
    "a": "accept-contact",
    "b": "referred-by",
    "c": "content-type",
    "d": "request-disposition",
    "e": "content-encoding",
    "f": "from",
    "i": "call-id",
    "j": "reject-contact",
    "k": "supported",
    "l": "content-length",
    "m": "contact",
    "n": "identity-info",
    "o": "event",
    "r": "refer-to",
    "s": "subject",
    "t": "to",
    "u": "allow-events",
    "v": "via",
    "x": "session-expires",
    "y": "identity",
}

# How a header is spelled when we write it (the wire form of the lower-case key).
CANONICAL_NAMES: dict[str, str] = {
    "call-id": "Call-ID",
    "cseq": "CSeq",
    "www-authenticate": "WWW-Authenticate",
    "proxy-authenticate": "Proxy-Authenticate",
    "authentication-info": "Authentication-Info",
    "mime-version": "MIME-Version",
    "sip-etag": "SIP-ETag",
    "sip-if-match": "SIP-If-Match",
    "rack": "RAck",
    "rseq": "RSeq",
}

# Headers whose values are comma-separated lists (several values may share one line).
LIST_HEADERS: frozenset[str] = frozenset(
    {
        "via", "contact", "route", "record-route", "path", "service-route", "allow", "supported",
        "require", "proxy-require", "unsupported", "accept", "accept-encoding", "accept-language",
        "allow-events", "content-encoding", "in-reply-to", "p-associated-uri",
    }
)


def normalize_name(name: str) -> str:
    """The lower-case full form of a header name ("I" -> "call-id", "Via" -> "via")."""
    key = name.strip().lower()
    return COMPACT_FORMS.get(key, key)


def canonical_name(key: str) -> str:
    """The conventional spelling of a lower-case header key ("call-id" -> "Call-ID")."""
    known = CANONICAL_NAMES.get(key)
    if known is not None:
        return known
    return "-".join(part.capitalize() for part in key.split("-"))


_TOKEN_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789-.!%*_+`'~")


def is_token(text: str) -> bool:
    return bool(text) and all(ch in _TOKEN_CHARS for ch in text)


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and angle brackets."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    items: list[str] = []
    start = 0
    in_quotes = False
    in_angle = False
    escaped = False
    for i, ch in enumerate(value):
        if escaped:
            escaped = False
        elif in_quotes:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == "<":
            in_angle = True
        elif ch == ">":
            in_angle = False
        elif ch == "," and not in_angle:
            item = value[start:i].strip()
            if item:
                items.append(item)
            start = i + 1
    if in_quotes:
        raise ParseError(f"unterminated quoted string in {value!r}")
    item = value[start:].strip()
    if item:
        items.append(item)
    return items


def unquote(text: str) -> str:
    """Remove the quotes of a quoted-string and resolve its backslash escapes."""
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        raise ParseError(f"not a quoted string: {text!r}")
    inner = text[1:-1]
    if "\\" not in inner:
        if '"' in inner:
            raise ParseError(f"unescaped quote inside {text!r}")
        return inner
    out: list[str] = []
    i = 0
    while i < len(inner):
        ch = inner[i]
        if ch == "\\":
            if i + 1 >= len(inner):
                raise ParseError(f"dangling backslash in {text!r}")
            out.append(inner[i + 1])
            i += 2
            continue
        if ch == '"':
            raise ParseError(f"unescaped quote inside {text!r}")
        out.append(ch)
        i += 1
    return "".join(out)


def quote(text: str) -> str:
    """Make a quoted-string, escaping backslashes and quotes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _split_params(text: str) -> list[str]:
    """Split on ';' outside quoted strings."""
    if '"' not in text:
        return text.split(";")
    parts: list[str] = []
    start = 0
    in_quotes = False
    escaped = False
    for i, ch in enumerate(text):
        if escaped:
            escaped = False
        elif in_quotes:
            if ch == "\\":
                escaped = True
            elif ch == '"':
                in_quotes = False
        elif ch == '"':
            in_quotes = True
        elif ch == ";":
            parts.append(text[start:i])
            start = i + 1
    if in_quotes:
        raise ParseError(f"unterminated quoted string in parameters {text!r}")
    parts.append(text[start:])
    return parts


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ';name=value;flag' (the leading ';' optional) into a dict with lower-case names.

    Quoted values keep their quotes (callers that need the text use `unquote`), so that
    serializing the dict again reproduces them, e.g. +sip.instance="<urn:uuid:...>".
    """
    params: dict[str, str | None] = {}
    text = text.strip()
    if not text:
        return params
    if text[0] == ";":
        text = text[1:]
    for part in _split_params(text):
        part = part.strip()
        if not part:
            raise ParseError(f"empty parameter in {text!r}")
        name, eq, value = part.partition("=")
        name = name.strip().lower()
        if not name:
            raise ParseError(f"parameter without a name in {text!r}")
        params[name] = value.strip() if eq else None
    return params


def format_params(params: dict[str, str | None]) -> str:
    return "".join(f";{k}" if v is None else f";{k}={v}" for k, v in params.items())


@dataclass(frozen=True, slots=True)
class SipUri:
    scheme: str                       # "sip" | "sips" (other schemes are kept but not understood)
    user: str | None
    host: str                         # IPv6 without brackets
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)
    headers: str = ""                 # the raw "?..." part, if any

    @property
    def transport(self) -> str | None:
        value = self.params.get("transport")
        return value.lower() if value else None

    @property
    def hostport(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return host if self.port is None else f"{host}:{self.port}"

    def __str__(self) -> str:
        user = f"{self.user}@" if self.user is not None else ""
        hdrs = f"?{self.headers}" if self.headers else ""
        return f"{self.scheme}:{user}{self.hostport}{format_params(self.params)}{hdrs}"


def parse_hostport(text: str) -> tuple[str, int | None]:
    """'host', 'host:port', '[v6]' or '[v6]:port' -> (host, port)."""
    text = text.strip()
    if not text:
        raise ParseError("empty host")
    if text[0] == "[":
        end = text.find("]")
        if end < 0:
            raise ParseError(f"unterminated IPv6 reference in {text!r}")
        host = text[1:end]
        rest = text[end + 1 :]
        if not rest:
            return host, None
        if rest[0] != ":":
            raise ParseError(f"junk after IPv6 reference in {text!r}")
        return host, _parse_port(rest[1:], text)
    host, colon, port = text.partition(":")
    if not host:
        raise ParseError(f"empty host in {text!r}")
    return host, (_parse_port(port, text) if colon else None)


def _parse_port(text: str, whole: str) -> int:
    if not text.isdigit() or not text.isascii():
        raise ParseError(f"invalid port in {whole!r}")
    port = int(text)
    if not 0 < port < 65536:
        raise ParseError(f"port out of range in {whole!r}")
    return port


def parse_uri(text: str) -> SipUri:
    """Parse a SIP or SIPS URI ('sip:user@host:port;params?headers')."""
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme:
        raise ParseError(f"URI without a scheme: {text!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        raise ParseError(f"unsupported URI scheme {scheme!r} in {text!r}")
    rest, _, headers = rest.partition("?")
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if ";" in user:
            # user-params are allowed in the user part; keep them verbatim
            pass
    hostport, _, params_text = rest.partition(";")
    host, port = parse_hostport(hostport)
    params = parse_params(params_text) if params_text else {}
    return SipUri(scheme, user, host, port, params, headers)


@dataclass(frozen=True, slots=True)
class NameAddr:
    """A From/To/Contact/Route value: optional display name, a URI, and header parameters."""

    uri: str
    display: str | None = None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def tag(self) -> str | None:
        return self.params.get("tag")

    def __str__(self) -> str:
        display = f"{quote(self.display)} " if self.display else ""
        return f"{display}<{self.uri}>{format_params(self.params)}"


def parse_name_addr(value: str) -> NameAddr:
    """Parse name-addr ('"Bob" <sip:bob@h>;tag=1') or addr-spec ('sip:bob@h;tag=1').

    In the addr-spec form every ';' parameter belongs to the header, not the URI (RFC 3261 §20.10).
    """
    value = value.strip()
    if not value:
        raise ParseError("empty address")
    lt = value.find("<")
    if lt < 0:
        uri, _, params_text = value.partition(";")
        uri = uri.strip()
        if not uri or " " in uri or ":" not in uri:
            raise ParseError(f"invalid address {value!r}")
        return NameAddr(uri, None, parse_params(params_text))
    display_text = value[:lt].strip()
    display: str | None
    if not display_text:
        display = None
    elif display_text[0] == '"':
        display = unquote(display_text)
    else:
        display = display_text
    gt = value.find(">", lt)
    if gt < 0:
        raise ParseError(f"missing '>' in address {value!r}")
    uri = value[lt + 1 : gt].strip()
    if not uri:
        raise ParseError(f"empty URI in address {value!r}")
    rest = value[gt + 1 :].strip()
    if rest and rest[0] != ";":
        raise ParseError(f"junk after address {value!r}")
    return NameAddr(uri, display, parse_params(rest))


@dataclass(frozen=True, slots=True)
class Via:
    transport: str                    # upper case: UDP, TCP, TLS, WS, WSS
    host: str
    port: int | None
    params: dict[str, str | None] = field(default_factory=dict)

    @property
    def branch(self) -> str | None:
        return self.params.get("branch")

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        port = "" if self.port is None else f":{self.port}"
        return f"SIP/2.0/{self.transport} {host}{port}{format_params(self.params)}"


def parse_via(value: str) -> Via:
    """Parse one Via value: 'SIP/2.0/UDP host:port;branch=z9hG4bK...;rport'."""
    proto, sep, rest = value.strip().partition(" ")
    if not sep:
        # tolerate "SIP/2.0/UDP\thost"
        proto, sep, rest = value.strip().partition("\t")
        if not sep:
            raise ParseError(f"invalid Via {value!r}")
    parts = [p.strip() for p in proto.split("/")]
    if len(parts) != 3 or parts[0].upper() != "SIP" or not parts[2]:
        raise ParseError(f"invalid Via protocol {proto!r}")
    sent_by, _, params_text = rest.strip().partition(";")
    host, port = parse_hostport(sent_by)
    return Via(parts[2].upper(), host, port, parse_params(params_text))


def parse_cseq(value: str) -> tuple[int, str]:
    number, _, method = value.strip().partition(" ")
    method = method.strip()
    if not number.isdigit() or not number.isascii() or not method:
        raise ParseError(f"invalid CSeq {value!r}")
    seq = int(number)
    if seq >= 2**31:
        raise ParseError(f"CSeq number too large in {value!r}")
    return seq, method.upper()


def parse_delta(value: str, what: str) -> int:
    """A delta-seconds value (Expires, Min-Expires, Retry-After's first token)."""
    text = value.strip().split(None, 1)[0] if value.strip() else ""
    if not text.isdigit() or not text.isascii():
        raise ParseError(f"invalid {what} {value!r}")
    return int(text)
