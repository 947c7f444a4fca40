"""Header names and the grammar inside header values (RFC 3261 §7.3, §20, §25).

Names are compared case-insensitively and compact forms are expanded: internally every header is
keyed by its lower-case full name ("v" -> "via"). Values are parsed on demand by the small functions
here (parameters, name-addr / addr-spec, Via, CSeq, SIP URIs); each raises ParseError, never another
exception, so callers can hand them whatever arrived on the wire.
"""

from __future__ import annotations

import re
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


def _spell(key: str) -> str:
    known = CANONICAL_NAMES.get(key)
    if known is not None:
        return known
    return "-".join(part.capitalize() for part in key.split("-"))


_COMMON_KEYS = (
    "via", "from", "to", "call-id", "cseq", "contact", "max-forwards", "expires", "min-expires",
    "content-length", "content-type", "www-authenticate", "proxy-authenticate", "authorization",
    "proxy-authorization", "authentication-info", "user-agent", "server", "allow", "supported",
    "require", "unsupported", "route", "record-route", "path", "service-route", "date", "retry-after",
    "allow-events", "event", "accept", "warning", "timestamp", "subject", "content-encoding",
)

# Constant lookup tables for the hot path: exact spellings seen on the wire -> key, key -> wire spelling.
WIRE_NAMES: dict[str, str] = {key: _spell(key) for key in (*_COMMON_KEYS, *COMPACT_FORMS.values())}
KNOWN_KEYS: dict[str, str] = {
    **{spelling: key for key, spelling in WIRE_NAMES.items()},
    **{key: key for key in WIRE_NAMES},
    **COMPACT_FORMS,
    **{letter.upper(): key for letter, key in COMPACT_FORMS.items()},
}


def normalize_name(name: str) -> str:
    """The lower-case full form of a header name ("I" -> "call-id", "Via" -> "via")."""
    known = KNOWN_KEYS.get(name)
    if known is not None:
        return known
    key = name.strip().lower()
    return COMPACT_FORMS.get(key, key)


def canonical_name(key: str) -> str:
    """The conventional spelling of a lower-case header key ("call-id" -> "Call-ID")."""
    known = WIRE_NAMES.get(key)
    return known if known is not None else _spell(key)


TOKEN = r"[A-Za-z0-9.!%*_+`'~-]+"  # RFC 3261 token, as a regular expression
_TOKEN_RE = re.compile(TOKEN)
_QUOTED = r'"(?:[^"\\]|\\.)*"'  # quoted-string; what _quoted_end and unquote accept
_is_token_match = _TOKEN_RE.fullmatch


def is_token(text: str) -> bool:
    """RFC 3261 token: one or more of alphanumerics and -.!%*_+`'~ (ASCII only)."""
    return _is_token_match(text) is not None


def split_list(value: str) -> list[str]:
    """Split a comma-separated header value, ignoring commas inside quotes and angle brackets."""
    if "," not in value:
        stripped = value.strip()
        return [stripped] if stripped else []
    return [item for item in (part.strip() for part in _split_outside(value, ",", repr(value))) if item]


def _split_outside(text: str, sep: str, shown: str) -> list[str]:
    """Split `text` on `sep` outside quoted strings (and, for ',', outside <...>); the parts as they are.

    `shown` is what an unterminated quoted string's ParseError quotes."""
    parts: list[str] = []
    start = 0
    in_quotes = in_angle = escaped = False
    angles = sep == ","
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
        elif angles and ch == "<":
            in_angle = True
        elif angles and ch == ">":
            in_angle = False
        elif ch == sep and not in_angle:
            parts.append(text[start:i])
            start = i + 1
    if in_quotes:
        raise ParseError(f"unterminated quoted string in {shown}")
    parts.append(text[start:])
    return parts


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
    return _split_outside(text, ";", f"parameters {text!r}")


_HEADER_PARAM_RE = re.compile(
    rf"[ \t]*({TOKEN})[ \t]*(?:=[ \t]*([^ \t\";]+|{_QUOTED})[ \t]*)?", re.S
)
_URI_PARAM_RE = re.compile(rf"[ \t]*([^ \t\";=]+)[ \t]*(?:=[ \t]*([^ \t\";]+|{_QUOTED})[ \t]*)?", re.S)


