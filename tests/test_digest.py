"""Tests of HTTP Digest for SIP (RFC 2617, 7616, 8760): vectors, client, server, parser robustness."""

from __future__ import annotations

import hashlib
import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipload.sip.digest import (
    Algorithm,
    Challenge,
    Credentials,
    DigestClient,
    DigestServer,
    Verdict,
    choose_challenge,
    compute_ha1,
    parse_challenges,
    parse_credentials,
    userhash,
)
from sipload.sip.errors import ParseError

# RFC 7616 §3.9.1
R7616 = dict(
    realm="http-auth@example.org",
    nonce="7ypf/xlj9XXwfDPEoM4URrv/xwf94BcCAzFZH4GiTo0v",
    opaque="FQhe/qaU925kfnzjCev0ciny7QMkPqMAFRtzCUYo5tdS",
    cnonce="f2/wE4q74E6zIJEtWaHKaf5wv/H5QzzpXusqGemxURZJ",
)


def rfc7616_challenge(algorithm: str) -> str:
    return (f'Digest realm="{R7616["realm"]}", qop="auth, auth-int", algorithm={algorithm}, '
            f'nonce="{R7616["nonce"]}", opaque="{R7616["opaque"]}"')


def fixed(value: str) -> DigestClient:
    return DigestClient("Mufasa", "Circle of Life", cnonce=lambda: value)


def counter_cnonce() -> DigestClient:
    it = itertools.count()
    return DigestClient("alice", "secret", cnonce=lambda: f"c{next(it)}")


def md5(s: str | bytes) -> str:
    return hashlib.md5(s.encode() if isinstance(s, str) else s).hexdigest()


def challenge(**kw: object) -> Challenge:
    base: dict[str, object] = dict(realm="r", nonce="n", algorithm=Algorithm.MD5, algorithm_name="MD5",
                                   qop=("auth",), opaque=None, stale=False, domain=None, userhash=False,
                                   proxy=False)
    base.update(kw)
    return Challenge(**base)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------ RFC vectors

@pytest.mark.parametrize(("algorithm", "expected"), [
    ("MD5", "8ca523f5e9506fed4657c9700eebdbec"),
    ("SHA-256", "753927fa0e85d155564e2e272a28d1802ca10daf4496794697cf8db5856cb6c1"),
])
def test_rfc7616_vectors(algorithm: str, expected: str) -> None:
    [ch] = parse_challenges([rfc7616_challenge(algorithm)])
    name, value = fixed(R7616["cnonce"]).authorize(ch, "GET", "/dir/index.html")
    assert name == "Authorization"
    cred = parse_credentials(value)
    assert cred.response == expected
    assert (cred.username, cred.realm, cred.nonce, cred.uri) == (
        "Mufasa", R7616["realm"], R7616["nonce"], "/dir/index.html")
    assert (cred.qop, cred.nc, cred.cnonce, cred.opaque, cred.algorithm_name) == (
        "auth", "00000001", R7616["cnonce"], R7616["opaque"], algorithm)


def test_rfc2617_vector() -> None:
    [ch] = parse_challenges(['Digest realm="testrealm@host.com", qop="auth,auth-int", '
                             'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", '
                             'opaque="5ccc069c403ebaf9f0171e9517f40e41"'])
    client = DigestClient("Mufasa", "Circle Of Life", cnonce=lambda: "0a4f113b")
    _, value = client.authorize(ch, "GET", "/dir/index.html")
    cred = parse_credentials(value)
    assert cred.response == "6629fae49393a05397450978507c4ef1"
    assert cred.opaque == "5ccc069c403ebaf9f0171e9517f40e41"


def test_rfc2069_no_qop() -> None:
    # RFC 2069 §2.4 example (response as corrected by its errata); no cnonce, no nc, no qop sent
    [ch] = parse_challenges(['Digest realm="testrealm@host.com", nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093"'])
    assert ch.qop == () and ch.algorithm is Algorithm.MD5 and ch.algorithm_name == "MD5"
    client = DigestClient("Mufasa", "CircleOfLife", cnonce=lambda: pytest.fail("no cnonce without qop"))
    cred = parse_credentials(client.authorize(ch, "GET", "/dir/index.html")[1])
    assert cred.response == "1949323746fe6a43ef61f9606e7febea"
    assert (cred.qop, cred.nc, cred.cnonce) == (None, None, None)


