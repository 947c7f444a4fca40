"""Types of `sipload._native`, the compiled core (src/rust/sipload-py, built by maturin).

Text crosses as `str`: the bytes are those `str.encode("utf-8", "surrogateescape")` gives, as in
`sipload.sip`. Parse errors raise `sipload.sip.errors.ParseError`; a digest error (a challenge that cannot
be answered, CR/LF in a value) raises `ValueError`.
"""

from collections.abc import Callable, Sequence
from typing import Any

from sipload.sip.registration import Profile, RegEvent

Param = tuple[str, str | None]
NameAddr = tuple[str, str | None, list[Param]]  # (uri, display name, params)

def hash_hex(algorithm: str, data: bytes) -> str:
    """Lower-case hex digest of `data` with a Digest algorithm name (MD5, SHA-256, SHA-512-256, ...-sess)."""

class Message:
    """A parsed datagram; fields are checked when asked for, as in `sipload.sip.message`."""

    @property
    def is_response(self) -> bool: ...
    @property
    def status(self) -> int | None: ...
    @property
    def reason(self) -> str | None: ...
    @property
    def method(self) -> str | None: ...
    @property
    def uri(self) -> str | None: ...
    @property
    def body(self) -> bytes: ...
    @property
    def headers(self) -> list[tuple[str, str]]:
        """Every header line as (lower-case full name, value)."""
    def get(self, name: str) -> str | None:
        """The first line of a header (any spelling of its name, compact forms too), or None."""
    def call_id(self) -> str: ...
    def cseq(self) -> tuple[int, str]: ...
    def top_via(self) -> tuple[str, str, int | None, list[Param]]:
        """The top Via as (transport, host, port, params)."""
    def branch(self) -> str | None: ...
    def to_tag(self) -> str | None: ...
    def to_addr(self) -> NameAddr: ...
    def from_addr(self) -> NameAddr: ...
    def contacts(self) -> list[NameAddr] | None:
        """The Contact values; None for '*'."""
    def expires(self) -> int | None: ...
    def min_expires(self) -> int | None: ...
    def retry_after(self) -> int | None: ...
    def challenges(self, proxy: bool = False) -> list[Challenge]:
        """The Digest challenges of WWW-Authenticate, or of Proxy-Authenticate with `proxy`."""

def parse_message(data: bytes) -> Message:
    """Parse one datagram; raise `sipload.sip.errors.ParseError` if it is not a SIP message."""

class Challenge:
    """One Digest challenge."""

    @property
    def realm(self) -> str: ...
    @property
    def nonce(self) -> str: ...
    @property
    def algorithm(self) -> str | None:
        """The algorithm's canonical name; None when unsupported."""
    @property
    def algorithm_name(self) -> str: ...
    @property
    def qop(self) -> tuple[str, ...]: ...
    @property
    def opaque(self) -> str | None: ...
    @property
    def stale(self) -> bool: ...
    @property
    def domain(self) -> str | None: ...
    @property
    def userhash(self) -> bool: ...
    @property
    def proxy(self) -> bool: ...
    @property
    def supported(self) -> bool: ...

def parse_challenges(values: Sequence[str], proxy: bool = False) -> list[Challenge]:
    """Every Digest challenge of these header values, in order; other schemes are skipped."""

def choose_challenge(challenges: Sequence[Challenge], preference: Sequence[str] | None = None) -> Challenge | None:
    """The strongest supported challenge (first among equals), or the first in `preference` order."""

class DigestClient:
    """The Digest client of one endpoint (`sipload.sip.digest.DigestClient`'s twin)."""

    def __init__(self, username: str, password: str | None = None, *, ha1: str | None = None,
                 realm_for_ha1: str | None = None, cnonce: Callable[[], str],
                 preference: Sequence[str] | None = None, ha1_algorithm: str | None = None) -> None: ...
    def can_answer(self, challenge: Challenge) -> bool: ...
    def authorize(self, challenge: Challenge, method: str, uri: str, body: bytes = b"") -> tuple[str, str]:
        """(header name, header value) answering `challenge`; ValueError if it cannot be answered."""
    def answer(self, challenges: Sequence[Challenge], method: str, uri: str,
               body: bytes = b"") -> tuple[str, str] | None:
        """Choose (preference, else strongest) and authorize; None if nothing can be answered."""

