"""Bytes to messages: `parse_message` for a datagram, `StreamFramer` for a byte stream.

Both accept what real peers send: CRLF or bare LF line ends (mixed, too), folded header lines, any
case and the compact forms of header names, no space after the colon, unknown status codes
(100-699), a missing reason phrase, and blank lines before the start line. Everything else raises
ParseError with a message that says what is wrong (a request line with extra spaces or a <URI>,
another SIP version, a header line without a colon or with a name that is not a token, several
Content-Length values that disagree, a body shorter than Content-Length); no other exception
escapes, whatever the bytes (a fuzz test holds this). Header values are parsed later, on demand.

On a stream, messages are framed by Content-Length (RFC 3261 §18.3); CRLF runs between messages
are RFC 5626 keep-alives: a double CRLF is a ping (the server answers with a single CRLF, a pong).
"""

from __future__ import annotations

import re

from sipload.sip.errors import ParseError
from sipload.sip.headers import COMPACT_FORMS, KNOWN_KEYS, TOKEN, is_token
from sipload.sip.message import Headers, Request, Response

MAX_HEAD_BYTES = 65536
MAX_BODY_BYTES = 1 << 20
MAX_HEADER_LINES = 1000

_WS = " \t"
_WS_CR = " \t\r"
_NAME_RE = re.compile(rf"({TOKEN})[ \t]*")


_BLANK_LINE_RE = re.compile(rb"\n\r?\n")
_BLANK_LINE_OR_FOLD_RE = re.compile(rb"\n(?:\r?\n|[ \t])")
_FOLD_RE = re.compile(r"[ \t]*\r?\n[ \t]+")
_HAS_FOLD = re.compile(r"\n[ \t]").search
_REQUEST_LINE_RE = re.compile(rf"({TOKEN}) ([^ \t<>]*:[^ \t<>]*) SIP/2\.0")


def _find_head_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """(end of head, start of body) or (-1, -1) when the blank line has not arrived yet.

    The blank line may follow a CRLF or a bare LF and be CRLF or LF: whichever comes first.
    """
    m = _BLANK_LINE_RE.search(data, start)
    if m is None:
        return -1, -1
    end = m.start()
    if end > 0 and data[end - 1] == 13:  # the CR of the last header line's CRLF
        end -= 1
    return end, m.end()


def _slow_key(name: str) -> str:
    """The key of a header name that is not one of the usual spellings (validated)."""
    m = _NAME_RE.fullmatch(name)
    if m is None:
        raise ParseError(f"invalid header name {name[:60]!r}")
    lowered = m.group(1).lower()
    return COMPACT_FORMS.get(lowered, lowered)


def _parse_head(head: bytes | bytearray, folded: bool | None = None) -> tuple[Request | Response, int | None]:
    """The message without its body, and its Content-Length (None if absent).

    `folded`: whether a header line is folded (None: look for one).
    """
    text = head.decode("utf-8", "surrogateescape")
    # Lines end in LF or CRLF: split on LF; the CR goes with the whitespace stripped off values.
    lines = text.split("\n")
    start = lines[0]
    if start[-1:] == "\r":
        start = start[:-1]
    if not start:
        raise ParseError("empty message")
    if folded or (folded is None and _HAS_FOLD(text) is not None):
        if lines[1][:1] in (" ", "\t"):
            raise ParseError("continuation line before any header")
        lines = _FOLD_RE.sub(" ", text).split("\n")  # unfold: LWS -> one space (RFC 3261 §7.3.1)
    key_of, ws = KNOWN_KEYS.get, _WS_CR
    # List comprehensions, not a loop with appends: this runs for every datagram.
    parts = [line.partition(":") for line in lines[1:]]
    try:
        items = [(key_of(name) or _slow_key(name), value.strip(ws)) for name, colon, value in parts if colon]
    except ParseError:  # an invalid name: report the first problem in line order (maybe an earlier line)
        items = _checked_items(lines)
    if len(items) != len(parts):  # a line without a colon: say which, in line order with the other errors
        items = _checked_items(lines)
    lengths = [value for key, value in items if key == "content-length"]
    length: str | None = None
    if lengths:
        length = lengths[0]
        for value in lengths:
            if value != length:  # RFC 4475 §3.1.2.11
                raise ParseError(f"conflicting Content-Length values {length[:20]!r} and {value[:20]!r}")
    if len(items) > MAX_HEADER_LINES:
        raise ParseError(f"more than {MAX_HEADER_LINES} header lines")
    headers = Headers._from_normalized(items)
    content_length = None if length is None else _content_length(length)
    if start[:8] == "SIP/2.0 ":  # the usual status line, checked without a regular expression
        code = start[8:11]
        if len(code) == 3 and code.isdigit() and code.isascii() and code[0] in "123456" \
                and start[11:12] in (" ", ""):  # len: "SIP/2.0 2" is not status 2
            return _new_response(int(code), start[12:].strip(_WS), headers), content_length
    m = _REQUEST_LINE_RE.fullmatch(start)
    if m is not None:
        return Request(m.group(1), m.group(2), headers), content_length
    # the unusual (a lower-case version) or the wrong, with a message that says what is wrong
    if start[:4].upper() == "SIP/":
        return _response(start, headers), content_length
    return _request(start, headers), content_length


