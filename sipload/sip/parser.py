"""Bytes to messages: `parse_message` for a datagram, `StreamFramer` for a byte stream.

Both accept what real peers send: CRLF or bare LF line ends, folded header lines, any case and the
compact forms of header names, no space after the colon, unknown status codes (100-699), and
blank lines before the start line. Everything else raises ParseError with a message that says
what is wrong; no other exception escapes, whatever the bytes (a fuzz test holds this).

On a stream, messages are framed by Content-Length (RFC 3261 §18.3); CRLF runs between messages
are RFC 5626 keep-alives: a double CRLF is a ping (the server answers with a single CRLF, a pong).
"""

from __future__ import annotations

from sipload.sip.errors import ParseError
from sipload.sip.headers import COMPACT_FORMS, is_token
from sipload.sip.message import Headers, Request, Response

MAX_HEAD_BYTES = 65536
MAX_BODY_BYTES = 1 << 20
MAX_HEADER_LINES = 1000

_WS = " \t"


def _find_head_end(data: bytes | bytearray, start: int = 0) -> tuple[int, int]:
    """(end of head, start of body) or (-1, -1) when the blank line has not arrived yet."""
    crlf = data.find(b"\r\n\r\n", start)
    lf = data.find(b"\n\n", start)
    if lf >= 0 and (crlf < 0 or lf < crlf):
        return lf, lf + 2
    if crlf >= 0:
        # a bare-LF line followed by a CRLF blank line also ends the head
        mixed = data.find(b"\n\r\n", start, crlf)
        if mixed >= 0:
            return mixed, mixed + 3
        return crlf, crlf + 4
    mixed = data.find(b"\n\r\n", start)
    if mixed >= 0:
        return mixed, mixed + 3
    return -1, -1


def _parse_head(head: bytes | bytearray) -> Request | Response:
    text = head.decode("utf-8", "surrogateescape")
    lines = text.split("\n")
    i = 0
    while i < len(lines) and lines[i] in ("", "\r"):
        i += 1
    if i == len(lines):
        raise ParseError("empty message")
    start = lines[i].rstrip("\r")
    items: list[tuple[str, str]] = []
    count = 0
    for raw in lines[i + 1 :]:
        line = raw[:-1] if raw.endswith("\r") else raw
        if not line:
            continue
        if line[0] in _WS:
            if not items:
                raise ParseError("continuation line before any header")
            key, value = items[-1]
            items[-1] = (key, f"{value} {line.strip(_WS)}" if value else line.strip(_WS))
            continue
        name, colon, value = line.partition(":")
        if not colon:
            raise ParseError(f"header line without a colon: {line[:60]!r}")
        name = name.rstrip(_WS).lower()
        if not is_token(name):
            raise ParseError(f"invalid header name {name[:60]!r}")
        count += 1
        if count > MAX_HEADER_LINES:
            raise ParseError(f"more than {MAX_HEADER_LINES} header lines")
        items.append((COMPACT_FORMS.get(name, name), value.strip(_WS)))
    headers = Headers._from_normalized(items)
    if start.startswith("SIP/"):
        return _response(start, headers)
    return _request(start, headers)


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
    reason = parts[2].strip() if len(parts) == 3 else ""
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
    if not uri or ":" not in uri:
        raise ParseError(f"invalid Request-URI {uri[:80]!r}")
    return Request(method, uri, headers)


def _content_length(msg: Request | Response) -> int | None:
    value = msg.headers.get("content-length")
    if value is None:
        return None
    text = value.strip()
    if not text.isdigit() or not text.isascii() or len(text) > 9:
        raise ParseError(f"invalid Content-Length {value[:20]!r}")
    return int(text)


def parse_message(data: bytes) -> Request | Response:
    """Parse one datagram into a Request or Response; raise ParseError if it is not one."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise ParseError(f"expected bytes, got {type(data).__name__}")
    data = bytes(data)
    head_end, body_start = _find_head_end(data)
    if head_end < 0:
        head, body = data, b""
    else:
        head, body = data[:head_end], data[body_start:]
    if len(head) > MAX_HEAD_BYTES:
        raise ParseError(f"header section larger than {MAX_HEAD_BYTES} bytes")
    msg = _parse_head(head)
    length = _content_length(msg)
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
    A ParseError leaves the framer unusable: the connection must be closed.
    """

    __slots__ = ("_buf", "_failed", "_scan", "max_body", "max_head", "pings", "pongs")

    def __init__(self, max_head: int = MAX_HEAD_BYTES, max_body: int = MAX_BODY_BYTES) -> None:
        self._buf = bytearray()
        self._scan = 0
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

    def _skip_keepalives(self) -> bool:
        """Consume leading CRLFs; False when what is buffered may still become a ping."""
        buf = self._buf
        while buf[:1] in (b"\r", b"\n"):
            if buf[:4] == b"\r\n\r\n":
                del buf[:4]
                self.pings += 1
            elif buf[:2] == b"\n\n":
                del buf[:2]
                self.pings += 1
            elif buf in (b"\r", b"\r\n", b"\r\n\r", b"\n"):
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
        if self._scan == 0 and not self._skip_keepalives():
            return None
        if not self._buf:
            return None
        buf = self._buf
        head_end, body_start = _find_head_end(buf, max(0, self._scan - 3))
        if head_end < 0:
            if len(buf) > self.max_head:
                raise ParseError(f"no end of headers within {self.max_head} bytes")
            self._scan = len(buf)
            return None
        if head_end > self.max_head:
            raise ParseError(f"header section larger than {self.max_head} bytes")
        msg = _parse_head(buf[:head_end])
        length = _content_length(msg) or 0
        if length > self.max_body:
            raise ParseError(f"Content-Length {length} exceeds the limit of {self.max_body} bytes")
        if len(buf) - body_start < length:
            self._scan = len(buf)  # wait for the body; the head is parsed again then (rare, cheap)
            return None
        msg.body = bytes(buf[body_start : body_start + length])
        del buf[: body_start + length]
        self._scan = 0
        return msg