# the usual shape (';name=value;flag', no whitespace), validated in one go, then cut by _simple_params
_PARAM_ITEM = rf";({TOKEN})(?:=([^; \t\"]+|{_QUOTED}))?"
# _PARAM_ITEM without groups, and possessive (++): nothing here ever needs to backtrack, and SRE is faster
_SIMPLE_PARAMS = rf";{TOKEN}+(?:=(?:[^; \t\"]++|{_QUOTED}))?"
_SIMPLE_HEADER_PARAMS_RE = re.compile(rf"(?:{_SIMPLE_PARAMS})++", re.S)
_PARAM_ITEM_RE = re.compile(_PARAM_ITEM, re.S)


def _simple_params(text: str) -> dict[str, str | None]:
    """Split parameters that _SIMPLE_HEADER_PARAMS_RE matched in full."""
    params: dict[str, str | None] = {}
    if '"' in text:
        for m in _PARAM_ITEM_RE.finditer(text):
            params[m.group(1).lower()] = m.group(2)
        return params
    for part in text[1:].split(";"):
        name, eq, value = part.partition("=")
        params[name.lower()] = value if eq else None
    return params


def _params(text: str, header: bool) -> dict[str, str | None]:
    """Header parameters (token names) or, with header=False, the laxer URI parameters."""
    if header and _SIMPLE_HEADER_PARAMS_RE.fullmatch(text) is not None:
        return _simple_params(text)
    params: dict[str, str | None] = {}
    if text[:1] != ";":
        text = text.lstrip(" \t")
        if not text:
            return params
    if text[0] == ";":
        text = text[1:]
    match = (_HEADER_PARAM_RE if header else _URI_PARAM_RE).fullmatch
    for part in _split_params(text):
        m = match(part)
        if m is None:
            what = "empty parameter" if not part.strip(" \t") else f"invalid parameter {part[:40]!r}"
            raise ParseError(f"{what} in {text[:80]!r}")
        name, value = m.groups()
        params[name.lower()] = value
    return params


def parse_params(text: str) -> dict[str, str | None]:
    """Parse ';name=value;flag' (the leading ';' optional) into a dict with lower-case names.

    Quoted values keep their quotes (callers that need the text use `unquote`), so that
    serializing the dict again reproduces them, e.g. +sip.instance="<urn:uuid:...>".
    """
    return _params(text, True)


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


# hostname / IPv4 (underscores are not legal but are seen in the wild), or an IPv6 reference
_HOSTPORT = r"(?:\[([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)\]|([A-Za-z0-9._-]+))[ \t]*(?::[ \t]*([0-9]{1,5}))?[ \t]*"
_HOSTPORT_RE = re.compile(rf"[ \t]*{_HOSTPORT}")


def _host_port(host6: str | None, host: str | None, port: str | None, whole: str) -> tuple[str, int | None]:
    if port is None:
        return (host6 or host or ""), None
    number = int(port)
    if not 0 < number < 65536:
        raise ParseError(f"port out of range in {whole[:80]!r}")
    return (host6 or host or ""), number


def parse_hostport(text: str) -> tuple[str, int | None]:
    """'host', 'host:port', '[v6]' or '[v6]:port' -> (host, port); IPv6 without brackets."""
    m = _HOSTPORT_RE.fullmatch(text)
    if m is None:
        raise ParseError(f"invalid host or port in {text[:80]!r}" if text.strip() else "empty host")
    host6, host, port = m.groups()
    return _host_port(host6, host, port, text)


