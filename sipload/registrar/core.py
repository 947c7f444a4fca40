"""The embedded registrar's protocol core, sans-IO: one request in, one response (or none) out.

Theory of operation
-------------------
`RegistrarCore.handle(request, source, transport, now)` returns an `Outcome`: the response to
send (None: nothing to send) and the delay to wait before sending it. No clock, no socket: the
server (trio) or a test's in-memory network does the sending, at `now + delay`.

In order, for every request:

1. fault injection: a `drop` share of requests vanishes (as if lost on the way in);
2. ACK gets nothing, nor OPTIONS with `ignore_options` (as SBCs that drop them from strangers);
   a request without the mandatory headers (Via, From, To, Call-ID, CSeq whose method matches) gets
   400 with the problem in the reason phrase;
3. UDP retransmissions are answered from the response cache (`retransmissions.py`);
4. fault injection: an `error_503` share is answered 503 (with Retry-After);
5. REGISTER follows RFC 3261 §10.3: digest authentication (401 challenge; stale=true for an
   expired nonce; wrong password -> 401 again and the user marked REJECTED; credentials of
   another digest username than the To user -> 403 unless `allow_user_mismatch`), then 420 for
   an unsupported Require, then Contact / Expires (400 when malformed, 423 + Min-Expires below
   the minimum, clamped to the maximum, `*` only with Expires: 0), then the binding store (500
   when a binding with the same Call-ID has a CSeq not lower: RFC 3261 §10.3 step 7's failed
   update). The 200 lists every live contact of the AoR with `;expires=`, and echoes Path.
   With `Supported: gruu` (and `settings.gruu`), every listed contact that has a
   `+sip.instance` carries `pub-gruu` (the AoR with `;gr=` the instance URN) and `temp-gruu` (an
   opaque `sip:tgruu.<hash>@domain;gr`, new for each Call-ID), RFC 5627 §5. With `Supported:
   outbound` (and `settings.outbound`) and a Contact with `+sip.instance` and `reg-id`, the 200 has
   `Require: outbound` (RFC 5626 §6); bindings are keyed by instance and reg-id in any case
   (`bindings.binding_key`), so an unregister with them removes only that flow.
   OPTIONS -> 200 (counted: keep-alive pings); CANCEL -> 481; any other method -> 405 with Allow;
6. the delay is drawn from `settings.delay` for every new response.

A challenge over `settings.challenge_rate` per source IP (`ratelimit.py`) is not sent at all.

Responses get a To tag and, on the top Via, `received` / `rport` (RFC 3261 §18.2.1, RFC 3581).
The core never raises on a request it can parse: parse problems inside header values become 400.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from sipload.registrar.bindings import (
    Address,
    Binding,
    BindingStore,
    ContactChange,
    RequestInfo,
    UpdateResult,
    UpdateStatus,
)
from sipload.registrar.ratelimit import ChallengeLimiter
from sipload.registrar.retransmissions import ResponseCache, SentResponse, TransactionKey, transaction_key
from sipload.registrar.settings import RegistrarSettings
from sipload.registrar.stats import RegistrarCounters
from sipload.sip.digest import Credentials, DigestServer, Verdict, parse_credentials
from sipload.sip.errors import ParseError
from sipload.sip.headers import format_params, parse_uri, split_list, unquote
from sipload.sip.message import Headers, Request, Response, response_to
from sipload.sip.parser import parse_message

ALLOW = "REGISTER, OPTIONS"
SUPPORTED = ("path", "outbound", "gruu")  # what the registrar can do; settings may turn outbound / gruu off
SERVER = "sipload-registrar"
_REJECTING = (Verdict.WRONG_RESPONSE, Verdict.UNKNOWN_USER)
_KNOWN_METHODS = frozenset({"REGISTER", "OPTIONS", "ACK", "CANCEL", "INVITE", "BYE", "SUBSCRIBE", "NOTIFY",
                            "MESSAGE", "INFO", "PUBLISH", "PRACK", "UPDATE", "REFER"})  # others: "other"
_BARE_RPORT = re.compile(r";[ \t]*rport(?=[ \t]*(?:;|$))", re.IGNORECASE)


class _RateLimited(Exception):
    """A challenge over the per-source rate limit (settings.challenge_rate): send nothing."""


@dataclass(frozen=True, slots=True)
class Outcome:
    response: Response | None      # None: send nothing
    delay: float = 0.0             # seconds to wait before sending
    note: str = ""                 # why there is nothing to send, for logs and tests


def _reason(text: str) -> str:
    """Text fit for a reason phrase: printable ASCII, bounded."""
    clean = "".join(ch if " " <= ch <= "~" else "?" for ch in text)
    return clean[:120]


def _bad(detail: str) -> str:
    return _reason(f"Bad Request ({detail})")


def _same_uri(a: str, b: str) -> bool:
    if a == b:
        return True
    try:
        ua, ub = parse_uri(a), parse_uri(b)
    except ParseError:
        return False
    return (ua.scheme, ua.user, ua.host.lower(), ua.port) == (ub.scheme, ub.user, ub.host.lower(), ub.port)


class RegistrarCore:
    """See the module docstring. `store` and `counters` are public: servers and tests read them."""

    def __init__(self, settings: RegistrarSettings, *, now: float, rng: random.Random | None = None) -> None:
        self.settings = settings
        self.started_at = now
        self._rng = rng if rng is not None else random.Random(settings.seed)
        self.store = BindingStore(max_contacts=settings.max_contacts, max_history=settings.max_history)
        self.counters = RegistrarCounters()
        secret = self._rng.randbytes(32)
        self.digest = DigestServer(
            settings.realm, secret, nonce_lifetime=settings.nonce_lifetime,
            algorithms=settings.algorithms, qop=("auth",), allow_no_qop=settings.allow_no_qop,
            random=self._rng.randbytes,
        )
        self._cache = ResponseCache(settings.transaction_linger, settings.max_transactions)
        self._limiter = (ChallengeLimiter(settings.challenge_rate, settings.challenge_burst)
                         if settings.challenge_rate > 0 else None)
        self.supported = ("path", *(("outbound",) if settings.outbound else ()), *(("gruu",) if settings.gruu else ()))
        # temp-gruu: a keyed hash, nothing stored (the key derived: the seeded sequence is unchanged)
        self._gruu_key = hashlib.blake2s(secret, person=b"tgruu").digest()[:16]

    # --- entry points -------------------------------------------------------------------------
    def handle_bytes(self, data: bytes, source: Address, transport: str, now: float) -> Outcome:
        """A datagram: parse it, then `handle` it. Unparsable bytes and responses get nothing."""
        try:
            message = parse_message(data)
        except ParseError as exc:
            self.counters.parse_errors += 1
            return Outcome(None, note=f"parse error: {exc}")
        if isinstance(message, Response):
            self.counters.stray_responses += 1
            return Outcome(None, note="stray response")
        return self.handle(message, source, transport, now)

    def handle(self, request: Request, source: Address, transport: str, now: float) -> Outcome:
        settings, counters, rng = self.settings, self.counters, self._rng
        counters.received[request.method if request.method in _KNOWN_METHODS else "other"] += 1
        if settings.drop and rng.random() < settings.drop:
            counters.drops += 1
            return Outcome(None, note="dropped (fault injection)")
        if request.method == "ACK":
            return Outcome(None, note="ACK gets no response")
        if settings.ignore_options and request.method == "OPTIONS":
            return Outcome(None, note="OPTIONS ignored (--ignore-options)")
        problem = self._missing_headers(request)
        if problem is not None:
            return self._finish(self._reply(request, 400, _bad(problem), source), None, now)
        key = transaction_key(request) if transport == "udp" else None
        if key is not None:
            cached = self._cache.get(key, now)
            if cached is not None:
                counters.retransmissions += 1
                if cached.ready_at > now:
                    return Outcome(None, note="retransmission absorbed (response pending)")
                counters.responses[cached.response.status] += 1
                return Outcome(cached.response, 0.0, note="retransmission answered")
        if settings.error_503 and rng.random() < settings.error_503:
            counters.injected_503 += 1
            response = self._reply(request, 503, None, source)
            if settings.retry_after is not None:
                response.headers.add("Retry-After", str(settings.retry_after))
        else:
            try:
                response = self._dispatch(request, source, transport, now)
            except _RateLimited:  # over the per-source challenge rate: no answer (no reflection)
                counters.challenges_limited += 1
                return Outcome(None, note="challenge rate-limited (per source)")
        return self._finish(response, key, now)

    def tick(self, now: float) -> None:
        """Periodic upkeep (the server calls it every second): bounded purges."""
        self.store.purge(now, 4096)
        self._cache.purge(now, 4096)

    # --- steps --------------------------------------------------------------------------------
    def _finish(self, response: Response, key: TransactionKey | None, now: float) -> Outcome:
        delay = self.settings.delay.sample(self._rng)
        self.counters.responses[response.status] += 1
        if key is not None:
            response = SentResponse.serialized(response)  # serialized once, for the cache and the wire
            self._cache.put(key, response, now + delay, now)
        self.store.purge(now, 4)  # amortized expiry sweep
        return Outcome(response, delay)

    @staticmethod
    def _missing_headers(request: Request) -> str | None:
        try:
            request.top_via  # noqa: B018 - parses and validates
            request.from_addr  # noqa: B018
            request.to_addr  # noqa: B018
            request.call_id  # noqa: B018
            _, method = request.cseq
        except ParseError as exc:
            return str(exc)
        if method != request.method.upper():
            return f"CSeq method {method} does not match {request.method}"
        return None

    def _dispatch(self, request: Request, source: Address, transport: str, now: float) -> Response:
        method = request.method
        if method == "REGISTER":
            try:
                return self._register(request, source, transport, now)
            except ParseError as exc:
                return self._reply(request, 400, _bad(str(exc)), source)
        if method == "OPTIONS":
            self.counters.options_answered += 1  # UDP keep-alive pings are OPTIONS
            response = self._reply(request, 200, None, source)
            response.headers.add("Allow", ALLOW)
            response.headers.add("Supported", ", ".join(self.supported))
            return response
        if method == "CANCEL":
            return self._reply(request, 481, None, source)
        response = self._reply(request, 405, None, source)
        response.headers.add("Allow", ALLOW)
        return response

    def _register(self, request: Request, source: Address, transport: str, now: float) -> Response:
        try:
            to_uri = parse_uri(request.to_addr.uri)
        except ParseError as exc:
            return self._reply(request, 400, _bad(f"To: {exc}"), source)
        if not to_uri.user:
            return self._reply(request, 400, _bad("To URI without a user"), source)
        user = to_uri.user
        aor = f"{to_uri.scheme}:{user}@{to_uri.hostport.lower()}"
        auth = self._authenticate(request, user, source, now)
        if isinstance(auth, Response):
            return auth
        unsupported = [t for t in request.headers.get_list("require") if t.lower() not in self.supported]
        if unsupported:
            response = self._reply(request, 420, None, source)
            response.headers.add("Unsupported", ", ".join(unsupported))
            return response
        contacts = request.contacts()
        header_expires = request.expires()
        info = RequestInfo(
            call_id=request.call_id, cseq=request.cseq[0], source=source, transport=transport,
            user_agent=request.headers.get("user-agent"), path=tuple(request.headers.get_list("path")),
        )
        if contacts is None:
            if header_expires != 0:
                return self._reply(request, 400, _bad("Contact: * needs Expires: 0"), source)
            result = self.store.remove_all(aor, user, info, now)
        elif not contacts:
            result = UpdateResult(UpdateStatus.OK, self.store.bindings(aor, now))
        else:
            changes: list[ContactChange] = []
            too_brief = False
            briefest = 0
            for contact in contacts:
                parse_uri(contact.uri)  # ParseError -> 400
                raw = contact.params.get("expires")
                if raw is not None:
                    if not (raw.isascii() and raw.isdigit()):
                        return self._reply(request, 400, _bad(f"invalid Contact expires {raw!r}"), source)
                    expires = int(raw)
                elif header_expires is not None:
                    expires = header_expires
                else:
                    expires = self.settings.default_expires
                if 0 < expires < self.settings.min_expires:
                    briefest = expires if not too_brief else min(briefest, expires)
                    too_brief = True
                instance = contact.params.get("+sip.instance")
                if instance is not None and instance.startswith('"'):
                    instance = unquote(instance)
                changes.append(ContactChange(contact.uri, min(expires, self.settings.max_expires),
                                             instance, contact.params.get("reg-id")))
            if too_brief:
                self.counters.too_brief += 1
                before = self.counters.briefest_asked
                self.counters.briefest_asked = min(before, briefest) if before else briefest
                response = self._reply(request, 423, None, source)
                response.headers.add("Min-Expires", str(self.settings.min_expires))
                return response
            result = self.store.register(aor, user, changes, info, now)
        if result.status is UpdateStatus.OUT_OF_ORDER:
            return self._reply(request, 500, "Server Internal Error (CSeq out of order)", source)
        if result.status is UpdateStatus.TOO_MANY:
            return self._reply(request, 403, f"Forbidden (more than {self.settings.max_contacts} contacts)",
                               source)
        response = self._reply(request, 200, None, source)
        supported = request.headers.get("supported")
        gruu = outbound = False
        if supported is not None:  # the UA's options, read only when it names any
            tags = {t.lower() for t in request.headers.get_list("supported")}
            gruu = "gruu" in tags and "gruu" in self.supported
            outbound = ("outbound" in tags and "outbound" in self.supported and contacts is not None
                        and any(c.params.get("reg-id") is not None and c.params.get("+sip.instance") is not None
                                for c in contacts))
        gruus = 0
        for binding in result.bindings:
            value = _contact_value(binding, now)
            if gruu and binding.instance is not None:
                value += self._gruu_params(aor, to_uri.hostport.lower(), binding)
                gruus += 1
            response.headers.add("Contact", value)
        for path in info.path:
            response.headers.add("Path", path)
        if outbound:
            response.headers.add("Require", "outbound")
            self.counters.outbound_registers += 1
        if gruus:
            self.counters.gruu_registers += 1
        return response

    def _gruu_params(self, aor: str, host: str, binding: Binding) -> str:
        """;pub-gruu and ;temp-gruu of a binding with an instance (RFC 5627 §5)."""
        instance = binding.instance or ""
        urn = instance[1:-1] if instance.startswith("<") and instance.endswith(">") else instance
        digest = hashlib.blake2s(f"{aor}|{instance}|{binding.call_id}".encode(), key=self._gruu_key,
                                 digest_size=10).hexdigest()
        return f';pub-gruu="{aor};gr={urn}";temp-gruu="sip:tgruu.{digest}@{host};gr"'

    def _authenticate(self, request: Request, user: str, source: Address,
                      now: float) -> Credentials | Response:
        counters = self.counters
        credentials: Credentials | None = None
        for value in request.headers.get_all("authorization"):
            try:
                parsed = parse_credentials(value)
            except ParseError as exc:
                counters.auth_failures["malformed_header"] += 1
                return self._reply(request, 400, _bad(f"Authorization: {exc}"), source)
            if parsed.realm == self.settings.realm:
                credentials = parsed
                break
        if credentials is None:
            return self._challenge(request, source, now, stale=False)
        if not _same_uri(credentials.uri, request.uri):
            counters.auth_failures["uri_mismatch"] += 1
            return self._reply(request, 400, _bad("digest uri does not match the Request-URI"), source)
        verdict = self.digest.verify(request.method, credentials, self.settings.password_for, now)
        if verdict is Verdict.OK:
            if credentials.username != user and not self.settings.allow_user_mismatch:
                counters.auth_failures["user_mismatch"] += 1
                self.store.mark_rejected(user, now)
                return self._reply(request, 403, "Forbidden (digest username does not match the To user)",
                                   source)
            counters.auth_ok += 1
            return credentials
        counters.auth_failures[verdict.value] += 1
        if verdict in _REJECTING:
            self.store.mark_rejected(user, now)
        return self._challenge(request, source, now, stale=verdict is Verdict.STALE)

    def _challenge(self, request: Request, source: Address, now: float, *, stale: bool) -> Response:
        if self._limiter is not None and not self._limiter.allow(source[0], now):
            raise _RateLimited
        self.counters.challenges += 1
        if stale:
            self.counters.stale_challenges += 1
        response = self._reply(request, 401, None, source)
        for value in self.digest.challenges(now, stale=stale):
            response.headers.add("WWW-Authenticate", value)
        return response

    def _reply(self, request: Request, status: int, reason: str | None, source: Address) -> Response:
        response = response_to(request, status, reason, to_tag=f"{self._rng.getrandbits(48):012x}")
        response.headers.add("Server", SERVER)
        _mark_via(response, request, source)
        return response


def _contact_value(binding: Binding, now: float) -> str:
    params: dict[str, str | None] = {"expires": str(binding.expires_in(now))}
    if binding.instance is not None:
        params["+sip.instance"] = f'"{binding.instance}"'
    if binding.reg_id is not None:
        params["reg-id"] = binding.reg_id
    return f"<{binding.contact}>{format_params(params)}"


def _mark_via(response: Response, request: Request, source: Address) -> None:
    """Add received= (and rport= when asked for) to the top Via of the response, text otherwise kept."""
    try:
        via = request.top_via
    except ParseError:
        return
    wants_rport = "rport" in via.params and not via.params["rport"]
    if via.host == source[0] and not wants_rport:
        return
    items = response.headers.items()
    for i, (name, value) in enumerate(items):
        if name != "via":
            continue
        top, *others = split_list(value)  # the top Via is the first element of the first line
        if "received" in via.params:
            top = str(type(via)(via.transport, via.host, via.port, {**via.params, "received": source[0]}))
        else:
            top = f"{top};received={source[0]}"
        if wants_rport:
            top = _BARE_RPORT.sub(f";rport={source[1]}", top, count=1)
        items[i] = (name, ", ".join([top, *others]))
        break
    response.headers = Headers(items)
