"""A registrar that misbehaves on purpose, scripted per case, for tests of sipload's robustness.

`HostileRegistrar(case)` is sans-IO: `respond(data, now)` takes the bytes of one request and returns
the `Reply`s to send (bytes, a delay, and the address to send them from: None for the registrar's
own). Two ways to put it on a network:

* `HostileNetwork`: an in-memory network for a `Worker` on virtual time (trio's MockClock), the
  interface of `sipload.testing.memory.MemoryNetwork` (`client`, `send`, `run`);
* `serve_hostile`: a real UDP server on 127.0.0.1 (a `UdpSocket` and its `serve`), plus a second
  socket for the replies that come "from an unexpected address".

Every case answers a REGISTER the way its name says (see `CASES`); the well-behaved parts use no
digest (a 200 at once) unless the case is about challenges.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import trio

from sipload.sip.errors import ParseError
from sipload.sip.message import Request, Response, response_to
from sipload.sip.parser import parse_message
from sipload.transport.udp import Address, UdpSocket

REGISTRAR: Address = ("127.0.0.1", 5060)
ELSEWHERE: Address = ("127.0.0.1", 5999)    # where "unexpected address" replies come from (in memory)
NONCE = "bm9uY2Utb2YtYS1ob3N0aWxlLXJlZ2lzdHJhcg"


@dataclass(frozen=True, slots=True)
class Reply:
    data: bytes
    delay: float = 0.0
    elsewhere: bool = False          # sent from another address than the one the request went to


def ok(request: Request, expires: str = "60") -> Response:
    """A 200 that grants our contact `expires` (as text: it may be absurd)."""
    response = response_to(request, 200, to_tag="hostile")
    contact = request.headers.get("contact") or "*"
    if contact != "*":
        response.headers.add("Contact", f"{contact};expires={expires}")
    return response


def challenge(request: Request, *, stale: bool = False, header: str | None = None) -> Response:
    response = response_to(request, 401, to_tag="hostile")
    value = header or f'Digest realm="hostile", nonce="{NONCE}", algorithm=MD5, qop="auth"'
    response.headers.add("WWW-Authenticate", value + (", stale=true" if stale else ""))
    return response


def replaced(response: Response, name: str, value: str) -> Response:
    response.headers.set(name, value)
    return response


def _b(response: Response) -> list[Reply]:
    return [Reply(response.to_bytes())]


Case = Callable[[Request, "HostileRegistrar"], list[Reply]]


def _garbage(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return [Reply(b"\x00\xff\xfe this is not SIP \r\n\r\n"), Reply(b""), Reply(b"SIP/2.0 2000 OK\r\n\r\n")]


def _truncated(req: Request, reg: HostileRegistrar) -> list[Reply]:
    whole = ok(req).to_bytes()
    head, _, _ = whole.partition(b"\r\n\r\n")
    body_missing = head.replace(b"Content-Length: 0", b"Content-Length: 120") + b"\r\n\r\nshort"
    return [Reply(whole[: len(whole) // 3]), Reply(body_missing)]


def _oversized(req: Request, reg: HostileRegistrar) -> list[Reply]:
    huge_head = b"SIP/2.0 200 OK\r\nX-Junk: " + b"a" * 65_400 + b"\r\n\r\n"
    huge_length = ok(req).to_bytes().replace(b"Content-Length: 0", b"Content-Length: 4294967296")
    return [Reply(huge_head), Reply(huge_length)]


def _thousands_of_headers(req: Request, reg: HostileRegistrar) -> list[Reply]:
    whole = ok(req).to_bytes()
    head, _, _ = whole.partition(b"\r\n\r\n")
    return [Reply(head + b"\r\n" + b"X-H: 1\r\n" * 5000 + b"\r\n")]


def _wrong_call_id(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return _b(replaced(ok(req), "Call-ID", "not-yours@hostile"))


def _wrong_branch(req: Request, reg: HostileRegistrar) -> list[Reply]:
    via = (req.headers.get("via") or "").replace("branch=z9hG4bK", "branch=z9hG4bKforged")
    return _b(replaced(ok(req), "Via", via))


def _wrong_cseq(req: Request, reg: HostileRegistrar) -> list[Reply]:
    number, method = req.cseq
    return _b(replaced(ok(req), "CSeq", f"{number + 7} {method}")) + _b(replaced(ok(req), "CSeq", f"{number} INVITE"))


def _duplicate_200(req: Request, reg: HostileRegistrar) -> list[Reply]:
    data = ok(req).to_bytes()
    return [Reply(data), Reply(data), Reply(data, delay=0.2)]


def _late_200(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return [Reply(ok(req).to_bytes(), delay=reg.late)]   # after Timer F of the request


def _elsewhere(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return [Reply(ok(req).to_bytes(), elsewhere=True)]


def _absurd_expires(req: Request, reg: HostileRegistrar) -> list[Reply]:
    n = reg.count(req)
    values = ["1" + "0" * 400, "9" * 5000, "4294967295", "99999999999"]
    response = ok(req, values[n % len(values)])
    response.headers.set("Expires", "9" * 50)
    return _b(response)


def _zero_expires(req: Request, reg: HostileRegistrar) -> list[Reply]:
    if req.headers.get("expires") == "0":
        return _b(ok(req))
    return _b(ok(req, "0"))


def _absurd_min_expires(req: Request, reg: HostileRegistrar) -> list[Reply]:
    response = response_to(req, 423, to_tag="hostile")
    response.headers.add("Min-Expires", "99999999999")
    return _b(response)


def _rising_min_expires(req: Request, reg: HostileRegistrar) -> list[Reply]:
    requested = int(req.headers.get("expires") or "60")
    response = response_to(req, 423, to_tag="hostile")
    response.headers.add("Min-Expires", str(requested + 1))   # never satisfied: asks for one more each time
    return _b(response)


def _absurd_retry_after(req: Request, reg: HostileRegistrar) -> list[Reply]:
    response = response_to(req, 503, to_tag="hostile")
    response.headers.add("Retry-After", "4294967295")
    return _b(response)


def _retry_after_zero(req: Request, reg: HostileRegistrar) -> list[Reply]:
    response = response_to(req, 503, to_tag="hostile")
    response.headers.add("Retry-After", "0")
    return _b(response)


def _challenge_forever(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return _b(challenge(req))


def _stale_forever(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return _b(challenge(req, stale=True))


def _unsupported_challenge(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return _b(challenge(req, header='Digest realm="x", nonce="n", algorithm=ROT13'))


def _malformed_challenge(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return _b(challenge(req, header='Digest realm="unterminated'))


def _provisional_forever(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return _b(response_to(req, 100)) + _b(response_to(req, 180))


def _requests_back(req: Request, reg: HostileRegistrar) -> list[Reply]:
    options = (b"OPTIONS sip:you@127.0.0.1 SIP/2.0\r\nVia: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx\r\n"
               b"From: <sip:h@h>;tag=1\r\nTo: <sip:you@h>\r\nCall-ID: " + (req.headers.get("call-id") or "").encode()
               + b"\r\nCSeq: 1 OPTIONS\r\nContent-Length: 0\r\n\r\n")
    return [Reply(options)]


def _flood(req: Request, reg: HostileRegistrar) -> list[Reply]:
    junk = Reply(_JUNK)   # one object sent many times: the network holds no copies, only sipload parses them
    return [*([junk] * reg.flood), *_b(ok(req))]


_JUNK = b"SIP/2.0 200 OK\r\nCall-ID: flood@hostile\r\nCSeq: 1 REGISTER\r\nX: " + b"z" * 30_000 + b"\r\n\r\n"


def _unexpected_status(req: Request, reg: HostileRegistrar) -> list[Reply]:
    return _b(response_to(req, 699, "Whatever"))


CASES: dict[str, Case] = {
    "garbage": _garbage,
    "truncated": _truncated,
    "oversized": _oversized,
    "thousands_of_headers": _thousands_of_headers,
    "wrong_call_id": _wrong_call_id,
    "wrong_branch": _wrong_branch,
    "wrong_cseq": _wrong_cseq,
    "duplicate_200": _duplicate_200,
    "late_200": _late_200,
    "elsewhere": _elsewhere,
    "absurd_expires": _absurd_expires,
    "zero_expires": _zero_expires,
    "absurd_min_expires": _absurd_min_expires,
    "rising_min_expires": _rising_min_expires,
    "absurd_retry_after": _absurd_retry_after,
    "retry_after_zero": _retry_after_zero,
    "challenge_forever": _challenge_forever,
    "stale_forever": _stale_forever,
    "unsupported_challenge": _unsupported_challenge,
    "malformed_challenge": _malformed_challenge,
    "provisional_forever": _provisional_forever,
    "requests_back": _requests_back,
    "flood": _flood,
    "unexpected_status": _unexpected_status,
}


@dataclass
class HostileRegistrar:
    """Answers every REGISTER as `case` says; counts what it received."""

    case: str
    late: float = 5.0                  # delay of the late 200s (make it more than Timer F)
    flood: int = 20                    # junk datagrams per request in the flood case
    received: int = 0
    unparseable: int = 0
    requests_by_call: dict[str, int] = field(default_factory=dict)
    replies_sent: int = 0

    def count(self, request: Request) -> int:
        """How many requests of this Call-ID came before this one."""
        return self.requests_by_call.get(request.headers.get("call-id") or "", 1) - 1

    def respond(self, data: bytes) -> list[Reply]:
        self.received += 1
        try:
            request = parse_message(data)
        except ParseError:
            self.unparseable += 1
            return []
        if not isinstance(request, Request):
            return []
        call_id = request.headers.get("call-id") or ""
        self.requests_by_call[call_id] = self.requests_by_call.get(call_id, 0) + 1
        if request.method != "REGISTER":
            return _b(response_to(request, 200))   # OPTIONS probe: sipload checks the target is alive
        replies = CASES[self.case](request, self)
        self.replies_sent += len(replies)
        return replies


class HostileNetwork:
    """In memory, on trio's clock: the `MemoryNetwork` interface a `Worker` takes (`network=`)."""

    def __init__(self, registrar: HostileRegistrar) -> None:
        self.registrar = registrar
        self.client: Address = ("127.0.0.1", 5080)
        self.sent = 0
        self._queue: list[tuple[float, int, bytes, Address]] = []
        self._seq = itertools.count()
        self._wake = trio.Event()

    def send(self, data: bytes) -> bool:
        self.sent += 1
        now = trio.current_time()
        for reply in self.registrar.respond(data):
            source = ELSEWHERE if reply.elsewhere else REGISTRAR
            heapq.heappush(self._queue, (now + reply.delay, next(self._seq), reply.data, source))
        self._wake.set()
        return True

    async def run(self, handler: Callable[[bytes, Address], None]) -> None:
        queue = self._queue
        while True:
            if not queue or queue[0][0] > trio.current_time():
                with trio.move_on_at(queue[0][0] if queue else float("inf")):
                    await self._wake.wait()
                self._wake = trio.Event()
                continue
            _, _, data, source = heapq.heappop(queue)
            handler(data, source)
            await trio.lowlevel.checkpoint()