def build_register(*, registrar_uri: str, transport: str, sent_by: str, branch: str, aor: str, from_tag: str,
                   call_id: str, cseq: int, contact: str, expires: int, user_agent: str, route: str | None = None,
                   supported: str | None = None, authorization: tuple[str, str] | None = None) -> bytes:
    """The REGISTER bytes, as `sipload.sip.registration.Registration` builds them."""

# --- the registration machine (src/rust/sipload-core/src/registration.rs) ------------------------------

class Registration:
    """`sipload.sip.registration.Registration`'s twin: the same table, bytes and events.

    Identifiers come from CPython's `random.Random(seed)` drawn in the Python machine's order (None:
    a seed from os.urandom): `IdSource(random.Random(seed))` gives the Python machine the same ones.
    The digest client is built from `auth_user` (None: no credentials) and the other `DigestClient`
    arguments. Events are the Python event dataclasses; `state` is the `RegState` value. A missing
    transition raises `ProtocolError`; a 200 whose Service-Route/Path/Require does not split raises
    `ParseError`, as the Python machine does.
    """

    def __init__(self, profile: Profile, *, user: str, contact: str, sent_by: str, seed: int | None = None,
                 auth_user: str | None = None, password: str | None = None, ha1: str | None = None,
                 realm_for_ha1: str | None = None, preference: Sequence[str] | None = None,
                 ha1_algorithm: str | None = None, instance: str | None = None, reg_id: int = 1) -> None: ...
    def start(self, now: float) -> None: ...
    def stop(self, now: float) -> None: ...
    def receive(self, response: Message, now: float, arrived: float | None = None) -> bool:
        """Feed a response; False when it does not belong to the current request (stray, late)."""
    def next_timer(self) -> float | None: ...
    def handle_timer(self, now: float) -> None: ...
    def transport_error(self, now: float) -> None: ...
    def flow_failed(self, now: float) -> None: ...
    def _dispatch(self, input: str, response: Message | None, now: float) -> None:
        """One input of the table (a `RegInput` value) fed directly, for tests."""
    def take_outgoing(self) -> list[bytes]: ...
    def take_events(self) -> list[RegEvent]: ...
    @property
    def state(self) -> str:
        """The `RegState` value ("idle", "registering", ...)."""
    @property
    def refresh_due(self) -> float | None: ...
    @property
    def finished(self) -> bool: ...
    @property
    def cseq(self) -> int: ...
    @property
    def bound_until(self) -> float | None: ...
    @property
    def granted_expires(self) -> int | None: ...
    @property
    def service_route(self) -> list[str]: ...
    @property
    def path(self) -> list[str]: ...
    @property
    def user(self) -> str: ...
    @property
    def aor(self) -> str: ...
    @property
    def contact(self) -> str: ...
    @property
    def sent_by(self) -> str: ...
    @property
    def call_id(self) -> str: ...
    @property
    def from_tag(self) -> str: ...
    @property
    def instance(self) -> str | None: ...
    @property
    def reg_id(self) -> int | None: ...
    @property
    def pub_gruu(self) -> str | None: ...
    @property
    def temp_gruu(self) -> str | None: ...
    @property
    def outbound_required(self) -> bool: ...
    @staticmethod
    def table() -> list[tuple[str, str, str, tuple[str, ...]]]:
        """`(state, input, handler name, next states)` per row, as `sipload.sip.registration._TABLE` has them."""

class Waker:
    """Ends a `NativeWorker.run_until` early; callable from any thread while the worker runs."""

    def wake(self) -> None: ...