def test_auth_int_when_only_offered_hashes_the_body() -> None:
    [ch] = parse_challenges(['Digest realm="r", nonce="n", qop="auth-int"'])
    body = b"v=0\r\n"
    cred = parse_credentials(fixed("cn").authorize(ch, "INVITE", "sip:bob@x", body)[1])
    ha1 = md5("Mufasa:r:Circle of Life")
    ha2 = md5(f"INVITE:sip:bob@x:{md5(body)}")
    assert cred.qop == "auth-int"
    assert cred.response == md5(f"{ha1}:n:00000001:cn:auth-int:{ha2}")


def test_auth_preferred_over_auth_int() -> None:
    [ch] = parse_challenges(['Digest realm="r", nonce="n", qop="auth-int,auth"'])
    assert parse_credentials(fixed("cn").authorize(ch, "REGISTER", "sip:x")[1]).qop == "auth"


def test_md5_sess_formula() -> None:
    [ch] = parse_challenges(['Digest realm="r", nonce="n", qop="auth", algorithm=MD5-sess'])
    cred = parse_credentials(fixed("cn").authorize(ch, "REGISTER", "sip:x")[1])
    ha1 = md5(f"{md5('Mufasa:r:Circle of Life')}:n:cn")
    assert cred.response == md5(f"{ha1}:n:00000001:cn:auth:{md5('REGISTER:sip:x')}")
    assert cred.algorithm_name == "MD5-sess"


@pytest.mark.parametrize("algorithm", list(Algorithm))
@pytest.mark.parametrize("qop", [("auth",), ("auth-int",), ()])
def test_round_trip_every_algorithm(algorithm: Algorithm, qop: tuple[str, ...]) -> None:
    server = DigestServer("example.com", b"k", algorithms=[algorithm], qop=qop)
    challenges = parse_challenges(server.challenges(now=10.0))
    answer = counter_cnonce().answer(challenges, "REGISTER", "sip:example.com", b"body")
    assert answer is not None
    cred = parse_credentials(answer[1])
    assert Algorithm.parse(cred.algorithm_name) is algorithm
    assert server.verify("REGISTER", cred, {"alice": "secret"}.get, 11.0, b"body") is Verdict.OK


def test_sha512_256_is_the_truncated_sha512_variant() -> None:
    # SHA-512/256 (FIPS 180-4) has its own initial values: not the first half of SHA-512
    ha1 = compute_ha1("u", "r", "p", Algorithm.SHA512_256)
    assert ha1 == hashlib.new("sha512_256", b"u:r:p").hexdigest()
    assert ha1 != hashlib.sha512(b"u:r:p").hexdigest()[:64] and len(ha1) == 64


# ---------------------------------------------------------------------------------------- parsing

def test_parse_several_lines_and_comma_joined() -> None:
    got = parse_challenges([
        'Basic realm="b", Digest realm="one", nonce="n1", algorithm=SHA-256, qop="auth", '
        'Bearer abc=, Digest realm=two,nonce=n2,stale=TRUE,domain="sip:a sip:b",userhash=true',
        'digest   REALM = "th\\"r\\\\ee" , NONCE="n3", opaque=o, algorithm="md5"',
    ], proxy=True)
    assert [(c.realm, c.nonce) for c in got] == [("one", "n1"), ("two", "n2"), ('th"r\\ee', "n3")]
    assert got[0].algorithm is Algorithm.SHA256 and got[0].qop == ("auth",)
    assert got[1].stale and got[1].userhash and got[1].domain == "sip:a sip:b"
    assert got[2].algorithm is Algorithm.MD5 and got[2].algorithm_name == "md5" and got[2].opaque == "o"
    assert all(c.proxy for c in got)