async def serve_hostile(registrar: HostileRegistrar, *,
                        task_status: trio.TaskStatus[Address] = trio.TASK_STATUS_IGNORED) -> None:
    """Serve `registrar` over real UDP on 127.0.0.1 until cancelled; `nursery.start` returns its address."""
    with UdpSocket("127.0.0.1", 0) as sock, UdpSocket("127.0.0.1", 0) as other:
        async with trio.open_nursery() as nursery:

            async def later(delay: float, via: UdpSocket, data: bytes, addr: Address) -> None:
                await trio.sleep(delay)
                via.send(data, addr)

            def on_datagram(data: bytes, addr: Address) -> None:
                for reply in registrar.respond(data):
                    via = other if reply.elsewhere else sock
                    if reply.delay > 0:
                        nursery.start_soon(later, reply.delay, via, reply.data, addr)
                    else:
                        via.send(reply.data, addr)

            nursery.start_soon(partial(sock.serve, on_datagram))
            task_status.started(sock.local)
            await trio.sleep_forever()


# --- the corpus: every hostile datagram, kept as files (tests/data/hostile/) ----------------------------

CORPUS_CALL_ID = "corpus-call@sipload"
CORPUS_BRANCH = "z9hG4bKcorpus0000000000"
CORPUS_REQUEST = (
    "REGISTER sip:sipload.test SIP/2.0\r\n"
    f"Via: SIP/2.0/UDP 127.0.0.1:5080;branch={CORPUS_BRANCH};rport\r\n"
    "Max-Forwards: 70\r\n"
    "From: <sip:user1@sipload.test>;tag=corpus\r\n"
    "To: <sip:user1@sipload.test>\r\n"
    f"Call-ID: {CORPUS_CALL_ID}\r\n"
    "CSeq: 1 REGISTER\r\n"
    "Contact: <sip:user1@127.0.0.1:5080;transport=udp>\r\n"
    "Expires: 60\r\n"
    "Content-Length: 0\r\n\r\n"
).encode()

