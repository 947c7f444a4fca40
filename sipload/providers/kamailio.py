"""Kamailio status client: JSON-RPC 2.0 over HTTP (jsonrpcs + xhttp, `POST http://HOST:PORT/RPC`).

Theory of operation
-------------------
Kamailio's usrloc module is the registrar's own view of who is registered. Three RPCs matter:

- ``ul.lookup ["location", user]`` -> ``{"AoR": user, "Contacts": [{"Contact": {...}}]}``. Kamailio
  lower-cases the AoR and drops ``@domain`` (use_domain=0). It lists only *valid* contacts (unexpired
  or permanent) and answers faults (HTTP status = fault code) otherwise:
    * 500 "AOR not found in location table": no record. With usrloc db_mode=0 a REGISTER with
      Expires: 0 deletes the record at once, so "unregistered" and "never registered" look the same
      here -> NOT_REGISTERED.
    * 500 "AOR has no contacts": the record exists but all its contacts expired and the usrloc
      timer has not purged them yet -> EXPIRED.
  A contact's "Expires" is mixed-type: int seconds left, or "permanent" / "expired" / "deleted";
  empty string fields are "[not set]". ``ul.dump`` shows expired/deleted contacts, and other
  versions or db modes may return them from ``ul.lookup`` too, so the mapping handles them:
  any active contact -> REGISTERED, else any expired -> EXPIRED, else any deleted -> UNREGISTERED.
- ``stats.get_statistics ["usrloc:"]`` -> ``["usrloc:registered_users = N", ...]``: cheap count
  (it includes AoRs whose contacts expired until the usrloc timer purges them).
- ``ul.dump ["brief"]``: every AoR; slow on large tables (~29 s for 100k), for small tests only.

``status_from_lookup`` is the pure mapping of one ``ul.lookup`` answer; ``KamailioRpc`` does the I/O
with httpx (runs under trio or asyncio). Every failure to ask or to understand the answer is a
``ProviderError`` naming the URL and what happened.
"""

from __future__ import annotations

import itertools
import json
import re
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import Self

import httpx

from sipload.providers.errors import SNIPPET, connect_reason, snippet
from sipload.providers.status import ContactInfo, ProviderError, ProviderState, RegistrationStatus

DEFAULT_URL = "http://127.0.0.1:5071/RPC"
LOCATION_TABLE = "location"
FAULT_AOR_NOT_FOUND = "AOR not found in location table"
FAULT_AOR_NO_CONTACTS = "AOR has no contacts"
NOT_SET = "[not set]"

_REGISTERED_USERS = re.compile(r"^\s*usrloc:registered_users\s*=\s*(\d+)\s*$")


class KamailioFault(ProviderError):
    """Kamailio answered a JSON-RPC fault (``{"error": {"code", "message"}}``)."""

    def __init__(self, source: str, method: str, code: object, message: str) -> None:
        super().__init__(f"{source}: {method} failed: fault {code}: {message}")
        self.method = method
        self.code = code
        self.fault_message = message


# ---------------------------------------------------------------------------------------------
# Pure mapping of answers
# ---------------------------------------------------------------------------------------------


def _opt_str(contact: Mapping[str, object], key: str) -> str | None:
    value = contact.get(key)
    if value is None or value == NOT_SET or value == "":
        return None
    if isinstance(value, str):
        return value
    return str(value)


def _opt_int(contact: Mapping[str, object], key: str) -> int | None:
    value = contact.get(key)
    if isinstance(value, bool) or not isinstance(value, int):
        return None
    return value


def _expiry(raw: object, source: str) -> tuple[int | None, str, str]:
    """-> (expires_in, raw_expires, kind) with kind in active|expired|deleted|unknown."""
    if isinstance(raw, bool):
        raise ProviderError(f"{source}: malformed contact Expires {raw!r}")
    if isinstance(raw, int):
        if raw > 0:
            return raw, str(raw), "active"
        return 0, str(raw), "expired"
    if isinstance(raw, str):
        if raw == "permanent":
            return None, raw, "active"
        if raw == "expired":
            return 0, raw, "expired"
        if raw == "deleted":
            return 0, raw, "deleted"
        return None, raw, "unknown"  # "[not set]" or something newer
    if raw is None:
        return None, NOT_SET, "unknown"
    raise ProviderError(f"{source}: malformed contact Expires {raw!r}")