def test_non_digest_only_gives_nothing() -> None:
    assert parse_challenges(['Basic realm="x"', "Bearer abc.def==", 'Negotiate']) == []
    assert parse_challenges([]) == []


@pytest.mark.parametrize(("value", "problem"), [
    ('Digest realm="r"', "nonce"),
    ('Digest nonce="n"', "realm"),
    ('Digest realm="r", nonce="unterminated', "offset"),
    ('Digest realm="r", realm="s", nonce="n"', "repeated"),
    ('realm="r", nonce="n"', "scheme"),
    ("", "empty"),
    ('Digest realm="a\r\nb", nonce="n"', "offset"),
    ('Digest realm="r" nonce="n"', "expected ','"),
])
def test_parse_challenge_errors_name_the_problem(value: str, problem: str) -> None:
    with pytest.raises(ParseError, match=problem):
        parse_challenges([value])


def test_parse_credentials() -> None:
    cred = parse_credentials('Digest username="bob", realm="r", nonce="n", uri="sip:r", response="AB", '
                             'qop=auth, nc=0000000a, cnonce="c", userhash=false')
    assert cred == Credentials(username="bob", realm="r", nonce="n", uri="sip:r", response="AB",
                               algorithm_name="MD5", cnonce="c", nc="0000000a", qop="auth", opaque=None,
                               userhash=False)
    ext = parse_credentials("Digest username*=UTF-8''J%C3%A4s%C3%B8n, realm=r, nonce=n, uri=u, response=x")
    assert ext.username == "Jäsøn"


@pytest.mark.parametrize(("value", "problem"), [
    ('Digest realm="r", nonce="n", uri="u", response="x"', "username"),
    ('Digest username="u", realm="r", nonce="n", response="x"', "uri"),
    ('Basic dXNlcjpwdw==', "one set of Digest"),
    ('Digest username="u", realm="r", nonce="n", uri="u", response="x", Digest username="v"', "one set"),
    ("Digest username*=KOI8''x, realm=r, nonce=n, uri=u, response=x", "username\\*"),
    ("Digest username*=UTF-8''%FF, realm=r, nonce=n, uri=u, response=x", "username\\*"),
])
def test_parse_credentials_errors(value: str, problem: str) -> None:
    with pytest.raises(ParseError, match=problem):
        parse_credentials(value)


FRAGMENTS = st.sampled_from(['Digest', 'Basic', ' ', ',', '=', '"', '\\', 'realm', 'nonce', 'username*',
                             "UTF-8''%", 'qop', 'x', '\r\n', '\t', 'é', "'", 'abc=='])
ARBITRARY = st.one_of(st.text(), st.lists(FRAGMENTS, max_size=30).map("".join))


@given(ARBITRARY)
def test_parsers_raise_only_parse_error(text: str) -> None:
    for parse in (lambda: parse_challenges([text]), lambda: parse_credentials(text)):
        try:
            parse()
        except ParseError:
            pass


# ----------------------------------------------------------------------------------------- client

def test_nc_increments_per_nonce_and_restarts_on_new_nonce() -> None:
    client = counter_cnonce()
    a, b = challenge(nonce="A"), challenge(nonce="B")
    ncs = [parse_credentials(client.authorize(ch, "REGISTER", "sip:x")[1]).nc for ch in (a, a, a, b, a, b)]
    assert ncs == ["00000001", "00000002", "00000003", "00000001", "00000004", "00000002"]


def test_strongest_chosen_and_preference_honoured() -> None:
    offered = [challenge(algorithm=a, algorithm_name=a.value, realm=a.value) for a in
               (Algorithm.MD5, Algorithm.SHA256_SESS, Algorithm.SHA256, Algorithm.MD5_SESS)]
    assert choose_challenge(offered).algorithm is Algorithm.SHA256  # type: ignore[union-attr]
    pick = choose_challenge(offered, [Algorithm.MD5_SESS, Algorithm.SHA256])
    assert pick is not None and pick.algorithm is Algorithm.MD5_SESS
    assert choose_challenge(offered, [Algorithm.SHA512_256]) is None
    client = DigestClient("u", "p", cnonce=lambda: "c", preference=[Algorithm.MD5])
    answer = client.answer(offered, "REGISTER", "sip:x")
    assert answer is not None and parse_credentials(answer[1]).realm == "MD5"