def parse_uri(text: str) -> SipUri:
    """Parse a SIP or SIPS URI ('sip:user:password@host:port;params?headers').

    The user part may hold ';', '?' and ':' (RFC 4475 §3.1.1.2, §3.1.1.9): it ends at the last '@',
    which cannot appear in the host, the parameters or the headers.
    """
    text = text.strip()
    scheme, colon, rest = text.partition(":")
    if not colon or not scheme:
        raise ParseError(f"URI without a scheme: {text[:80]!r}")
    scheme = scheme.lower()
    if scheme not in ("sip", "sips"):
        raise ParseError(f"unsupported URI scheme {scheme[:20]!r} in {text[:80]!r}")
    user: str | None = None
    if "@" in rest:
        user, _, rest = rest.rpartition("@")
        if not user:
            raise ParseError(f"empty user part in {text[:80]!r}")
    rest, _, headers = rest.partition("?")
    hostport, _, params_text = rest.partition(";")
    host, port = parse_hostport(hostport)
    params = _params(params_text, False) if params_text else {}
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


def _quoted_end(text: str) -> int:
    """The index just past the quoted-string that opens `text`."""
    i = 1
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == '"':
            return i + 1
        i += 1
    raise ParseError(f"unterminated quoted string in {text[:80]!r}")


def parse_name_addr(value: str) -> NameAddr:
    """Parse name-addr ('"Bob" <sip:bob@h>;tag=1') or addr-spec ('sip:bob@h;tag=1').

    In the addr-spec form every ';' parameter belongs to the header, not the URI (RFC 3261 §20.10).
    An unquoted display name must be tokens separated by whitespace (RFC 4475 §3.1.2.14).
    """
    value = value.strip()
    if not value:
        raise ParseError("empty address")
    display: str | None = None
    if value[0] == '"':
        end = _quoted_end(value)
        display = unquote(value[:end])
        lt = end
        while lt < len(value) and value[lt] in " \t":
            lt += 1
        if value[lt : lt + 1] != "<":
            raise ParseError(f"expected <URI> after the display name in {value[:80]!r}")
    else:
        lt = value.find("<")
        if lt < 0:
            uri, _, params_text = value.partition(";")
            uri = uri.strip()
            if not uri or " " in uri or "\t" in uri or ":" not in uri or ">" in uri:
                raise ParseError(f"invalid address {value[:80]!r}")
            if "?" in uri:  # RFC 3261 §20: such a URI must be enclosed in <> (RFC 4475 §3.1.2.12)
                raise ParseError(f"a URI with '?' must be enclosed in <...>: {value[:80]!r}")
            return NameAddr(uri, None, parse_params(params_text))
        if lt:
            words = value[:lt].split()
            if not all(is_token(word) for word in words):
                raise ParseError(f"display name must be quoted: {value[:lt][:60]!r}")
            display = " ".join(words)
    gt = value.find(">", lt)
    if gt < 0:
        raise ParseError(f"missing '>' in address {value[:80]!r}")
    uri = value[lt + 1 : gt].strip()
    if not uri or "<" in uri:
        raise ParseError(f"invalid URI in address {value[:80]!r}")
    rest = value[gt + 1 :].lstrip(" \t")
    if rest and rest[0] != ";":
        raise ParseError(f"junk after address {value[:80]!r}")
    return NameAddr(uri, display, parse_params(rest) if rest else {})


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


_VIA_RE = re.compile(
    rf"[ \t]*SIP[ \t]*/[ \t]*2\.0[ \t]*/[ \t]*({TOKEN})[ \t]+{_HOSTPORT}(;.*)?", re.I | re.S
)
# what nearly every peer sends: checked in one go, then split without further validation
_VIA_USUAL_RE = re.compile(
    rf"SIP/2\.0/([A-Z]++) (?:\[([0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*)\]|([A-Za-z0-9._-]++))(?::([0-9]{{1,5}}+))?"
    rf"((?:{_SIMPLE_PARAMS})++)?",
    re.S,
)


_VIA_SETTERS = tuple(getattr(Via, name).__set__ for name in ("transport", "host", "port", "params"))


def _new_via(transport: str, host: str, port: int | None, params: dict[str, str | None]) -> Via:
    """Via(...) without the frozen dataclass __init__ (its object.__setattr__ per field doubles the cost)."""
    via = object.__new__(Via)
    set_transport, set_host, set_port, set_params = _VIA_SETTERS
    set_transport(via, transport)
    set_host(via, host)
    set_port(via, port)
    set_params(via, params)
    return via


