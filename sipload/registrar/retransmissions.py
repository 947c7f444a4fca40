"""What stands in for UDP server transactions (RFC 3261 §17.2.2): recent final responses by request.

A UDP client retransmits a request until it sees the final response. The registrar must answer a
retransmission with the same response, not process it again (a second pass would see the same
CSeq and fail the binding update, or the same nc and call it a replay). Entries are kept
`linger` seconds (Timer J = 64*T1) after the response is sent; a retransmission arriving while the
response is still delayed is absorbed, as a server transaction in the Trying state does.

Bounded: entries are kept in insertion order and dropped from the front when expired or when more
than `max_entries` are held (a very late retransmission is then processed as a new request).

Kept as the bytes first sent, in a plain tuple: a `Response` with its `Headers`, list and
header tuples is a handful of objects the garbage collector traverses on every full collection, and a
registrar at 1,000 registrations/s holds 64,000 of them for the 32 s linger (GC pauses of 60-120 ms).
A tuple of bytes and floats is untracked by the collector after its first young collection. A
retransmission (rare) gets a `Response` rebuilt from those bytes whose `to_bytes()` is exactly them.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass

from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message

TransactionKey = tuple[str, int, str, str, str]
_Entry = tuple[bytes, float, float]  # (the response as sent, ready_at, expires_at): no GC-tracked object


@dataclass(frozen=True, slots=True)
class CachedResponse:
    response: Response     # `to_bytes()` gives the bytes first sent
    ready_at: float        # when the response is (or was) sent
    expires_at: float


class SentResponse(Response):
    """A response rebuilt from the bytes sent the first time: `to_bytes()` returns exactly those bytes."""

    __slots__ = ("_wire",)
    _wire: bytes

    @classmethod
    def from_wire(cls, data: bytes) -> SentResponse:
        parsed = parse_message(data)  # bytes this registrar serialized itself: always a response
        if not isinstance(parsed, Response):  # pragma: no cover - only with a corrupted cache
            raise TypeError("cached bytes are not a response")
        out = cls(parsed.status, parsed.reason, parsed.headers, parsed.body)
        out._wire = data
        return out

    @classmethod
    def serialized(cls, response: Response) -> SentResponse:
        """`response` with its bytes made once: what is cached is exactly what the server sends."""
        out = cls(response.status, response.reason, response.headers, response.body)
        out._wire = response.to_bytes()
        return out

    def to_bytes(self) -> bytes:
        return self._wire


def transaction_key(request: Request) -> TransactionKey:
    """(Call-ID, CSeq number, method, top Via branch, top Via sent-by); the request is validated."""
    via = request.top_via
    return (request.call_id, request.cseq[0], request.method, via.branch or "", f"{via.host}:{via.port}")


class ResponseCache:
    def __init__(self, linger: float, max_entries: int) -> None:
        self.linger = linger
        self.max_entries = max_entries
        self._entries: OrderedDict[TransactionKey, _Entry] = OrderedDict()

    def get(self, key: TransactionKey, now: float) -> CachedResponse | None:
        entry = self._entries.get(key)
        if entry is None or entry[2] <= now:
            return None
        return CachedResponse(SentResponse.from_wire(entry[0]), entry[1], entry[2])

    def put(self, key: TransactionKey, response: Response, ready_at: float, now: float) -> None:
        self._entries[key] = (response.to_bytes(), ready_at, ready_at + self.linger)
        self._entries.move_to_end(key)
        self.purge(now, 16)

    def purge(self, now: float, limit: int = 1024) -> int:
        """Drop up to `limit` entries from the front: expired ones, and any beyond max_entries."""
        entries = self._entries
        dropped = 0
        while entries and dropped < limit:
            _, first = next(iter(entries.items()))
            if first[2] > now and len(entries) <= self.max_entries:
                break
            entries.popitem(last=False)
            dropped += 1
        return dropped

    def __len__(self) -> int:
        return len(self._entries)