def test_unsupported_algorithm_gives_none() -> None:
    chs = parse_challenges(['Digest realm="r", nonce="n", algorithm=SHA-1024, qop="auth"',
                            'Digest realm="r", nonce="n", qop="auth-conf"'])
    assert chs[0].algorithm is None and chs[0].algorithm_name == "SHA-1024"
    assert choose_challenge(chs) is None
    assert counter_cnonce().answer(chs, "REGISTER", "sip:x") is None
    with pytest.raises(ValueError, match="SHA-1024"):
        counter_cnonce().authorize(chs[0], "REGISTER", "sip:x")


def test_proxy_challenge_answered_in_proxy_authorization() -> None:
    chs = parse_challenges(['Digest realm="p", nonce="n", opaque="op\\"aque"'], proxy=True)
    name, value = counter_cnonce().answer(chs, "REGISTER", "sip:x") or ("", "")
    assert name == "Proxy-Authorization"
    assert parse_credentials(value).opaque == 'op"aque'


def test_precomputed_ha1() -> None:
    [ch] = parse_challenges([rfc7616_challenge("MD5")])
    ha1 = compute_ha1("Mufasa", R7616["realm"], "Circle of Life", Algorithm.MD5)
    client = DigestClient("Mufasa", ha1=ha1, realm_for_ha1=R7616["realm"], cnonce=lambda: R7616["cnonce"])
    assert parse_credentials(client.authorize(ch, "GET", "/dir/index.html")[1]).response == \
        "8ca523f5e9506fed4657c9700eebdbec"
    # an MD5 HA1 cannot answer SHA-256, nor another realm: answer() skips those challenges
    sha = parse_challenges([rfc7616_challenge("SHA-256")])
    other = parse_challenges(['Digest realm="elsewhere", nonce="n"'])
    assert client.answer(sha, "GET", "/") is None and client.answer(other, "GET", "/") is None
    assert client.answer([*sha, ch], "GET", "/") is not None


def test_auth_user_differs_from_aor_user() -> None:
    server = DigestServer("example.com", b"k")
    asked: list[str] = []

    def password(user: str) -> str | None:
        asked.append(user)
        return "pw" if user == "1001-auth" else None

    client = DigestClient("1001-auth", "pw", cnonce=lambda: "c")
    _, value = client.answer(parse_challenges(server.challenges(0.0)), "REGISTER", "sip:example.com") \
        or ("", "")
    assert server.verify("REGISTER", parse_credentials(value), password, 1.0) is Verdict.OK
    assert asked == ["1001-auth"]


def test_userhash_round_trip() -> None:
    server = DigestServer("r", b"k", algorithms=[Algorithm.SHA256], userhash=True)
    [ch] = parse_challenges(server.challenges(0.0))
    cred = parse_credentials(counter_cnonce().authorize(ch, "REGISTER", "sip:r")[1])
    hashed = userhash("alice", "r", Algorithm.SHA256)
    assert cred.userhash and cred.username == hashed
    lookup = {hashed: "alice"}.get
    assert server.verify("REGISTER", cred, {"alice": "secret"}.get, 1.0, user_by_hash=lookup) is Verdict.OK
    assert server.verify("REGISTER", cred, {"alice": "secret"}.get, 1.0) is Verdict.UNKNOWN_USER


def test_crlf_in_username_refused() -> None:
    with pytest.raises(ValueError, match="CR/LF"):
        DigestClient("a\r\nb", "p", cnonce=lambda: "c")


# ----------------------------------------------------------------------------------------- server