def _checked_items(lines: list[str]) -> list[tuple[str, str]]:
    """The header lines one by one, raising on the first bad one (a missing colon, a bad name, a second
    Content-Length that disagrees) in line order: the slow path, for messages with a problem."""
    items: list[tuple[str, str]] = []
    length: str | None = None
    for line in lines[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            raise ParseError(f"header line without a colon: {line.rstrip(_WS_CR)[:60]!r}")
        key = KNOWN_KEYS.get(name) or _slow_key(name)
        value = value.strip(_WS_CR)
        if key == "content-length":
            if length is not None and value != length:  # RFC 4475 §3.1.2.11
                raise ParseError(f"conflicting Content-Length values {length[:20]!r} and {value[:20]!r}")
            length = value
        items.append((key, value))
    return items


def _new_response(status: int, reason: str, headers: Headers) -> Response:
    """Response(status, reason, headers) as the parser makes it, without the constructor's checks."""
    response = _object_new(Response)
    response.headers = headers
    response.body = b""
    response._cseq = None
    response._via = None
    response.status = status
    response.reason = reason
    return response


_object_new = object.__new__


def _response(start: str, headers: Headers) -> Response:
    parts = start.split(" ", 2)
    if len(parts) < 2:
        raise ParseError(f"invalid status line {start[:80]!r}")
    if parts[0].upper() != "SIP/2.0":
        raise ParseError(f"unsupported SIP version {parts[0][:20]!r}")
    code = parts[1]
    if len(code) != 3 or not code.isdigit() or not code.isascii():
        raise ParseError(f"invalid status code {code[:20]!r}")
    status = int(code)
    if not 100 <= status <= 699:
        raise ParseError(f"status code out of range: {status}")
    reason = parts[2].strip(_WS) if len(parts) == 3 else ""
    return Response(status, reason, headers)


def _request(start: str, headers: Headers) -> Request:
    parts = start.split(" ")
    if len(parts) != 3:
        raise ParseError(f"invalid request line {start[:80]!r}")
    method, uri, version = parts
    if not is_token(method):
        raise ParseError(f"invalid method {method[:20]!r}")
    if version.upper() != "SIP/2.0":
        raise ParseError(f"unsupported SIP version {version[:20]!r}")
    if ":" not in uri or "<" in uri or ">" in uri or "\t" in uri:
        raise ParseError(f"invalid Request-URI {uri[:80]!r}")
    return Request(method, uri, headers)


def _content_length(text: str) -> int:
    if not text.isdigit() or not text.isascii() or len(text) > 9:
        raise ParseError(f"invalid Content-Length {text[:20]!r}")
    return int(text)


def parse_message(data: bytes | bytearray | memoryview) -> Request | Response:
    """Parse one datagram into a Request or Response; raise ParseError if it is not one.

    Without Content-Length the body is the rest of the datagram; with it, bytes beyond it are
    dropped and a shorter body is an error.
    """
    if type(data) is not bytes:
        if not isinstance(data, bytearray | memoryview):
            raise ParseError(f"expected bytes, got {type(data).__name__}")
        data = bytes(data)
    if data[:1] in (b"\r", b"\n"):
        data = data.lstrip(b"\r\n")  # CRLFs before the start line (RFC 3261 §7.5)
    # One search finds the blank line, or first a folded line (then the head needs unfolding).
    m = _BLANK_LINE_OR_FOLD_RE.search(data)
    folded = False
    if m is not None and data[m.end() - 1] in (32, 9):  # SP, HTAB
        folded = True
        m = _BLANK_LINE_RE.search(data, m.end())
    if m is None:  # a datagram that ends without the blank line
        head, body = data.rstrip(b"\r\n"), b""
    else:  # as in _find_head_end (inlined: this is the hot path)
        head_end = m.start()
        if data[head_end - 1] == 13:  # head_end > 0: the data starts with neither CR nor LF
            head_end -= 1
        head, body = data[:head_end], data[m.end() :]
    if len(head) > MAX_HEAD_BYTES:
        raise ParseError(f"header section larger than {MAX_HEAD_BYTES} bytes")
    msg, length = _parse_head(head, folded)
    if length is not None:
        if length > len(body):
            raise ParseError(f"truncated body: Content-Length {length} but {len(body)} bytes follow")
        body = body[:length]
    msg.body = body
    return msg


class StreamFramer:
    """Cuts a byte stream (TCP, TLS) into messages.

    feed() returns the messages completed by the new bytes. Keep-alives are counted: `pings`
    (double CRLF; a server should answer each with a single CRLF) and `pongs` (a single CRLF).
    A message without Content-Length has an empty body (RFC 3261 §18.3 makes it mandatory on
    streams). A ParseError leaves the framer unusable: the connection must be closed.
    """

    __slots__ = ("_buf", "_failed", "_pending", "_scan", "max_body", "max_head", "pings", "pongs")

    def __init__(self, max_head: int = MAX_HEAD_BYTES, max_body: int = MAX_BODY_BYTES) -> None:
        self._buf = bytearray()
        self._scan = 0  # how far the search for the end of the head got (0: at a message boundary)
        self._pending: tuple[Request | Response, int, int] | None = None  # parsed head awaiting its body
        self._failed = False
        self.max_head = max_head
        self.max_body = max_body
        self.pings = 0
        self.pongs = 0

    @property
    def buffered(self) -> int:
        return len(self._buf)

    def feed(self, data: bytes) -> list[Request | Response]:
        if self._failed:
            raise ParseError("stream already failed to parse; close the connection")
        self._buf += data
        out: list[Request | Response] = []
        try:
            while True:
                msg = self._next()
                if msg is None:
                    return out
                out.append(msg)
        except ParseError:
            self._failed = True
            raise

    def take_lone_pong(self) -> bool:
        """Count a lone CRLF held at a message boundary as a pong, and consume it.

        feed() holds a lone CRLF (or LF): the next bytes decide between a pong and the first half
        of a ping. A client that sent a ping (RFC 5626 §4.4.1) knows it is the pong.
        """
        buf = self._buf
        if self._pending is None and len(buf) <= 2 and bytes(buf) in (b"\r\n", b"\n"):
            self._buf.clear()
            self.pongs += 1
            return True
        return False

    def _skip_keepalives(self) -> bool:
        """Consume leading CRLFs; False when what is buffered may still become a ping."""
        buf = self._buf
        while buf and buf[0] in (13, 10):  # CR, LF
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                self.pings += 1
            elif buf[:2] == b"\n\n":
                del buf[:2]
                self.pings += 1
            elif len(buf) < 4 and bytes(buf) in (b"\r", b"\r\n", b"\r\n\r", b"\n"):
                return False  # wait: the next bytes decide between ping and pong
            elif buf[:2] == b"\r\n":
                del buf[:2]
                self.pongs += 1
            elif buf[:1] == b"\n":
                del buf[:1]
                self.pongs += 1
            else:
                raise ParseError("stray carriage return between messages")
        return True

    def _next(self) -> Request | Response | None:
        buf = self._buf
        if self._pending is None:
            if self._scan == 0 and not self._skip_keepalives():
                return None
            if not buf:
                return None
            head_end, body_start = _find_head_end(buf, max(0, self._scan - 2))
            if head_end < 0:
                if len(buf) > self.max_head:
                    raise ParseError(f"no end of headers within {self.max_head} bytes")
                self._scan = len(buf)
                return None
            if head_end > self.max_head:
                raise ParseError(f"header section larger than {self.max_head} bytes")
            msg, length_or_none = _parse_head(buf[:head_end])
            length = length_or_none or 0
            if length > self.max_body:
                raise ParseError(f"Content-Length {length} exceeds the limit of {self.max_body} bytes")
            self._pending = (msg, body_start, length)
        msg, body_start, length = self._pending
        end = body_start + length
        if len(buf) < end:
            return None  # wait for the rest of the body
        msg.body = bytes(buf[body_start:end])
        del buf[:end]
        self._scan = 0
        self._pending = None
        return msg
