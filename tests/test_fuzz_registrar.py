"""Fuzzing the codec, the registration machine and the embedded registrar (hypothesis, and atheris
when it is installed): only ParseError or a SIP error response, never a crash. The hostile corpus
(tests/data/hostile/, written by `python tests/hostile_registrar.py`) is replayed as regression tests.
"""

from __future__ import annotations

import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from fuzz_targets import aimed, client_target, new_registration, registrar_target
from hostile_registrar import CORPUS_REQUEST, HOSTILE_REQUESTS, corpus_responses
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from sipload.registrar.core import RegistrarCore
from sipload.registrar.settings import RegistrarSettings
from sipload.sip.digest import DigestClient, parse_challenges
from sipload.sip.errors import ParseError
from sipload.sip.message import Request, Response
from sipload.sip.parser import parse_message

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "data" / "hostile"
RESPONSES = sorted((CORPUS / "responses").glob("*.sip"))
REQUESTS = sorted((CORPUS / "requests").glob("*.sip"))
SEEDS = [p.read_bytes() for p in RESPONSES]


# --- the corpus, as regression tests ---------------------------------------------------------------

def test_the_corpus_on_disk_is_what_the_hostile_registrar_sends() -> None:
    on_disk = {p.stem: p.read_bytes() for p in RESPONSES}
    assert on_disk == corpus_responses(), "regenerate: python tests/hostile_registrar.py"
    assert {p.stem: p.read_bytes() for p in REQUESTS} == HOSTILE_REQUESTS


@pytest.mark.parametrize("path", RESPONSES, ids=lambda p: p.stem)
def test_corpus_response_never_crashes_an_endpoint(path: Path) -> None:
    client_target(path.read_bytes())


@pytest.mark.parametrize("path", [*RESPONSES, *REQUESTS], ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_corpus_datagram_gets_an_error_response_or_nothing_from_the_registrar(path: Path) -> None:
    registrar_target(path.read_bytes())


def test_huge_and_odd_expiry_values_are_bounded_not_a_crash() -> None:
    for name, granted in (("expires-param-huge", 2**32 - 1), ("expires-unicode-digit", 60)):
        reg, request = new_registration()
        response = parse_message(aimed((CORPUS / "responses" / f"{name}.sip").read_bytes(), request))
        assert isinstance(response, Response)
        assert reg.receive(response, 0.01)
        assert reg.granted_expires == granted       # capped at 2**32-1; '²' is not a number: what we asked
        assert reg.next_timer() is not None


# --- hypothesis --------------------------------------------------------------------------------------

ALPHABET = st.sampled_from(list(" \t;,:<>\"\\@=?/.-_*%+0123456789abcdefz\u00b2\x00\xe9SIPREGISTERsipnoncerealm"))


@st.composite
def mutated_responses(draw: st.DrawFn) -> bytes:
    """A corpus response (aimed at the endpoint), with a few lines dropped, duplicated, cut or replaced."""
    lines = draw(st.sampled_from(SEEDS)).split(b"\r\n")
    for op in draw(st.lists(st.sampled_from(["drop", "dup", "cut", "value", "header", "status"]), max_size=4)):
        i = draw(st.integers(0, max(0, len(lines) - 1)))
        if op == "drop" and len(lines) > 1:
            del lines[i]
        elif op == "dup":
            lines.insert(i, lines[i])
        elif op == "cut":
            lines[i] = lines[i][: draw(st.integers(0, len(lines[i])))]
        elif op == "value" and i > 0 and b":" in lines[i]:
            name = lines[i].partition(b":")[0]
            lines[i] = name + b": " + draw(st.text(ALPHABET, max_size=60)).encode("utf-8", "surrogatepass")
        elif op == "header":
            name = draw(st.sampled_from([b"Expires", b"Min-Expires", b"Retry-After", b"WWW-Authenticate",
                                         b"Contact", b"CSeq", b"Via", b"Call-ID", b"Content-Length"]))
            lines.insert(max(1, i), name + b": " + draw(st.text(ALPHABET, max_size=60)).encode())
        elif op == "status":
            lines[0] = b"SIP/2.0 %d X" % draw(st.sampled_from([100, 180, 200, 202, 299, 401, 407, 408, 423,
                                                                 480, 500, 503, 504, 603, 699]))
    return b"\r\n".join(lines)


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_responses())
@example(b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 127.0.0.1:5080;branch=z9hG4bKcorpus0000000000;rport\r\n"
         b"Call-ID: corpus-call@sipload\r\nCSeq: 1 REGISTER\r\nContact: <sip:user1@127.0.0.1:5080;transport=udp>"
         b";expires=" + b"9" * 5000 + b"\r\n\r\n")
def test_fuzz_endpoint_takes_any_response(data: bytes) -> None:
    client_target(data)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=400))