def server_and_credentials(user: str = "alice", pw: str = "secret", now: float = 100.0,
                           **kw: object) -> tuple[DigestServer, Credentials, DigestClient]:
    server = DigestServer("example.com", b"secret-key", **kw)  # type: ignore[arg-type]
    client = DigestClient(user, pw, cnonce=lambda: "cn")
    _, value = client.answer(parse_challenges(server.challenges(now)), "REGISTER", "sip:example.com") \
        or ("", "")
    return server, parse_credentials(value), client


USERS = {"alice": "secret"}.get


def test_server_ok_wrong_password_unknown_user() -> None:
    server, cred, _ = server_and_credentials()
    assert server.verify("REGISTER", cred, USERS, 101.0) is Verdict.OK
    server, cred, _ = server_and_credentials(pw="wrong")
    assert server.verify("REGISTER", cred, USERS, 101.0) is Verdict.WRONG_RESPONSE
    server, cred, _ = server_and_credentials(user="mallory")
    assert server.verify("REGISTER", cred, USERS, 101.0) is Verdict.UNKNOWN_USER


def test_server_wrong_method_is_wrong_response() -> None:
    server, cred, _ = server_and_credentials()
    assert server.verify("INVITE", cred, USERS, 101.0) is Verdict.WRONG_RESPONSE


def test_server_stale_after_lifetime_then_fresh_challenge_works() -> None:
    server, cred, client = server_and_credentials(now=100.0, nonce_lifetime=30.0)
    assert server.verify("REGISTER", cred, USERS, 130.0) is Verdict.OK
    assert server.verify("REGISTER", cred, USERS, 130.5) is Verdict.STALE
    values = server.challenges(130.5, stale=True)
    assert "stale=true" in values[0]
    [ch] = parse_challenges(values)
    assert ch.stale
    fresh = parse_credentials(client.authorize(ch, "REGISTER", "sip:example.com")[1])
    assert server.verify("REGISTER", fresh, USERS, 131.0) is Verdict.OK


def test_server_stale_needs_a_correct_response() -> None:
    server, cred, _ = server_and_credentials(pw="wrong", nonce_lifetime=30.0)
    assert server.verify("REGISTER", cred, USERS, 1000.0) is Verdict.WRONG_RESPONSE


def test_server_replayed_nc() -> None:
    server, cred, client = server_and_credentials()
    assert server.verify("REGISTER", cred, USERS, 101.0) is Verdict.OK
    assert server.verify("REGISTER", cred, USERS, 102.0) is Verdict.REPLAY
    [ch] = parse_challenges([f'Digest realm="example.com", nonce="{cred.nonce}", qop="auth"'])
    second = parse_credentials(client.authorize(ch, "REGISTER", "sip:example.com")[1])
    assert second.nc == "00000002"
    assert server.verify("REGISTER", second, USERS, 103.0) is Verdict.OK
    assert server.verify("REGISTER", cred, USERS, 104.0) is Verdict.REPLAY


def test_server_tampered_nonce_and_other_realm() -> None:
    server, cred, _ = server_and_credentials()
    flipped = cred.nonce[:5] + ("A" if cred.nonce[5] != "A" else "B") + cred.nonce[6:]
    for nonce in (flipped, "garbage", cred.nonce + "x", "é" * 43):
        assert server.verify("REGISTER", _replace(cred, nonce=nonce), USERS, 101.0) is Verdict.BAD_NONCE
    other = DigestServer("other.com", b"secret-key")
    assert other.verify("REGISTER", cred, USERS, 101.0) is Verdict.BAD_NONCE
    # the same realm string in credentials does not help a nonce minted for another realm
    assert other.verify("REGISTER", _replace(cred, realm="other.com"), USERS, 101.0) is Verdict.BAD_NONCE
    assert DigestServer("example.com", b"other-key").verify("REGISTER", cred, USERS, 101.0) \
        is Verdict.BAD_NONCE


def _replace(cred: Credentials, **kw: str) -> Credentials:
    fields = {f: getattr(cred, f) for f in Credentials.__slots__}
    fields.update(kw)
    return Credentials(**fields)


