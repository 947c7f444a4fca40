"""Micro-benchmarks of the SIP message codec on the registration hot path.

    python bench/codec.py [--number 20000] [--repeat 7]
    python bench/codec.py --smoke      # 200 iterations, once: well under a second

Prints the median (and best) CPU µs per operation over `repeat` timeit runs of `number` iterations
(process CPU time, so that other processes on the machine do not inflate the figures):
  - parse a Kamailio 401 to REGISTER and extract status, Call-ID, CSeq, branch and the
    WWW-Authenticate value, then the same with the challenge parsed (parse_challenges);
  - parse a Kamailio 200 OK to REGISTER and extract the granted expiry from our Contact's expires;
  - build an authenticated REGISTER (construct a Request, then to_bytes).
Target: 401 with its fields <= 10 µs.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
import timeit
from collections.abc import Callable, Sequence
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sipload.sip.digest import parse_challenges
from sipload.sip.headers import parse_delta
from sipload.sip.message import Request
from sipload.sip.parser import parse_message

TARGET_401_US = 10.0

# Kamailio 5.6 with the default kamailio.cfg (auth with qop, NAT handling, server signature).
KAMAILIO_401 = (
    b"SIP/2.0 401 Unauthorized\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.20:5060;rport=40312;received=203.0.113.7;branch=z9hG4bK.Yw3tRkIcz\r\n"
    b"From: <sip:alice@sip.example.com>;tag=a73kszlfl\r\n"
    b"To: <sip:alice@sip.example.com>;tag=b27e1a1d33761e85846fc98f5f3a7e58.0f0d8b46\r\n"
    b"Call-ID: 7Ixw1Zq5QD@192.168.1.20\r\n"
    b"CSeq: 20 REGISTER\r\n"
    b'WWW-Authenticate: Digest realm="sip.example.com", '
    b'nonce="ZTRjMWE1ZmUwMDAwMDAwMDRmMzRjNjU5ZWQ2NGI5MmQ=", qop="auth"\r\n'
    b"Server: kamailio (5.6.3 (x86_64/linux))\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
OUR_CONTACT = "sip:alice@192.168.1.20:5060;transport=udp"
KAMAILIO_200 = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP 192.168.1.20:5060;rport=40312;received=203.0.113.7;branch=z9hG4bK.Qp2mHt0aE\r\n"
    b"From: <sip:alice@sip.example.com>;tag=a73kszlfl\r\n"
    b"To: <sip:alice@sip.example.com>;tag=b27e1a1d33761e85846fc98f5f3a7e58.8c1d2e46\r\n"
    b"Call-ID: 7Ixw1Zq5QD@192.168.1.20\r\n"
    b"CSeq: 21 REGISTER\r\n"
    b"Contact: <sip:alice@192.168.1.20:5060;transport=udp>;expires=3600;"
    b'received="sip:203.0.113.7:40312"\r\n'
    b"Server: kamailio (5.6.3 (x86_64/linux))\r\n"
    b"Content-Length: 0\r\n"
    b"\r\n"
)
AUTHORIZATION = (
    'Digest username="alice", realm="sip.example.com", nonce="ZTRjMWE1ZmUwMDAwMDAwMDRmMzRjNjU5ZWQ2NGI5MmQ=", '
    'uri="sip:sip.example.com", response="6629fae49393a05397450978507c4ef1", algorithm=MD5, '
    'cnonce="0a4f113b", qop=auth, nc=00000001'
)


def parse_401() -> object:
    msg = parse_message(KAMAILIO_401)
    return msg.status, msg.call_id, msg.cseq, msg.branch, msg.headers.get_all("www-authenticate")  # type: ignore[union-attr]


def parse_401_challenge() -> object:
    msg = parse_message(KAMAILIO_401)
    fields = msg.status, msg.call_id, msg.cseq, msg.branch  # type: ignore[union-attr]
    return fields, parse_challenges(msg.headers.get_all("www-authenticate"))


def parse_200() -> int:
    msg = parse_message(KAMAILIO_200)
    _ = msg.status, msg.call_id, msg.cseq, msg.branch  # type: ignore[union-attr]
    for contact in msg.contacts() or []:
        if contact.uri == OUR_CONTACT:
            return parse_delta(contact.params.get("expires") or "", "expires")
    raise AssertionError("our contact is missing")


def build_register() -> bytes:
    return Request("REGISTER", "sip:sip.example.com", [
        ("Via", "SIP/2.0/UDP 192.168.1.20:5060;branch=z9hG4bK.9f8e7d6c5b4a3921;rport"),
        ("Max-Forwards", "70"),
        ("From", "<sip:alice@sip.example.com>;tag=a73kszlfl"),
        ("To", "<sip:alice@sip.example.com>"),
        ("Call-ID", "7Ixw1Zq5QD@192.168.1.20"),
        ("CSeq", "21 REGISTER"),
        ("Contact", f"<{OUR_CONTACT}>"),
        ("Expires", "3600"),
        ("Authorization", AUTHORIZATION),
        ("User-Agent", "sipload/0.1"),
    ]).to_bytes()


def measure(cases: Sequence[Callable[[], object]], number: int, repeat: int) -> list[tuple[float, float]]:
    """(median, best) µs per call of each case; the runs are interleaved so that all cases see the
    same machine (its speed drifts when other processes share the CPU)."""
    for fn in cases:
        fn()  # warm up, and fail early if it raises
    runs: list[list[float]] = [[] for _ in cases]
    for _ in range(repeat):
        for fn, times in zip(cases, runs, strict=True):
            times.append(timeit.timeit(fn, number=number, timer=time.process_time) / number * 1e6)
    return [(statistics.median(times), min(times)) for times in runs]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--number", type=int, default=20_000, help="iterations per run (default 20000)")
    parser.add_argument("--repeat", type=int, default=7, help="runs (default 7)")
    parser.add_argument("--smoke", action="store_true",
                        help="200 iterations, once, to show that the script still runs: its figures measure nothing")
    args = parser.parse_args(argv)
    if args.smoke:
        args.number, args.repeat = 200, 1
    assert parse_200() == 3600
    cases: list[tuple[str, Callable[[], object]]] = [
        ("(machine reference: sum(range(100)))", lambda: sum(range(100))),
        ("parse 401 + status, call_id, cseq, branch, WWW-Auth", parse_401),
        ("parse 401 + those fields + parse_challenges", parse_401_challenge),
    ]
    cases += [("parse 200 + Contact expires", parse_200), ("build authenticated REGISTER", build_register)]
    print(f"codec, Python {sys.version.split()[0]}: median (best) CPU µs per op, "
          f"{args.repeat} x {args.number:,} iterations")
    results = measure([fn for _, fn in cases], args.number, args.repeat)
    for (label, _), (median, best) in zip(cases, results, strict=True):
        print(f"  {label:<52} {median:6.2f}  ({best:.2f})")
    median_401, best_401 = results[1]
    verdict = "met" if median_401 <= TARGET_401_US else "NOT met"
    print(f"target: 401 with its fields <= {TARGET_401_US:.0f} µs: {verdict} "
          f"(median {median_401:.2f} µs, best {best_401:.2f} µs)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