def test_fuzz_endpoint_takes_any_bytes(data: bytes) -> None:
    client_target(data)


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    lines = draw(st.sampled_from([CORPUS_REQUEST, *HOSTILE_REQUESTS.values()])).split(b"\r\n")
    for _ in range(draw(st.integers(0, 3))):
        i = draw(st.integers(0, len(lines) - 1))
        if b":" in lines[i] and i > 0:
            name = lines[i].partition(b":")[0]
            lines[i] = name + b": " + draw(st.text(ALPHABET, max_size=80)).encode("utf-8", "surrogatepass")
        else:
            lines[i] = draw(st.binary(max_size=40))
    return b"\r\n".join(lines)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(mutated_requests())
def test_fuzz_registrar_answers_an_error_or_nothing(data: bytes) -> None:
    registrar_target(data)


# --- no binding without a valid digest, whatever is changed in the credentials ---------------------

FIELDS = ("username", "realm", "nonce", "uri", "response", "algorithm", "cnonce", "nc", "qop")  # opaque: not ours


def _authorization(core: RegistrarCore, now: float) -> tuple[Request, str]:
    """A challenge from `core`, and user1's correct answer to it."""
    first = parse_message(CORPUS_REQUEST)
    assert isinstance(first, Request)
    challenge = core.handle(first, ("127.0.0.1", 5080), "udp", now).response
    assert challenge is not None and challenge.status == 401
    client = DigestClient("user1", "pw-user1", cnonce=lambda: "c0ffee")
    chosen = parse_challenges(challenge.headers.get_all("www-authenticate"))[0]
    _, value = client.authorize(chosen, "REGISTER", "sip:sipload.test")
    return first, value


def _with_value(header: str, name: str, value: str) -> str:
    parts = [p.strip() for p in header.removeprefix("Digest ").split(",")]
    out = [f"{name}={value}" if p.split("=", 1)[0] == name else p for p in parts]
    if not any(p.split("=", 1)[0] == name for p in parts):
        out.append(f"{name}={value}")
    return "Digest " + ", ".join(out)


def _request(auth: str, cseq: int) -> Request:
    text = CORPUS_REQUEST.decode().replace("CSeq: 1 REGISTER", f"CSeq: {cseq} REGISTER").replace(
        "z9hG4bKcorpus", f"z9hG4bKcorpus{cseq}").replace("Expires: 60\r\n", f"Expires: 60\r\nAuthorization: {auth}\r\n")
    request = parse_message(text.encode())
    assert isinstance(request, Request)
    return request


@settings(max_examples=300, deadline=None)
@given(field=st.sampled_from(FIELDS),
       value=st.one_of(st.sampled_from(['"user2"', '"other"', '"sip:elsewhere"', "MD5-sess", "SHA-256", '""',
                                        "00000001", "auth-int", '"0000000000000000000000000000000"']),
                       st.text(ALPHABET, max_size=40)))
def test_no_binding_without_a_valid_digest(field: str, value: str) -> None:
    core = RegistrarCore(RegistrarSettings(realm="sipload.test", min_expires=1), now=0.0, rng=random.Random(4))
    _, good = _authorization(core, 0.0)
    changed = _with_value(good, field, value)
    if changed == good:
        return
    outcome = core.handle(_request(changed, 2), ("127.0.0.1", 5080), "udp", 1.0)
    if outcome.response is not None and outcome.response.status == 200:
        # only a change that does not alter what is verified may pass (quotes, case of a token)
        assert _with_value(good, field, value.strip('"').lower()) == _with_value(good, field, _get(good, field))
    assert core.store.count(1.0).bindings == (1 if outcome.response is not None
                                              and outcome.response.status == 200 else 0)


def _get(header: str, name: str) -> str:
    for part in header.removeprefix("Digest ").split(","):
        key, _, val = part.strip().partition("=")
        if key == name:
            return val.strip('"').lower()
    return ""


# --- atheris (coverage-guided), when it installs ---------------------------------------------------

def test_atheris_finds_no_crash_in_a_bounded_run(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed (pip install atheris)")
    corpus = tmp_path / "corpus"
    shutil.copytree(CORPUS / "responses", corpus)
    for path in REQUESTS:
        shutil.copy(path, corpus / f"request-{path.name}")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE), str(HERE.parent)])}
    proc = subprocess.run(
        [sys.executable, str(HERE / "fuzz_atheris.py"), "-runs=20000", "-max_total_time=4", "-max_len=4096",
         "-timeout=5", f"-artifact_prefix={tmp_path}/", str(corpus)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    assert "Done" in output, output[-3000:]
    assert not list(tmp_path.glob("crash-*")), output[-3000:]


def test_parse_error_is_the_only_codec_failure_on_the_corpus() -> None:
    for path in [*RESPONSES, *REQUESTS]:
        try:
            parse_message(path.read_bytes())
        except ParseError as exc:
            assert str(exc)