class NativeWorker:
    """One worker's plain-UDP fleet in one compiled loop (driven by `sipload.engine.native_worker`).

    Built in three steps: the sockets, then profiles and endpoints, then `start()`. A panic inside
    `run_until()` is counted as an internal error (see `counters()`), the fleet stops and its results
    stay readable. While `run_until` runs (in another thread), only its `Waker` may be touched."""

    def __init__(self, locals: Sequence[tuple[str, int]], peer: tuple[str, int],
                 schedule: tuple[object, ...], max_in_flight: int, seed: int) -> None:
        """Sockets bound to `locals` (port 0: any), all sending to `peer`; `schedule` is ("constant", rate),
        ("steps", [(rate, duration), ...]) or ("ramp", from, to, duration). OSError when a bind fails."""
    def local_addresses(self) -> list[tuple[str, int]]: ...
    def timestamps(self) -> bool:
        """Whether every socket reports kernel receive timestamps."""
    def add_profile(self, *, domain: str, registrar_uri: str, expires: int, refresh_at: float,
                    refresh_jitter: float, refresh_margin: float, user_agent: str, t1: float, t2: float, t4: float,
                    max_retries: int, retry_backoff: float, retry_backoff_max: float, unregister_all: bool,
                    reuse_nonce: bool, max_retry_after: float, preference: Sequence[str] | None = None) -> int:
        """A device group's profile; its number for `add_endpoint`."""
    def add_endpoint(self, profile: int, index: int, socket: int, username: str, contact: str, sent_by: str,
                     auth_user: str, password: str) -> None:
        """Endpoint `index` of the scenario, sending from socket number `socket`."""
    def start(self) -> None:
        """Arrivals are due from now on."""
    @staticmethod
    def now() -> float:
        """CLOCK_MONOTONIC in seconds (the clock of `time.monotonic()`)."""
    def waker(self) -> Waker:
        """What ends a `run_until` early, from another thread."""
    def set_pacing(self, quiet_rate: float, busy_rate: float, busy_above: float, burst: float) -> None:
        """Pace `run_until`'s wake-ups: a bucket of `burst` (>= 1) wake-ups refilled at `quiet_rate` a second,
        at `busy_rate` while the worker moves more than `busy_above` datagrams a second (rates > 0, inf:
        unpaced). ValueError otherwise."""
    def run_until(self, until: float) -> tuple[int, int, int, bool, bool]:
        """Step and wait (paced) until `until` (monotonic seconds), a `Waker.wake()` or the end of the stop,
        the GIL released: (steps, datagrams received, datagrams sent, still running, woken). OSError when
        the wait itself fails."""
    def request_stop(self, unregister: bool, timeout: float, end_rate: float) -> bool:
        """End arrivals and unregister (paced at `end_rate`); False when nothing is left to wait for."""
    def take_interval(self) -> dict[str, Any]:
        """What the interval counted: histograms [(phase, kind, [(bucket, count)])], schedule_lag, attempts,
        successes, failures [(phase, reason, n)], responses {code: n}, retransmissions, clamped."""
    def gauges(self, now: float) -> dict[str, int]:
        """registered, in_flight, retries, kernel_drops, stray, send_errors."""
    def counters(self) -> dict[str, Any]:
        """The worker report's counts (arrivals, stray, unparseable, foreign, errors)."""
    def take_reports(self) -> dict[str, Any]:
        """Every endpoint's line as columns, then the machines are released; the worker answers nothing
        after it. Native-endian buffers: "index" (u64), "state" (u8 codes into "state_names"), "last_status"
        (u16, 0: none), "reason" (u8 codes into "reason_names"), "registrations", "refreshes" (u32),
        "call_ids" and "contacts" (one buffer each, row i ending at "call_id_ends"[i] / "contact_ends"[i], u32)."""
    def reports(self, start: int = 0,
                count: int | None = None) -> list[tuple[int, str, int | None, str, int, int, str, str]]:
        """Endpoints start..start + count (every one by default; past the end: fewer): (index, state, last
        status, failure reason, registrations, refreshes, Call-ID, contact)."""