# Responses no case above sends (found while hardening the registration machine).
EXTRA_RESPONSES: dict[str, bytes] = {
    "expires-unicode-digit": ok(parse_message(CORPUS_REQUEST), "\u00b2").to_bytes(),   # isdigit(), not int()
    "expires-param-huge": ok(parse_message(CORPUS_REQUEST), "1" + "0" * 400).to_bytes(),  # float overflow
    "retry-after-huge": response_to(parse_message(CORPUS_REQUEST), 503).to_bytes().replace(
        b"Content-Length", b"Retry-After: 99999999999999999999\r\nContent-Length"),
    "status-one-digit": ok(parse_message(CORPUS_REQUEST)).to_bytes().replace(b"SIP/2.0 200 OK", b"SIP/2.0 2"),
    # found by atheris: a challenge's bytes that are not UTF-8 went back in our Authorization header
    "challenge-not-utf8": challenge(parse_message(CORPUS_REQUEST)).to_bytes().replace(
        b'realm="hostile"', b'realm="host\xe8le"'),
}

# Requests for the embedded registrar: each must get a SIP error response or nothing, never an exception.
_R = CORPUS_REQUEST.decode()
HOSTILE_REQUESTS: dict[str, bytes] = {
    "thousands-of-headers": CORPUS_REQUEST.replace(b"Content-Length: 0\r\n",
                                                   b"X-H: 1\r\n" * 3000 + b"Content-Length: 0\r\n"),
    "content-length-huge": CORPUS_REQUEST.replace(b"Content-Length: 0", b"Content-Length: 4294967296"),
    "expires-huge": CORPUS_REQUEST.replace(b"Expires: 60", b"Expires: " + b"9" * 5000),
    "contact-expires-huge": CORPUS_REQUEST.replace(b"transport=udp>", b"transport=udp>;expires=" + b"9" * 5000),
    "contact-expires-unicode": CORPUS_REQUEST.replace(b"transport=udp>", "transport=udp>;expires=\u00b2".encode()),
    "cseq-huge": CORPUS_REQUEST.replace(b"CSeq: 1 REGISTER", b"CSeq: " + b"9" * 5000 + b" REGISTER"),
    "via-port-huge": CORPUS_REQUEST.replace(b"127.0.0.1:5080;branch", b"127.0.0.1:99999999999;branch"),
    "auth-nc-huge": _R.replace("Expires: 60\r\n", 'Expires: 60\r\nAuthorization: Digest username="user1", '
                               'realm="sipload.test", nonce="x", uri="sip:sipload.test", response="00", '
                               'qop=auth, nc=' + "f" * 5000 + ', cnonce="c"\r\n').encode(),
    "auth-unterminated": _R.replace("Expires: 60\r\n", 'Expires: 60\r\nAuthorization: Digest username="user1, '
                                    'realm="sipload.test\r\n').encode(),
    "auth-algorithm-unknown": _R.replace("Expires: 60\r\n", 'Expires: 60\r\nAuthorization: Digest username="u", '
                                         'realm="sipload.test", nonce="n", uri="sip:sipload.test", response="0", '
                                         'algorithm=ROT13\r\n').encode(),
    "auth-nonce-huge": _R.replace("Expires: 60\r\n", 'Expires: 60\r\nAuthorization: Digest username="user1", '
                                  'realm="sipload.test", nonce="' + "A" * 60_000 + '", uri="sip:sipload.test", '
                                  'response="0"\r\n').encode(),
    "contact-star-with-expires": CORPUS_REQUEST.replace(b"<sip:user1@127.0.0.1:5080;transport=udp>", b"*"),
    "nul-bytes": CORPUS_REQUEST.replace(b"user1@sipload.test>;tag", b"user1\x00@sipload.test>;tag"),
    "to-without-user": CORPUS_REQUEST.replace(b"To: <sip:user1@sipload.test>", b"To: <sip:sipload.test>"),
}


def corpus_responses() -> dict[str, bytes]:
    """name -> datagram: every reply of every case to CORPUS_REQUEST, and EXTRA_RESPONSES."""
    out: dict[str, bytes] = {}
    for case in CASES:
        registrar = HostileRegistrar(case, flood=1)
        for i, reply in enumerate(registrar.respond(CORPUS_REQUEST)):
            out[f"{case}-{i}"] = reply.data
    out.update(EXTRA_RESPONSES)
    return out


def write_corpus(directory: Path) -> list[Path]:
    """Write the corpus files (responses/*.sip, requests/*.sip): `python tests/hostile_registrar.py`."""
    written = []
    for kind, items in (("responses", corpus_responses()), ("requests", HOSTILE_REQUESTS)):
        (directory / kind).mkdir(parents=True, exist_ok=True)
        for name, data in items.items():
            path = directory / kind / f"{name}.sip"
            path.write_bytes(data)
            written.append(path)
    return written


if __name__ == "__main__":
    for path in write_corpus(Path(__file__).resolve().parent / "data" / "hostile"):
        print(path)