def parse_via(value: str) -> Via:
    """Parse one Via value: 'SIP/2.0/UDP host:port;branch=z9hG4bK...;rport'.

    Whitespace is allowed around the '/' of the protocol (RFC 3261 §25.1, RFC 4475 §3.1.1.1).
    """
    m = _VIA_USUAL_RE.fullmatch(value)
    if m is not None:
        transport, host6, host, port, params = m.groups()
        number = None if port is None else int(port)
        if number is not None and not 0 < number < 65536:
            raise ParseError(f"port out of range in {value[:80]!r}")
        return _new_via(transport, host6 or host, number, _simple_params(params) if params else {})
    m = _VIA_RE.fullmatch(value)
    if m is None:
        raise ParseError(f"invalid Via {value[:80]!r}")
    transport, host6, host, port, params = m.groups()
    hostname, number = _host_port(host6, host, port, value)
    return Via(transport.upper(), hostname, number, _params(params, True) if params else {})


_BRANCH_RE = re.compile(r";[Bb][Rr][Aa][Nn][Cc][Hh](?:=([^;]*))?(?=;|$)")


def via_branch(value: str) -> str | None:
    """parse_via(value).branch, with the same checks, without building the Via (the hot path)."""
    m = _VIA_USUAL_RE.fullmatch(value)
    if m is None or '"' in value:
        return parse_via(value).branch
    port, params = m.group(4, 5)
    if port is not None and not 0 < int(port) < 65536:
        raise ParseError(f"port out of range in {value[:80]!r}")
    if not params:
        return None
    found = _BRANCH_RE.findall(params)  # the last one wins, as in the params dict
    return (found[-1] or None) if found else None


def _digits(text: str, what: str, whole: str, limit: int) -> int:
    """A decimal number of at most `limit`; ParseError for anything else (checked before int())."""
    if not text.isdigit() or not text.isascii():
        raise ParseError(f"invalid {what} {whole[:40]!r}")
    significant = text.lstrip("0") or "0"
    if len(significant) > 12 or int(significant) > limit:
        raise ParseError(f"{what} out of range in {whole[:40]!r}")
    return int(significant)


_USUAL_METHODS = frozenset({"REGISTER", "INVITE", "ACK", "BYE", "CANCEL", "OPTIONS", "SUBSCRIBE", "NOTIFY",
                            "MESSAGE", "INFO", "PRACK", "UPDATE", "REFER", "PUBLISH"})
_CSEQ_RE = re.compile(rf"[ \t]*+([0-9]{{1,10}}+)[ \t]++({TOKEN}+)[ \t]*+")
_LWS_RE = re.compile(r"[ \t]+")


def parse_cseq(value: str) -> tuple[int, str]:
    """'314159 INVITE' -> (314159, 'INVITE'). The method is case-sensitive (RFC 3261 §7.1)."""
    digits, _, method = value.partition(" ")
    if method in _USUAL_METHODS and digits.isdigit() and digits.isascii() and len(digits) <= 10:
        number = int(digits)  # the usual "N METHOD": what the expression below gives for it
        if number < 2**31:
            return number, method
    m = _CSEQ_RE.fullmatch(value)
    if m is None:  # more than 10 digits (leading zeros?), or not a CSeq at all
        parts = _LWS_RE.split(value.strip(" \t"))
        if len(parts) == 2 and is_token(parts[1]):
            return _digits(parts[0], "CSeq number", value, 2**31 - 1), parts[1]
        raise ParseError(f"invalid CSeq {value[:40]!r}")
    digits, method = m.group(1, 2)
    number = int(digits)
    if number >= 2**31:
        raise ParseError(f"CSeq number out of range in {value[:40]!r}")
    return number, method


def parse_delta(value: str, what: str) -> int:
    """A delta-seconds value (Expires, Min-Expires, Retry-After's first token), at most 2**32-1."""
    text = value.strip().split(None, 1)[0] if value.strip() else ""
    return _digits(text, what, value, 2**32 - 1)
