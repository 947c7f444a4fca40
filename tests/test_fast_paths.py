"""The hot path's shortcuts give exactly what the general code gives.

Each shortcut handles the usual shape of a value and falls back to the general code otherwise; these
tests feed both random mixtures of the usual and the unusual and compare the results (or the errors).
"""

from __future__ import annotations

import random

import pytest

from sipload.sip import headers
from sipload.sip.digest import _parse_auth_list, _scan_auth_list
from sipload.sip.errors import ParseError
from sipload.sip.granted import MAX_DELTA, contact_key, granted_expiry
from sipload.sip.ids import IdSource
from sipload.sip.message import Headers, Response
from sipload.sip.registration import Profile, Registration


def _outcome(f, value):  # type: ignore[no-untyped-def]
    try:
        return f(value)
    except ParseError:
        return "ParseError"


def _general_cseq(value: str) -> tuple[int, str]:
    m = headers._CSEQ_RE.fullmatch(value)
    if m is None:
        parts = headers._LWS_RE.split(value.strip(" \t"))
        if len(parts) == 2 and headers.is_token(parts[1]):
            return headers._digits(parts[0], "CSeq number", value, 2**31 - 1), parts[1]
        raise ParseError("invalid CSeq")
    number = int(m.group(1))
    if number >= 2**31:
        raise ParseError("out of range")
    return number, m.group(2)


def test_cseq_shortcut_matches_the_expression() -> None:
    rng = random.Random(1)
    pieces = ["1", "0", "2147483647", "2147483648", "00000000001", "12345678901", " ", "  ", "\t",
              "REGISTER", "INVITE", "register", "\u0661", "x", ""]
    for _ in range(20_000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 4)))
        assert _outcome(headers.parse_cseq, value) == _outcome(_general_cseq, value), value


def test_auth_list_shortcut_matches_the_scanner() -> None:
    rng = random.Random(2)
    pieces = ["Digest", "Basic", " ", ", ", ",", "realm=", "nonce=", "qop=", '"x"', '"a, b=c"', '"\\"q"',
              "abc", "==", '"', 'realm="r"', 'nonce="n"', "x=y", "\r\n", "algorithm=MD5", '""', "tok68=="]
    for _ in range(20_000):
        value = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 8)))
        assert _outcome(_parse_auth_list, value) == _outcome(_scan_auth_list, value), value


def _general_granted(reg: Registration, response: Response) -> int:
    """granted.granted_expiry without its shortcut (the general code the shortcut must equal)."""
    try:
        contacts = response.contacts() or []
        ours = contact_key(reg.contact)
        for addr in contacts:
            if contact_key(addr.uri) == ours:
                value = addr.params.get("expires")
                if value is not None and value.isascii() and value.isdigit():
                    return min(int(value), MAX_DELTA) if len(value) <= 10 else MAX_DELTA
                break
        header = response.expires()
    except ParseError:
        header = None
    return header if header is not None else reg.profile.expires


@pytest.mark.parametrize("mine", [
    "sip:user1@127.0.0.1:50320;transport=udp", "sip:a@b", " sip:a@b", "sip:a>b@c", "sip:x@y;expires=3",
])
def test_granted_expiry_shortcut_matches_the_general_path(mine: str) -> None:
    rng = random.Random(mine)
    reg = Registration(Profile(domain="d", registrar_uri="sip:d", expires=1800), user="u", contact=mine,
                       sent_by="h:1", auth=None, ids=IdSource(random.Random(3)))
    tails = ["3600", "0", "", "12a", "99999999999", "5;q=1", "\u0661\u0662", "5, <sip:x@y>", "5 "]
    pieces = ["<", ">", ";expires=", "3600", ",", " ", mine, "sip:a@b", '"x"', ";q=1", "*", f"<{mine}>"]
    for _ in range(3_000):
        if rng.random() < 0.5:
            line = f"<{mine}>;expires={rng.choice(tails)}"
        else:
            line = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 6)))
        items = [("Contact", line)] + ([("Expires", rng.choice(["42", "x"]))] if rng.random() < 0.5 else [])
        response = Response(200, "OK", Headers(items))
        assert granted_expiry(response, reg.contact, reg.profile.expires) == _general_granted(reg, response), line


def _reference_items(head: str) -> list[tuple[str, str]]:
    """The general header loop: one line at a time, the first problem raised."""
    from sipload.sip.headers import KNOWN_KEYS
    from sipload.sip.parser import _slow_key

    items = []
    length = None
    for line in head.split("\n")[1:]:
        name, colon, value = line.partition(":")
        if not colon:
            shown = line.rstrip(" \t\r")[:60]
            raise ParseError(f"header line without a colon: {shown!r}")
        key = KNOWN_KEYS.get(name) or _slow_key(name)
        value = value.strip(" \t\r")
        if key == "content-length":
            if length is not None and value != length:
                raise ParseError(f"conflicting Content-Length values {length[:20]!r} and {value[:20]!r}")
            length = value
        items.append((key, value))
    return items


def test_header_lines_parse_as_the_line_by_line_loop() -> None:
    from sipload.sip.parser import parse_message

    rng = random.Random(4)
    lines = ["Via: SIP/2.0/UDP h;branch=z9hG4bK1", "i: abc", "CSeq: 1 REGISTER", "nocolon", "Bad Name: x",
             "X-Odd_Name!: y", "Content-Length: 0", "l: 0", "Content-Length: 5", "To:<sip:a@b>", "v :x",
             "From: \t<sip:a@b>;tag=1 \t", ": empty name"]
    for _ in range(5_000):
        head = "SIP/2.0 200 OK\r\n" + "\r\n".join(rng.choice(lines) for _ in range(rng.randint(1, 6)))
        data = (head + "\r\n\r\n").encode()
        try:
            got: object = parse_message(data).headers.items()
        except ParseError as exc:
            got = str(exc)
        try:
            want: object = _reference_items(head.replace("\r\n", "\n"))
        except ParseError as exc:
            want = str(exc)
        if isinstance(want, list) and isinstance(got, str) and "Content-Length" in got:
            continue  # a body shorter than Content-Length: the datagram's problem, not the header loop's
        assert got == want, head