def parse_contact(entry: object, source: str = "Kamailio") -> tuple[ContactInfo, str]:
    """Map one ``{"Contact": {...}}`` entry -> (ContactInfo, kind: active|expired|deleted|unknown)."""
    contact = entry.get("Contact") if isinstance(entry, Mapping) else None
    if not isinstance(contact, Mapping):
        raise ProviderError(f"{source}: malformed contact entry (no 'Contact' object): {snippet(entry)}")
    address = contact.get("Address")
    if not isinstance(address, str) or not address:
        raise ProviderError(f"{source}: malformed contact (no 'Address'): {snippet(contact)}")
    expires_in, raw_expires, kind = _expiry(contact.get("Expires"), source)
    reg_id = _opt_int(contact, "Reg-Id")
    info = ContactInfo(
        address=address,
        expires_in=expires_in,
        call_id=_opt_str(contact, "Call-ID"),
        cseq=_opt_int(contact, "CSeq"),
        user_agent=_opt_str(contact, "User-Agent"),
        received=_opt_str(contact, "Received"),
        instance=_opt_str(contact, "Instance"),
        reg_id=reg_id if reg_id else None,  # 0 = no RFC 5626 reg-id
        raw_expires=raw_expires,
    )
    return info, kind


def status_from_lookup(user: str, answer: object, source: str = "Kamailio") -> RegistrationStatus:
    """Map one decoded ``ul.lookup`` JSON-RPC answer (the whole envelope) to a RegistrationStatus.

    Raises ProviderError for faults other than "AOR not found" / "AOR has no contacts" and for
    answers that are not shaped like ul.lookup's.
    """
    if not isinstance(answer, Mapping):
        raise ProviderError(f"{source}: malformed JSON-RPC answer (not an object): {snippet(answer)}")
    if "error" in answer:
        code, message = _fault_parts(answer["error"], source)
        if message == FAULT_AOR_NOT_FOUND:
            return RegistrationStatus(user, ProviderState.NOT_REGISTERED, detail=message)
        if message == FAULT_AOR_NO_CONTACTS:
            return RegistrationStatus(user, ProviderState.EXPIRED, detail=message)
        raise KamailioFault(source, "ul.lookup", code, message)
    if "result" not in answer:
        raise ProviderError(f"{source}: malformed JSON-RPC answer (no result, no error): {snippet(answer)}")
    result = answer["result"]
    if not isinstance(result, Mapping):
        raise ProviderError(f"{source}: malformed ul.lookup result (not an object): {snippet(result)}")
    raw_contacts = result.get("Contacts", [])
    if not isinstance(raw_contacts, list):
        raise ProviderError(f"{source}: malformed ul.lookup result ('Contacts' not a list)")
    parsed = [parse_contact(entry, source) for entry in raw_contacts]
    contacts = tuple(info for info, _ in parsed)
    kinds = {kind for _, kind in parsed}
    if not parsed:
        return RegistrationStatus(user, ProviderState.NOT_REGISTERED, detail="AoR has no contacts")
    if "active" in kinds:
        state = ProviderState.REGISTERED
    elif "expired" in kinds:
        state = ProviderState.EXPIRED
    elif "deleted" in kinds:
        state = ProviderState.UNREGISTERED
    else:
        state = ProviderState.UNKNOWN
    return RegistrationStatus(user, state, contacts)


def registered_users_from_stats(result: object, source: str = "Kamailio") -> int:
    """Parse ``stats.get_statistics ["usrloc:"]``'s result list for ``usrloc:registered_users = N``."""
    items: Sequence[object]
    if isinstance(result, list):
        items = result
    elif isinstance(result, str):
        items = [result]
    else:
        raise ProviderError(f"{source}: malformed stats.get_statistics result: {snippet(result)}")
    for item in items:
        if isinstance(item, str):
            m = _REGISTERED_USERS.match(item)
            if m:
                return int(m.group(1))
    raise ProviderError(f"{source}: stats.get_statistics has no usrloc:registered_users: {snippet(result)}")


def aors_from_dump(result: object, table: str = LOCATION_TABLE, source: str = "Kamailio") -> list[str]:
    """Parse ``ul.dump ["brief"]``'s result: the AoRs of one usrloc table (domain)."""
    domains = result.get("Domains") if isinstance(result, Mapping) else None
    if not isinstance(domains, list):
        raise ProviderError(f"{source}: malformed ul.dump result (no 'Domains' list): {snippet(result)}")
    aors: list[str] = []
    for entry in domains:
        domain = entry.get("Domain") if isinstance(entry, Mapping) else None
        if not isinstance(domain, Mapping):
            raise ProviderError(f"{source}: malformed ul.dump domain entry: {snippet(entry)}")
        if domain.get("Domain") != table:
            continue
        raw_aors = domain.get("AoRs", [])
        if not isinstance(raw_aors, list):
            raise ProviderError(f"{source}: malformed ul.dump domain ('AoRs' not a list)")
        for item in raw_aors:
            aor = item.get("AoR") if isinstance(item, Mapping) else None
            if not isinstance(aor, str):
                raise ProviderError(f"{source}: malformed ul.dump AoR entry: {snippet(item)}")
            aors.append(aor)
    return aors