def test_server_malformed() -> None:
    server, cred, _ = server_and_credentials()
    for bad in ({"nc": "1"}, {"nc": "zzzzzzzz"}, {"qop": "auth-int"}, {"algorithm_name": "SHA-256"},
                {"algorithm_name": "nope"}):
        assert server.verify("REGISTER", _replace(cred, **bad), USERS, 101.0) is Verdict.MALFORMED
    assert server.verify("REGISTER", _replace(cred, response="é"), USERS, 101.0) is Verdict.WRONG_RESPONSE


def test_server_no_qop_rfc2069() -> None:
    server, cred, _ = server_and_credentials(qop=())
    assert cred.qop is None
    assert server.verify("REGISTER", cred, USERS, 101.0) is Verdict.OK
    strict = DigestServer("example.com", b"secret-key", allow_no_qop=False)
    assert strict.verify("REGISTER", cred, USERS, 101.0) is Verdict.MALFORMED


def test_server_challenges_strongest_first_with_injected_random() -> None:
    server = DigestServer("r", b"k", algorithms=[Algorithm.MD5, Algorithm.SHA512_256, Algorithm.SHA256],
                          random=lambda n: b"\0" * n)
    chs = parse_challenges(server.challenges(5.0))
    assert [c.algorithm for c in chs] == [Algorithm.SHA512_256, Algorithm.SHA256, Algorithm.MD5]
    assert len({c.nonce for c in chs}) == 1 and chs[0].qop == ("auth",)
    assert server.challenges(5.0) == DigestServer("r", b"k", algorithms=[Algorithm.MD5, Algorithm.SHA256,
                                                  Algorithm.SHA512_256], random=lambda n: b"\0" * n
                                                  ).challenges(5.0)


def test_replay_table_is_purged_and_bounded() -> None:
    server = DigestServer("r", b"k", nonce_lifetime=10.0, max_tracked_nonces=3)
    client = counter_cnonce()

    def register(issued: float, at: float) -> tuple[Credentials, Verdict]:
        [ch] = parse_challenges(server.challenges(issued))
        cred = parse_credentials(client.authorize(ch, "REGISTER", "sip:r")[1])
        return cred, server.verify("REGISTER", cred, USERS_R, at)

    for t in range(5):
        assert register(float(t), float(t))[1] is Verdict.OK
    assert server.tracked_nonces == 3
    # an evicted live nonce is not replayable: it is answered STALE, so the client takes a fresh one
    early = parse_challenges(server.challenges(0.5))[0]
    cred = parse_credentials(client.authorize(early, "REGISTER", "sip:r")[1])
    assert server.verify("REGISTER", cred, USERS_R, 5.0) is Verdict.STALE
    # once everything has expired, the next insert purges the table down to itself
    assert register(100.0, 100.0)[1] is Verdict.OK
    assert server.tracked_nonces == 1


USERS_R = {"alice": "secret"}.get


# ---------------------------------------------------------------------------------- property tests

NO_CRLF = st.text(st.characters(blacklist_characters="\r\n", blacklist_categories=["Cs"]), min_size=1)


@settings(max_examples=200)
@given(user=NO_CRLF, pw=st.text(), realm=NO_CRLF, algorithm=st.sampled_from(list(Algorithm)),
       qop=st.sampled_from([("auth",), ("auth-int",), ("auth", "auth-int"), ()]), body=st.binary())
def test_round_trip_random_users(user: str, pw: str, realm: str, algorithm: Algorithm,
                                 qop: tuple[str, ...], body: bytes) -> None:
    server = DigestServer(realm, b"k", algorithms=[algorithm], qop=qop)
    client = DigestClient(user, pw, cnonce=lambda: 'c"\\n')
    answer = client.answer(parse_challenges(server.challenges(1.0)), "REGISTER", "sip:x", body)
    assert answer is not None
    cred = parse_credentials(answer[1])
    assert (cred.username, cred.realm) == (user, realm)
    assert server.verify("REGISTER", cred, {user: pw}.get, 2.0, body) is Verdict.OK