def _fault_parts(error: object, source: str) -> tuple[object, str]:
    if not isinstance(error, Mapping):
        raise ProviderError(f"{source}: malformed JSON-RPC error: {snippet(error)}")
    message = error.get("message")
    return error.get("code"), message if isinstance(message, str) else repr(message)


# ---------------------------------------------------------------------------------------------
# Client
# ---------------------------------------------------------------------------------------------


class KamailioRpc:
    """Async client of Kamailio's JSON-RPC over HTTP. Use ``async with`` or call ``close()``.

    ``client`` may be a shared httpx.AsyncClient (then it is not closed here); ``timeout`` (s)
    applies to every request either way.
    """

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        timeout: float = 5.0,
        client: httpx.AsyncClient | None = None,
        table: str = LOCATION_TABLE,
    ) -> None:
        try:
            url = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise ProviderError(f"Kamailio JSON-RPC: invalid URL: {exc}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ProviderError(f"Kamailio JSON-RPC: URL must be http(s)://HOST:PORT/RPC, got scheme {url.scheme!r}")
        self._url = url
        # What error messages show: never the userinfo part.
        self.url = str(url.copy_with(username=None, password=None))
        self._source = f"Kamailio JSON-RPC at {self.url}"
        self._timeout = timeout
        self._own_client = client is None
        self._client = client if client is not None else httpx.AsyncClient(timeout=timeout)
        self._ids = itertools.count(1)
        self.table = table

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_client:
            await self._client.aclose()

    # -- RPCs -------------------------------------------------------------------------------

    async def lookup(self, user: str) -> RegistrationStatus:
        """``ul.lookup [table, user]`` -> the user's registration as Kamailio holds it."""
        answer = await self.call_raw("ul.lookup", [self.table, user])
        return status_from_lookup(user, answer, self._source)

    async def registered_users(self) -> int:
        """``usrloc:registered_users`` from ``stats.get_statistics ["usrloc:"]``."""
        return registered_users_from_stats(await self.call("stats.get_statistics", ["usrloc:"]), self._source)

    async def dump_aors(self) -> list[str]:
        """Every AoR in the table (``ul.dump ["brief"]``). Slow on big tables: small tests only."""
        return aors_from_dump(await self.call("ul.dump", ["brief"]), self.table, self._source)

    async def version(self) -> str:
        """``core.version``, e.g. "kamailio 5.6.3 (x86_64/linux)"."""
        result = await self.call("core.version")
        if not isinstance(result, str):
            raise ProviderError(f"{self._source}: malformed core.version result: {snippet(result)}")
        return result.strip()

    async def call(self, method: str, params: Sequence[object] = ()) -> object:
        """One RPC -> its ``result``; a fault raises KamailioFault (a ProviderError)."""
        answer = await self.call_raw(method, params)
        if "error" in answer:
            code, message = _fault_parts(answer["error"], self._source)
            raise KamailioFault(self._source, method, code, message)
        if "result" not in answer:
            raise ProviderError(f"{self._source}: {method}: malformed JSON-RPC answer (no result, no error)")
        return answer["result"]

    async def call_raw(self, method: str, params: Sequence[object] = ()) -> Mapping[str, object]:
        """One RPC -> the decoded JSON-RPC envelope (with "result" or "error")."""
        body = {"jsonrpc": "2.0", "method": method, "params": list(params), "id": next(self._ids)}
        where = f"{self._source}: {method}"
        try:
            response = await self._client.post(self._url, json=body, timeout=self._timeout)
        except httpx.TimeoutException as exc:
            raise ProviderError(f"{where}: no answer within {self._timeout:g} s ({type(exc).__name__})") from None
        except httpx.ConnectError as exc:
            raise ProviderError(f"{where}: cannot connect ({connect_reason(exc)})") from None
        except httpx.HTTPError as exc:
            raise ProviderError(f"{where}: HTTP transport error: {type(exc).__name__}: {exc}") from None
        try:
            answer: object = json.loads(response.content)
        except (ValueError, UnicodeDecodeError):
            answer = None
        # Kamailio sends faults with the HTTP status set to the fault code (500): a JSON-RPC
        # envelope is the answer whatever the status.
        if isinstance(answer, Mapping) and ("result" in answer or "error" in answer):
            return answer
        status = f"HTTP {response.status_code} {response.reason_phrase}".rstrip()
        text = response.content[:SNIPPET].decode("utf-8", "replace")
        if response.is_error:
            raise ProviderError(f"{where}: {status}: {text!r}")
        if answer is None:
            raise ProviderError(f"{where}: malformed JSON in answer ({status}): {text!r}")
        raise ProviderError(f"{where}: not a JSON-RPC answer ({status}): {text!r}")
