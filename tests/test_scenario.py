"""Tests of scenario files: every field's validation and error text, CSV users, overrides, arrival schedule."""

from __future__ import annotations

import ipaddress
import itertools
import math
import pickle
import random
from fractions import Fraction
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from sipload.durations import DurationError, format_duration, parse_duration
from sipload.engine.embedded import registrar_settings
from sipload.registrar.settings import DelayKind, DelaySpec, RegistrarSettings
from sipload.scenario import (
    AddressRange,
    Credential,
    CsvMode,
    Delay,
    DelayDistribution,
    Load,
    LoadShape,
    Ramp,
    Scenario,
    ScenarioError,
    SocketMode,
    Step,
    Transport,
    load_scenario,
    parse_scenario,
    parse_sip_uri,
)
from sipload.sip.digest import Algorithm

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).resolve().parent / "data" / "scenarios"


def write(tmp_path: Path, text: str, name: str = "s.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def doc(
    *,
    top: str = "",
    target: str | None = None,
    endpoints: str = "count = 10",
    load: str = "rate = 10",
    timers: str | None = None,
    registrar: str | None = None,
) -> str:
    parts = [top]
    for name, body in (
        ("target", target),
        ("endpoints", endpoints),
        ("load", load),
        ("timers", timers),
        ("registrar", registrar),
    ):
        if body is not None:
            parts.append(f"[{name}]\n{body}\n")
    return "\n".join(parts)


def good(tmp_path: Path, **sections: str) -> Scenario:
    return load_scenario(write(tmp_path, doc(**sections)))


def bad(tmp_path: Path, **sections: str) -> str:
    path = write(tmp_path, doc(**sections))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    return message


# --------------------------------------------------------------------------------------- minimal / defaults


def test_minimal_scenario_defaults(tmp_path: Path) -> None:
    s = good(tmp_path)
    assert s.name == "s" and s.description == "" and s.seed is None
    assert s.path == tmp_path / "s.toml"
    assert s.target.embedded and s.target.registrar == "embedded" and s.target.uri is None
    assert s.target.domain == "sipload.test" and s.target.transport is Transport.UDP
    ep = s.endpoints
    assert (ep.count, ep.first, ep.expires, ep.refresh_at, ep.refresh_jitter, ep.refresh_margin) == (
        10,
        1,
        3600,
        0.5,
        0.05,
        2.0,
    )
    assert ep.user_agent == "sipload/0.1" and ep.socket is SocketMode.SHARED
    assert ep.source_addresses is None and ep.digest_preference is None and ep.csv is None
    assert ep.credentials(0) == Credential("user1", "pw-user1", "user1")
    load = s.load
    assert load.shape is LoadShape.CONSTANT and load.rate == 10.0
    assert load.max_in_flight == 1000 and load.unregister is True
    assert (load.unregister_timeout, load.interval) == (10.0, 1.0)
    assert load.duration == 0.9  # default: until the last arrival (k=9 at 10/s)
    t = s.timers
    assert (t.t1, t.t2, t.t4, t.max_retries, t.retry_backoff, t.retry_backoff_max) == (0.5, 4.0, 5.0, 3, 1.0, 30.0)
    reg = s.registrar
    assert reg is not None
    assert (reg.listen_host, reg.listen_port, reg.realm, reg.algorithms) == ("127.0.0.1", 0, "sipload.test", ("MD5",))
    assert (reg.default_expires, reg.min_expires, reg.max_expires, reg.nonce_lifetime) == (3600, 1, 7200, 300.0)
    assert (reg.drop, reg.error_503, reg.retry_after, reg.delay) == (0.0, 0.0, 5, Delay())
    assert reg.password_for("user7") == "pw-user7"
    assert s.thresholds == ()


def test_full_scenario(tmp_path: Path) -> None:
    s = good(
        tmp_path,
        top='name = "full"\ndescription = """two\nlines"""\nseed = 42\n'
        'thresholds = ["register.p99 < 200ms", "timeouts == 0"]',
        endpoints='count = 3\nfirst = 0\nusername = "dev{n:05d}"\npassword = "{username}-pw-{n}"\n'
        'auth_user = "auth-{username}"\nexpires = 120\nrefresh_at = 0.8\nrefresh_jitter = 0.1\n'
        'refresh_margin = "500ms"\nuser_agent = "UA 1.0"\nsocket = "per-endpoint"\n'
        'source_addresses = "127.0.0.2-127.0.0.4"\ndigest_preference = ["sha-256", "MD5"]',
        load='rate = 2.5\nmax_in_flight = 7\nduration = "1m"\nunregister = false\n'
        'unregister_timeout = 3\ninterval = "250ms"',
        timers='t1 = "100ms"\nt2 = "1.5s"\nt4 = 2\nmax_retries = 0\nretry_backoff = "0s"\nretry_backoff_max = "1h"',
        registrar='listen = "[::1]:5099"\nrealm = "r.test"\npassword = "x-{user}"\nalgorithms = ["SHA-256", "md5"]\n'
        'default_expires = 60\nmin_expires = 10\nmax_expires = 600\nnonce_lifetime = "2m"\n'
        'drop = 0.25\ndelay = { distribution = "uniform", min = "1ms", max = "5ms" }\n'
        "error_503 = 1\nretry_after = 0",
    )
    assert (s.name, s.description, s.seed) == ("full", "two\nlines", 42)
    assert [t.expr for t in s.thresholds] == ["register.p99 < 200ms", "timeouts == 0"]
    ep = s.endpoints
    assert ep.credentials(0) == Credential("dev00000", "dev00000-pw-0", "auth-dev00000")
    assert ep.credentials(2) == Credential("dev00002", "dev00002-pw-2", "auth-dev00002")
    assert (ep.expires, ep.refresh_at, ep.refresh_jitter, ep.refresh_margin) == (120, 0.8, 0.1, 0.5)
    assert ep.user_agent == "UA 1.0" and ep.socket is SocketMode.PER_ENDPOINT
    assert ep.digest_preference == ("SHA-256", "MD5")
    assert ep.source_addresses is not None and len(ep.source_addresses) == 3
    assert [ep.source_addresses[i] for i in range(4)] == ["127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.2"]
    load = s.load
    assert (load.rate, load.max_in_flight, load.duration, load.unregister) == (2.5, 7, 60.0, False)
    assert (load.unregister_timeout, load.interval) == (3.0, 0.25)
    assert (s.timers.t1, s.timers.t2, s.timers.t4, s.timers.max_retries) == (0.1, 1.5, 2.0, 0)
    assert (s.timers.retry_backoff, s.timers.retry_backoff_max) == (0.0, 3600.0)
    reg = s.registrar
    assert reg is not None
    assert (reg.listen_host, reg.listen_port, reg.realm) == ("::1", 5099, "r.test")
    assert reg.algorithms == ("SHA-256", "MD5") and reg.password_for("bob") == "x-bob"
    assert (reg.default_expires, reg.min_expires, reg.max_expires, reg.nonce_lifetime) == (60, 10, 600, 120.0)
    assert (reg.drop, reg.error_503, reg.retry_after) == (0.25, 1.0, 0)
    assert reg.delay == Delay(DelayDistribution.UNIFORM, low=0.001, high=0.005)


def test_dataclasses_are_frozen(tmp_path: Path) -> None:
    s = good(tmp_path)
    with pytest.raises(AttributeError):
        s.name = "x"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        s.load.rate = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("500ms", 0.5),
        ("30s", 30.0),
        ("2m", 120.0),
        ("1h", 3600.0),
        ("1.5s", 1.5),
        ("250us", 0.00025),
        ("250µs", 0.00025),
        ("10", 10.0),
        (" 3 ms ", 0.003),
        (7, 7.0),
        (2.5, 2.5),
        ("300ms", 0.3),
        (".5s", 0.5),
    ],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "text", ["", "abc", "5x", "-1s", -1, True, None, [1], "1e3s", "s", float("nan"), float("inf"), "5 5s"]
)
def test_bad_durations(text: object) -> None:
    with pytest.raises(DurationError):
        parse_duration(text)


def test_format_duration() -> None:
    assert [format_duration(x) for x in (0.5, 19.99, 0.0005, 0, 120)] == ["500ms", "19.99s", "500us", "0ms", "120s"]


# ---------------------------------------------------------------------------------------------- target


@pytest.mark.parametrize(
    ("registrar", "extra", "transport", "domain", "port"),
    [
        ("sip:127.0.0.1:5070", "", Transport.UDP, "127.0.0.1", 5070),
        ("sip:127.0.0.1:5070;transport=tcp", "", Transport.TCP, "127.0.0.1", 5070),
        ("sip:127.0.0.1:5070;transport=TCP", "", Transport.TCP, "127.0.0.1", 5070),
        ("sip:127.0.0.1;transport=tls", "", Transport.TLS, "127.0.0.1", 5061),
        ("sips:reg.example:5061", "", Transport.TLS, "reg.example", 5061),
        ("sips:reg.example", 'transport = "tls"', Transport.TLS, "reg.example", 5061),
        ("sip:reg.example", 'transport = "tcp"', Transport.TCP, "reg.example", 5060),
        ("sip:[::1]:5070", "", Transport.UDP, "[::1]", 5070),
        ("SIP:Reg.Example", "", Transport.UDP, "Reg.Example", 5060),
        ("sip:127.0.0.1:5070", 'domain = "example.com"', Transport.UDP, "example.com", 5070),
        ("sip:127.0.0.1:5070", 'domain = "example.com:5070"', Transport.UDP, "example.com:5070", 5070),
    ],
)
def test_target_uris(tmp_path: Path, registrar: str, extra: str, transport: Transport, domain: str, port: int) -> None:
    s = good(tmp_path, target=f'registrar = "{registrar}"\n{extra}')
    assert not s.target.embedded and s.target.uri is not None and s.target.registrar == registrar
    assert s.target.transport is transport and s.target.domain == domain
    assert s.target.uri.effective_port == port
    assert s.registrar is None


def test_target_outbound_proxy_and_tls_files(tmp_path: Path) -> None:
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_text("x")
    s = good(
        tmp_path,
        target='registrar = "sips:reg.example"\noutbound_proxy = "sip:127.0.0.1:5070;transport=udp;lr"\n'
        'tls_verify = false\ntls_ca = "ca.pem"\ntls_cert = "cert.pem"\ntls_key = "key.pem"',
    )
    t = s.target
    assert t.outbound_proxy is not None and str(t.outbound_proxy) == "sip:127.0.0.1:5070;transport=udp;lr"
    assert t.outbound_proxy.transport is Transport.UDP
    assert t.tls_verify is False
    assert (t.tls_ca, t.tls_cert, t.tls_key) == (tmp_path / "ca.pem", tmp_path / "cert.pem", tmp_path / "key.pem")


def test_sip_uri_str_round_trip() -> None:
    for text in ("sip:127.0.0.1:5070", "sips:reg.example:5061", "sip:[::1]:5070;transport=tcp", "sip:h;lr"):
        assert str(parse_sip_uri(text)) == text


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ('registrar = "http://x"', "target.registrar", "(must start with sip: or sips:), got 'http://x'"),
        ('registrar = "sip:alice@host"', "target.registrar", "must not have a user part"),
        ('registrar = "sip:127.0.0.1:99999"', "target.registrar", "invalid port '99999'"),
        ('registrar = "sip:127.0.0.1:0"', "target.registrar", "invalid port '0'"),
        ('registrar = "sip:127.0.0.1;transport=sctp"', "target.registrar", "transport 'sctp' is not supported"),
        ('registrar = "sips:reg.example;transport=udp"', "target.registrar", "needs TLS"),
        ('registrar = "sip:999.1.1.1"', "target.registrar", "invalid IPv4 address"),
        ('registrar = "sip:[zz]:5060"', "target.registrar", "invalid IPv6 address"),
        ('registrar = "sip:bad_host"', "target.registrar", "invalid host"),
        ('registrar = "sip:h?x=1"', "target.registrar", "must not have headers"),
        ("registrar = 5", "target.registrar", "must be a non-empty string, got 5"),
        ('registrar = ""', "target.registrar", "must be a non-empty string, got ''"),
        ('domain = "bad domain"', "target.domain", "host name or IP address, optionally with :port, got 'bad domain'"),
        ('domain = "h:0"', "target.domain", "got 'h:0'"),
        ('transport = "sctp"', "target.transport", "must be one of 'udp', 'tcp', 'tls', 'ws', 'wss', got 'sctp'"),
        ('transport = "tls"', "target.transport", "the embedded registrar serves udp, tcp, ws (tls needs"),
        (
            'registrar = "sip:h;transport=tcp"\ntransport = "udp"',
            "target.transport",
            "contradicts the registrar URI 'sip:h;transport=tcp' (tcp), got 'udp'",
        ),
        ('registrar = "sips:h"\ntransport = "tcp"', "target.transport", "contradicts"),
        (
            'registrar = "sip:h"\ntls_verify = false',
            "target.tls_verify",
            "only allowed with transport 'tls' or 'wss' (the transport is 'udp'), got false",
        ),
        ('registrar = "sips:h"\ntls_verify = "yes"', "target.tls_verify", "must be true or false, got 'yes'"),
        ('registrar = "sips:h"\ntls_ca = "missing.pem"', "target.tls_ca", "file not found"),
        ('registrar = "sips:h"\ntls_key = "k.pem"', "target.tls_key", "needs target.tls_cert too"),
        ('registrar = "sip:h"\noutbound_proxy = "proxy"', "target.outbound_proxy", "got 'proxy'"),
        ('registrar = "sip:h"\noutbound_proxy = 1', "target.outbound_proxy", "must be a string, got 1"),
    ],
)
def test_target_errors(tmp_path: Path, body: str, field: str, fragment: str) -> None:
    message = bad(tmp_path, target=body)
    assert f": {field}: " in message and fragment in message, message


# ------------------------------------------------------------------------------------------- endpoints


def test_count_error_exact_text(tmp_path: Path) -> None:
    path = write(tmp_path, doc(endpoints="count = -5"))
    with pytest.raises(ScenarioError, match=r"^") as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: endpoints.count: must be a positive integer, got -5"


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ("count = 0", "endpoints.count", "must be a positive integer, got 0"),
        ("count = 1.5", "endpoints.count", "must be a positive integer, got 1.5"),
        ('count = "10"', "endpoints.count", "must be a positive integer, got '10'"),
        ("count = true", "endpoints.count", "must be a positive integer, got true"),
        ("first = 1", "endpoints.count", "required"),
        ("count = 2\nfirst = -1", "endpoints.first", "must be an integer >= 0, got -1"),
        (
            'count = 2\nusername = "user{x}"',
            "endpoints.username",
            "template cannot be rendered: unknown field {x} (fields: {n}), got 'user{x}'",
        ),
        ('count = 2\nusername = "u{n:q}"', "endpoints.username", "template cannot be rendered"),
        ('count = 2\nusername = "u{n"', "endpoints.username", "template cannot be rendered"),
        ('count = 2\nusername = "u{0}"', "endpoints.username", "template cannot be rendered"),
        ('count = 2\nusername = "u{n.real.x}"', "endpoints.username", "template cannot be rendered"),
        (
            'count = 2\nusername = "user {n}"',
            "endpoints.username",
            "the first endpoint (n=1) gives the username 'user 1', which is not a valid SIP user part",
        ),
        ('count = 2\nusername = "user@{n}"', "endpoints.username", "not a valid SIP user part"),
        ('count = 2\nusername = "user"', "endpoints.username", "must use {n}"),
        ('count = 2\nusername = ""', "endpoints.username", "must be a non-empty string"),
        (
            'count = 2\npassword = "{user}"',
            "endpoints.password",
            "unknown field {user} (fields: {n}, {username}), got a secret (not shown)",
        ),
        ("count = 2\npassword = 5", "endpoints.password", "must be a string, got a secret (not shown)"),
        ('count = 2\npassword = "a\\nb"', "endpoints.password", "must not contain control characters"),
        ('count = 2\nauth_user = "{nope}"', "endpoints.auth_user", "unknown field {nope}"),
        ('count = 2\nauth_user = "a\\"{n}"', "endpoints.auth_user", "cannot contain"),
        ("count = 2\nexpires = -1", "endpoints.expires", "must be an integer >= 0, got -1"),
        ("count = 2\nexpires = 1.5", "endpoints.expires", "got 1.5"),
        ("count = 2\nrefresh_at = 0", "endpoints.refresh_at", "must be a number > 0 and < 1, got 0"),
        ("count = 2\nrefresh_at = 1", "endpoints.refresh_at", "must be a number > 0 and < 1, got 1"),
        ('count = 2\nrefresh_at = "half"', "endpoints.refresh_at", "got 'half'"),
        ("count = 2\nrefresh_at = nan", "endpoints.refresh_at", "got nan"),
        ("count = 2\nrefresh_jitter = -0.1", "endpoints.refresh_jitter", "must be a number >= 0 and < 1, got -0.1"),
        (
            "count = 2\nrefresh_at = 0.9\nrefresh_jitter = 0.2",
            "endpoints.refresh_jitter",
            "must keep refresh_at (0.9) +- jitter between 0 and 1, got 0.2",
        ),
        ("count = 2\nrefresh_at = 0.03", "endpoints.refresh_jitter", "got 0.05"),
        ('count = 2\nrefresh_margin = "abc"', "endpoints.refresh_margin", "must be a duration such as"),
        ("count = 2\nrefresh_margin = -1", "endpoints.refresh_margin", "got -1"),
        ("count = 2\nuser_agent = 5", "endpoints.user_agent", "must be a string, got 5"),
        (
            'count = 2\nsocket = "per-thread"',
            "endpoints.socket",
            "must be one of 'shared', 'per-endpoint', got 'per-thread'",
        ),
        ('count = 2\nsource_addresses = "127.0.0.300"', "endpoints.source_addresses", "got '127.0.0.300'"),
        (
            'count = 2\nsource_addresses = "127.0.0.9-127.0.0.2"',
            "endpoints.source_addresses",
            "from a lower to a higher address",
        ),
        ('count = 2\nsource_addresses = "127.0.0.1-::1"', "endpoints.source_addresses", "same family"),
        (
            'count = 2\ndigest_preference = ["SHA-1"]',
            "endpoints.digest_preference",
            "must be a non-empty list of 'MD5', 'SHA-256', got ['SHA-1']",
        ),
        ("count = 2\ndigest_preference = []", "endpoints.digest_preference", "got []"),
        ('count = 2\ndigest_preference = ["MD5", "md5"]', "endpoints.digest_preference", "must not repeat"),
        ('count = 2\ncsv_fields = ["username", "password"]', "endpoints.csv_fields", "only allowed with endpoints.csv"),
        ('count = 2\ncsv = "nope.csv"', "endpoints.csv", "file not found"),
    ],
)
def test_endpoint_errors(tmp_path: Path, body: str, field: str, fragment: str) -> None:
    message = bad(tmp_path, endpoints=body)
    assert f": {field}: " in message and fragment in message, message


def test_endpoints_section_missing_requires_count(tmp_path: Path) -> None:
    path = write(tmp_path, "[load]\nrate = 5\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: endpoints.count: required"


def test_single_endpoint_may_have_a_fixed_username(tmp_path: Path) -> None:
    s = good(tmp_path, endpoints='count = 1\nusername = "alice"\npassword = "secret"')
    assert s.endpoints.credentials(0) == Credential("alice", "secret", "alice")


def test_last_endpoint_username_is_validated(tmp_path: Path) -> None:
    assert (
        good(tmp_path, endpoints='count = 26\nfirst = 65\nusername = "u{n:c}"').endpoints.credentials(25).username
        == "uZ"
    )
    message = bad(tmp_path, endpoints='count = 27\nfirst = 65\nusername = "u{n:c}"')
    assert "endpoints.username: the last endpoint (n=91) gives the username 'u['" in message, message


def test_credentials_index(tmp_path: Path) -> None:
    ep = good(tmp_path, endpoints="count = 3\nfirst = 100").endpoints
    assert [ep.credentials(i).username for i in range(3)] == ["user100", "user101", "user102"]
    with pytest.raises(IndexError):
        ep.credentials(-1)


def test_refresh_delay(tmp_path: Path) -> None:
    ep = good(tmp_path, endpoints='count = 1\nrefresh_at = 0.5\nrefresh_jitter = 0.1\nrefresh_margin = "2s"').endpoints
    assert ep.refresh_delay(100) == 50.0
    assert ep.refresh_delay(100, 1.0) == pytest.approx(60.0)
    assert ep.refresh_delay(100, -1.0) == pytest.approx(40.0)
    assert ep.refresh_delay(3) == 1.0  # at least the margin before expiry
    assert ep.refresh_delay(1) == 0.0  # never negative


def test_address_range_ipv6_and_single() -> None:
    r = AddressRange(ipaddress.ip_address("::1"), ipaddress.ip_address("::3"))
    assert len(r) == 3 and [r[i] for i in range(4)] == ["::1", "::2", "::3", "::1"]


def test_single_source_address(tmp_path: Path) -> None:
    ep = good(tmp_path, endpoints='count = 2\nsource_addresses = "127.0.0.7"').endpoints
    assert ep.source_addresses is not None and len(ep.source_addresses) == 1 and ep.source_addresses[5] == "127.0.0.7"


# ------------------------------------------------------------------------------------------------- CSV


def test_csv_sequential_fixture() -> None:
    s = load_scenario(DATA / "csv_users.toml")
    ep = s.endpoints
    assert ep.csv == DATA / "users.csv" and ep.csv_mode is CsvMode.SEQUENTIAL
    assert ep.count == 3  # defaults to the number of rows; comments and blank lines skipped
    assert [ep.credentials(i) for i in range(4)] == [
        Credential("alice", "alice-secret", "alice"),
        Credential("bob", "bob-secret", "bob"),
        Credential("carol", "carol-secret", "carol"),
        Credential("alice", "alice-secret", "alice"),  # wraps
    ]


def test_csv_short_line_names_file_and_line() -> None:
    path = DATA / "csv_short_line.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == (
        f"{path}: endpoints.csv: {DATA / 'users_short_line.csv'}:4: 1 field(s), "
        "expected 2 (username, password)"  # the line is not quoted: it may hold a password
    )


def _csv_scenario(tmp_path: Path, csv: str, endpoints: str = "", top: str = "") -> Path:
    (tmp_path / "users.csv").write_text(csv, encoding="utf-8")
    return write(tmp_path, doc(top=top, endpoints=f'csv = "users.csv"\n{endpoints}'))


def test_csv_random_is_a_seeded_permutation(tmp_path: Path) -> None:
    text = (DATA / "users_random.csv").read_text()
    orders = []
    for seed in (1, 1, 2):
        s = load_scenario(_csv_scenario(tmp_path, text, top=f"seed = {seed}"))
        assert s.endpoints.csv_mode is CsvMode.RANDOM and s.endpoints.count == 20
        names = [s.endpoints.credentials(i).username for i in range(20)]
        assert sorted(names) == [f"u{i:02d}" for i in range(1, 21)]  # every row once
        assert s.endpoints.credentials(20) == s.endpoints.credentials(0)  # wraps
        assert s.endpoints.credentials(3).password == "p" + s.endpoints.credentials(3).username[1:]
        orders.append(names)
    assert orders[0] == orders[1] != orders[2]
    assert orders[0] != [f"u{i:02d}" for i in range(1, 21)]


def test_csv_user_mode_fields_and_bom(tmp_path: Path) -> None:
    path = _csv_scenario(
        tmp_path,
        "\ufeffUSER\nx;alice;auth-a;pw-a\ny;bob;;pw-b;extra;\n",
        'csv_fields = ["_", "username", "auth_user", "password"]\ncount = 1',
    )
    ep = load_scenario(path).endpoints
    assert ep.csv_mode is CsvMode.USER and ep.count == 1
    assert ep.credentials(0) == Credential("alice", "pw-a", "auth-a")
    assert ep.credentials(1) == Credential("bob", "pw-b", "bob")  # empty auth_user -> username


@pytest.mark.parametrize(
    ("csv", "endpoints", "fragment"),
    [
        ("FOO\na;b\n", "", "users.csv:1: the first line must be SEQUENTIAL, RANDOM or USER (no options), got 'FOO'"),
        ("SEQUENTIAL,PRINTF=10\na;b\n", "", ":1: the first line must be"),
        ("", "", ":1: the first line must be"),
        ("SEQUENTIAL\n// only a comment\n", "", "users.csv: no users after the first line"),
        ("SEQUENTIAL\na;b\nb c;d\n", "", "users.csv:3: invalid username 'b c'"),
        ("SEQUENTIAL\na;b\n;d\n", "", "users.csv:3: invalid username ''"),
        (
            "SEQUENTIAL\na;b;c\nd;e\n",
            'csv_fields = ["username", "password", "auth_user"]',
            "users.csv:3: 2 field(s), expected 3 (username, password, auth_user)",
        ),
    ],
)
def test_csv_file_errors(tmp_path: Path, csv: str, endpoints: str, fragment: str) -> None:
    path = _csv_scenario(tmp_path, csv, endpoints)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: endpoints.csv: ") and fragment in message, message


@pytest.mark.parametrize(
    ("endpoints", "field", "fragment"),
    [
        ("count = 4", "endpoints.count", "must not exceed the 3 user(s) in"),
        ("count = 0", "endpoints.count", "must be a positive integer, got 0"),
        ('username = "u{n}"', "endpoints.username", "not allowed with endpoints.csv"),
        ("first = 3", "endpoints.first", "not allowed with endpoints.csv"),
        ('csv_fields = ["user", "password"]', "endpoints.csv_fields", "must be a list of"),
        ('csv_fields = ["username"]', "endpoints.csv_fields", "must name username and password once"),
        ('csv_fields = ["username", "password", "password"]', "endpoints.csv_fields", "must name username"),
        ('csv_fields = "username"', "endpoints.csv_fields", "got 'username'"),
    ],
)
def test_csv_field_errors(tmp_path: Path, endpoints: str, field: str, fragment: str) -> None:
    path = _csv_scenario(tmp_path, "SEQUENTIAL\na;1\nb;2\nc;3\n", endpoints)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}: ") and fragment in message, message


def test_csv_not_utf8(tmp_path: Path) -> None:
    (tmp_path / "users.csv").write_bytes(b"SEQUENTIAL\n\xff\xfe;x\n")
    path = write(tmp_path, doc(endpoints='csv = "users.csv"'))
    with pytest.raises(ScenarioError, match=r"endpoints\.csv: .*users\.csv' is not UTF-8 text"):
        load_scenario(path)


# ------------------------------------------------------------------------------------------------ load


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ("rate = 0", "load.rate", "must be a number > 0, got 0"),
        ("rate = -1", "load.rate", "must be a number > 0, got -1"),
        ('rate = "fast"', "load.rate", "got 'fast'"),
        ("rate = inf", "load.rate", "got inf"),
        ("steps = []", "load.steps", "must be a non-empty list of { rate = ..., duration = ... }, got []"),
        ("steps = 5", "load.steps", "got 5"),
        ("steps = [ { rate = 10 } ]", "load.steps[0].duration", "required"),
        ('steps = [ { rate = 10, duration = "1s" }, 3 ]', "load.steps[1]", "must be a table, got 3"),
        ('steps = [ { rate = -1, duration = "1s" } ]', "load.steps[0].rate", "must be a number >= 0, got -1"),
        ('steps = [ { rate = 1, duration = "0s" } ]', "load.steps[0].duration", "must be a duration > 0, got '0s'"),
        (
            'steps = [ { rate = 10, duration = "1s" }, { rate = 0, duration = "1s" } ]',
            "load.steps[1].rate",
            "the last step must have a rate > 0",
        ),
        ('ramp = { from = -1, to = 5, duration = "1s" }', "load.ramp.from", "must be a number >= 0, got -1"),
        ('ramp = { from = 1, to = 0, duration = "1s" }', "load.ramp.to", "must be a number > 0, got 0"),
        ("ramp = { from = 1, to = 5 }", "load.ramp.duration", "required"),
        ('ramp = { from = 1, to = 5, duration = "x" }', "load.ramp.duration", "got 'x'"),
        ("ramp = 5", "load.ramp", "must be a table, got 5"),
        ("rate = 10\nmax_in_flight = 0", "load.max_in_flight", "must be a positive integer, got 0"),
        ('rate = 10\nunregister = "yes"', "load.unregister", "must be true or false, got 'yes'"),
        ('rate = 10\nunregister_timeout = "0s"', "load.unregister_timeout", "must be a duration > 0, got '0s'"),
        ("rate = 10\ninterval = 0", "load.interval", "must be a duration > 0, got 0"),
        ('rate = 10\nduration = "soon"', "load.duration", "got 'soon'"),
        ("rate = 1" + "0" * 400, "load.rate", "must be a number > 0, got 1000"),
        ("rate = 10\nduration = 1" + "0" * 400, "load.duration", "must be a duration such as"),
        ("rate = 1e-300", "load", "the rate is too low: 10 endpoints would never all arrive"),
    ],
)
def test_load_errors(tmp_path: Path, body: str, field: str, fragment: str) -> None:
    message = bad(tmp_path, load=body)
    assert f": {field}: " in message and fragment in message, message


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ("max_in_flight = 5", "load: one of rate, steps or ramp is required"),
        (
            'rate = 5\nsteps = [ { rate = 1, duration = "1s" } ]',
            "load: give only one of rate, steps or ramp, got rate and steps",
        ),
        ('rate = 5\nramp = { from = 1, to = 2, duration = "1s" }', "got rate and ramp"),
    ],
)
def test_load_shape_errors(tmp_path: Path, body: str, fragment: str) -> None:
    message = bad(tmp_path, load=body)
    assert message.endswith(fragment), message


def test_load_section_missing(tmp_path: Path) -> None:
    path = write(tmp_path, "[endpoints]\ncount = 1\n")
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == f"{path}: load: one of rate, steps or ramp is required"


def test_duration_too_short_names_both_values(tmp_path: Path) -> None:
    path = write(tmp_path, doc(endpoints="count = 100", load='rate = 10\nduration = "5s"'))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == (
        f"{path}: load.duration: 5s is shorter than the 9.9s that 100 endpoints need to arrive at 10/s"
    )
    assert good(tmp_path, endpoints="count = 100", load='rate = 10\nduration = "9.9s"').load.duration == 9.9
    message = bad(tmp_path, endpoints="count = 1000", load='steps = [ { rate = 100, duration = "1s" } ]\nduration = 2')
    assert (
        "load.duration: 2s is shorter than the 9.99s that 1000 endpoints need to arrive with the load steps" in message
    )
    message = bad(
        tmp_path, endpoints="count = 1000", load='ramp = { from = 0, to = 100, duration = "10s" }\nduration = 2'
    )
    assert "load.duration: 2s is shorter than the " in message and "on the load ramp" in message


def test_steps_and_ramp_parse() -> None:
    s = load_scenario(DATA / "steps.toml")
    assert s.load.shape is LoadShape.STEPS and s.load.rate is None
    assert s.load.steps == (Step(50.0, 10.0), Step(200.0, 10.0))
    assert s.load.duration == 30.0


# -------------------------------------------------------------------------------------------------- timers


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ('t1 = "0ms"', "timers.t1", "must be a duration > 0, got '0ms'"),
        ('t1 = "fast"', "timers.t1",
         "must be a duration such as '500ms', '30s', '2m', '1m30s', '1h' or a number of seconds"),
        ('t1 = "5s"', "timers.t2", "must not be shorter than timers.t1 (5s), got None"),
        ('t2 = "100ms"', "timers.t2", "must not be shorter than timers.t1 (500ms), got '100ms'"),
        ("t4 = -1", "timers.t4", "got -1"),
        ("max_retries = -1", "timers.max_retries", "must be an integer >= 0, got -1"),
        ('retry_backoff = "x"', "timers.retry_backoff", "got 'x'"),
        ('retry_backoff = "1m"', "timers.retry_backoff_max", "must not be shorter than timers.retry_backoff (60s)"),
    ],
)
def test_timer_errors(tmp_path: Path, body: str, field: str, fragment: str) -> None:
    message = bad(tmp_path, timers=body)
    assert f": {field}: " in message and fragment in message, message


# ----------------------------------------------------------------------------------------------- registrar


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        (
            'listen = "127.0.0.1"',
            "registrar.listen",
            "must be host:port such as '127.0.0.1:0' (port 0 = any free port), got '127.0.0.1'",
        ),
        ('listen = "127.0.0.1:70000"', "registrar.listen", "got '127.0.0.1:70000'"),
        ('listen = "bad host:5"', "registrar.listen", "got 'bad host:5'"),
        ("listen = 5060", "registrar.listen", "must be a string, got 5060"),
        ('realm = ""', "registrar.realm", "must be a non-empty string, got ''"),
        ("realm = 'a\"b'", "registrar.realm", "must not contain"),
        ('password = "{usr}"', "registrar.password", "unknown field {usr} (fields: {user}), got a secret (not shown)"),
        ('users_csv = "nope.csv"', "registrar.users_csv", "file not found"),
        ('algorithms = ["SHA-1"]', "registrar.algorithms", "must be a non-empty list of 'MD5', 'SHA-256'"),
        ("algorithms = []", "registrar.algorithms", "got []"),
        (
            "default_expires = 10\nmin_expires = 20",
            "registrar.default_expires",
            "must be between registrar.min_expires (20) and registrar.max_expires (7200), got 10",
        ),
        (
            "min_expires = 20\nmax_expires = 10",
            "registrar.max_expires",
            "must not be less than registrar.min_expires (20), got 10",
        ),
        ("max_expires = -1", "registrar.max_expires", "must be an integer >= 0, got -1"),
        ("nonce_lifetime = 0", "registrar.nonce_lifetime", "must be a duration > 0, got 0"),
        ("drop = 1.5", "registrar.drop", "must be a number >= 0 and <= 1, got 1.5"),
        ("drop = -0.1", "registrar.drop", "got -0.1"),
        ("error_503 = 2", "registrar.error_503", "must be a number >= 0 and <= 1, got 2"),
        ("retry_after = -1", "registrar.retry_after", "must be an integer >= 0, got -1"),
        ('delay = "fast"', "registrar.delay", "got 'fast'"),
        (
            'delay = { distribution = "normal" }',
            "registrar.delay.distribution",
            "must be one of 'uniform', 'exponential', got 'normal'",
        ),
        ('delay = { min = "1ms" }', "registrar.delay.distribution", "got None"),
        (
            'delay = { distribution = "uniform", min = "5ms", max = "1ms" }',
            "registrar.delay.max",
            "must not be less than registrar.delay.min (5ms), got '1ms'",
        ),
        ('delay = { distribution = "uniform", min = "1ms" }', "registrar.delay.max", "required"),
        (
            'delay = { distribution = "exponential", min = "1ms" }',
            "registrar.delay",
            "unknown key 'min' (known: distribution, mean)",
        ),
        ('delay = { distribution = "exponential", mean = "-1ms" }', "registrar.delay.mean", "got '-1ms'"),
    ],
)
def test_registrar_errors(tmp_path: Path, body: str, field: str, fragment: str) -> None:
    message = bad(tmp_path, registrar=body)
    assert f": {field}: " in message and fragment in message, message


def test_registrar_section_only_for_embedded(tmp_path: Path) -> None:
    path = write(tmp_path, doc(target='registrar = "sip:127.0.0.1:5070"', registrar='realm = "x"'))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == (
        f"{path}: registrar: only allowed when target.registrar is 'embedded' (it is 'sip:127.0.0.1:5070')"
    )


def test_registrar_password_and_users_csv_exclusive(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("a;b\n")
    message = bad(tmp_path, registrar='users_csv = "u.csv"\npassword = "x{user}"')
    assert ": registrar.password: not allowed with registrar.users_csv, got a secret (not shown)" in message


def test_registrar_users_csv(tmp_path: Path) -> None:
    (tmp_path / "u.csv").write_text("SEQUENTIAL\n# comment\nalice;secret;\nbob;pw2\n\n")
    reg = good(tmp_path, registrar='users_csv = "u.csv"').registrar
    assert reg is not None and reg.users_csv == tmp_path / "u.csv"
    assert reg.password_for("alice") == "secret" and reg.password_for("bob") == "pw2"
    assert reg.password_for("carol") is None
    (tmp_path / "u.csv").write_text("alice;secret\nbroken\n")
    message = bad(tmp_path, registrar='users_csv = "u.csv"')
    assert f": registrar.users_csv: {tmp_path / 'u.csv'}:2: expected user;password" in message
    assert "broken" not in message  # a line of a password file is never quoted


def test_registrar_defaults_follow_domain_and_limits(tmp_path: Path) -> None:
    reg = good(tmp_path, target='domain = "corp.test"', registrar="max_expires = 600").registrar
    assert reg is not None and reg.realm == "corp.test" and reg.default_expires == 600


def test_delay_distributions(tmp_path: Path) -> None:
    reg = good(tmp_path, registrar='delay = "2ms"').registrar
    assert reg is not None and reg.delay == Delay(DelayDistribution.FIXED, value=0.002)
    assert reg.delay.sample(random.Random(1)) == 0.002
    reg = good(tmp_path, registrar='delay = { distribution = "exponential", mean = "2ms" }').registrar
    assert reg is not None and reg.delay == Delay(DelayDistribution.EXPONENTIAL, mean=0.002)
    samples = [reg.delay.sample(random.Random(i)) for i in range(2000)]
    assert min(samples) >= 0 and 0.0015 < sum(samples) / len(samples) < 0.0025
    uniform = Delay(DelayDistribution.UNIFORM, low=0.001, high=0.005)
    assert all(0.001 <= uniform.sample(random.Random(i)) <= 0.005 for i in range(100))


def test_registrar_section_is_the_registrars_own_settings(tmp_path: Path) -> None:
    s = good(tmp_path, top="seed = 7", registrar='password = "x-{user}"\ndelay = "3ms"\nalgorithms = ["sha-256"]')
    reg = s.registrar
    assert isinstance(reg, RegistrarSettings) and isinstance(reg.delay, DelaySpec)
    assert reg.seed == 7 and reg.password_template == "x-{user}" and reg.algorithms == (Algorithm.SHA256,)
    assert reg.delay == Delay(value=0.003) and reg.delay.kind is DelayKind.FIXED and reg.delay.a == 0.003
    settings = registrar_settings(reg, 1)
    assert settings.seed == 1 and settings.realm == reg.realm and settings.delay == reg.delay
    assert pickle.loads(pickle.dumps(s)) == s  # workers are spawned with the scenario


@pytest.mark.parametrize(
    ("delay", "spec"),
    [
        (Delay(), DelaySpec()),
        (Delay(value=0.0), DelaySpec()),
        (Delay(DelayDistribution.FIXED, value=0.002), DelaySpec(DelayKind.FIXED, 0.002)),
        (Delay(DelayDistribution.UNIFORM, low=0.001, high=0.005), DelaySpec(DelayKind.UNIFORM, 0.001, 0.005)),
        (Delay(DelayDistribution.EXPONENTIAL, mean=0.002), DelaySpec(DelayKind.EXPONENTIAL, 0.002)),
    ],
)
def test_delay_is_the_registrars_delay_spec(delay: Delay, spec: DelaySpec) -> None:
    assert (delay.kind, delay.a, delay.b) == (spec.kind, spec.a, spec.b)
    assert [delay.sample(random.Random(i)) for i in range(20)] == [spec.sample(random.Random(i)) for i in range(20)]
    assert Delay(delay.distribution, value=delay.value, low=delay.low, high=delay.high, mean=delay.mean) == delay


@pytest.mark.parametrize(
    ("body", "field", "fragment"),
    [
        ("min_expires = 0", "registrar.min_expires", "must be a positive integer, got 0"),
        (
            'password = "secret"',
            "registrar.password",
            "must contain {user} (the digest username), got a secret (not shown)",
        ),
    ],
)
def test_registrar_rules_of_the_registrar_settings(tmp_path: Path, body: str, field: str, fragment: str) -> None:
    message = bad(tmp_path, registrar=body)
    assert f": {field}: " in message and fragment in message, message


# ------------------------------------------------------------------------------------ top level, keys, files


@pytest.mark.parametrize(
    ("top", "field", "fragment"),
    [
        ('name = ""', "name", "must be a non-empty string, got ''"),
        ("name = 5", "name", "must be a non-empty string, got 5"),
        ("description = 5", "description", "must be a string, got 5"),
        ('seed = "x"', "seed", "must be an integer, got 'x'"),
        (
            'thresholds = "timeouts == 0"',
            "thresholds",
            "must be a list, each item a string such as 'register.p99 < 200ms' or a table such as "
            "{ expr = 'register.success_rate == 100%', abort_on_fail = true, delay = '10s' }, got 'timeouts == 0'",
        ),
        (
            'thresholds = ["timeouts == 0", 5]',
            "thresholds[1]",
            "must be a string such as 'register.p99 < 200ms' or a table such as "
            "{ expr = 'register.success_rate == 100%', abort_on_fail = true, delay = '10s' }, got 5",
        ),
        (
            'thresholds = ["timeouts == 0", "register.p99 < 200ms", "register.p99 < 5%"]',
            "thresholds[2]",
            "'register.p99 < 5%': unit mismatch",
        ),
        ('thresholds = ["register.p98 < 5ms"]', "thresholds[0]", "unknown metric 'register.p98'"),
        ("endpoints = 5", "endpoints", "must be a table, got 5"),
        ("target = []", "target", "must be a table, got []"),
    ],
)
def test_top_level_errors(tmp_path: Path, top: str, field: str, fragment: str) -> None:
    text = doc(top=top, endpoints="count = 1") if not top.startswith("endpoints") else top + "\n[load]\nrate = 1\n"
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {field}: ") and fragment in message, message


@pytest.mark.parametrize(
    ("sections", "where", "key"),
    [
        ({"top": "colour = 1"}, "", "colour"),
        ({"target": "registar = 'embedded'"}, "target: ", "registar"),
        ({"endpoints": "count = 1\ncout = 2"}, "endpoints: ", "cout"),
        ({"load": "rat = 5"}, "load: ", "rat"),
        ({"load": 'steps = [ { rate = 1, duration = "1s", ramp = 2 } ]'}, "load.steps[0]: ", "ramp"),
        ({"load": 'ramp = { from = 1, to = 2, duration = "1s", mid = 3 }'}, "load.ramp: ", "mid"),
        ({"timers": "t3 = 1"}, "timers: ", "t3"),
        ({"registrar": "port = 1"}, "registrar: ", "port"),
        (
            {"registrar": 'delay = { distribution = "uniform", min = 0, max = 1, mean = 1 }'},
            "registrar.delay: ",
            "mean",
        ),
    ],
)
def test_unknown_keys_at_every_level(tmp_path: Path, sections: dict[str, str], where: str, key: str) -> None:
    path = write(tmp_path, doc(**sections))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {where}unknown key {key!r} (known: "), message


def test_unknown_key_message_lists_known_keys(tmp_path: Path) -> None:
    path = write(tmp_path, doc(load="rat = 5"))
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value) == (
        f"{path}: load: unknown key 'rat' (known: rate, steps, ramp, max_in_flight, duration, "
        "unregister, unregister_timeout, interval, tick, engine)"
    )


def test_top_level_key_after_a_section_gets_a_hint(tmp_path: Path) -> None:
    path = write(tmp_path, doc(load='rate = 5\nthresholds = ["timeouts == 0"]'))
    with pytest.raises(ScenarioError, match="top-level keys such as 'thresholds' must come before the first"):
        load_scenario(path)


def test_invalid_toml_names_line_and_column() -> None:
    path = DATA / "bad_toml.toml"
    with pytest.raises(ScenarioError) as info:
        load_scenario(path)
    assert str(info.value).startswith(f"{path}: invalid TOML at line 3, column 8: "), str(info.value)


@pytest.mark.parametrize("text", ["[load", "a = ", "x = 1\nx = 2", "s = 'unterminated", "[a]\n[a]"])
def test_invalid_toml_variants(tmp_path: Path, text: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ScenarioError, match=r"^.*s\.toml: invalid TOML"):
        load_scenario(path)


def test_file_errors(tmp_path: Path) -> None:
    message = bad(tmp_path, endpoints=f'csv = "{"x" * 300}.csv"')
    assert ": endpoints.csv: file not found: " in message
    with pytest.raises(ScenarioError) as info:
        load_scenario("scenarios/nope.toml")
    assert str(info.value) == "scenarios/nope.toml: file not found"
    with pytest.raises(ScenarioError, match="is a directory"):
        load_scenario(tmp_path)
    (tmp_path / "latin1.toml").write_bytes(b'name = "caf\xe9"\n')
    with pytest.raises(ScenarioError, match=r"latin1\.toml: not UTF-8 text \(byte 11\)"):
        load_scenario(tmp_path / "latin1.toml")


def test_parse_scenario_from_text() -> None:
    s = parse_scenario("[endpoints]\ncount = 2\n[load]\nrate = 1\n", "inline.toml")
    assert s.name == "inline" and s.endpoints.count == 2 and s.load.duration == 1.0
    with pytest.raises(ScenarioError, match=r"^inline\.toml: endpoints\.count: "):
        parse_scenario("[endpoints]\ncount = 0\n[load]\nrate = 1\n", "inline.toml")


_TOML_VALUES = st.recursive(
    st.none().map(lambda _: "1")
    | st.integers(-5, 5).map(str)
    | st.sampled_from(['"x"', '"10s"', "true", "1.5", "[]", '"sip:h"', '"embedded"', '"user{n}"', '"{"', "-1", "0"]),
    lambda inner: st.lists(inner, max_size=3).map(lambda xs: "[" + ", ".join(xs) + "]"),
    max_leaves=4,
)
_KEYS = st.sampled_from(
    [
        "count",
        "rate",
        "duration",
        "registrar",
        "username",
        "password",
        "steps",
        "ramp",
        "expires",
        "t1",
        "listen",
        "delay",
        "csv",
        "thresholds",
        "name",
        "first",
        "socket",
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    st.lists(
        st.tuples(st.sampled_from(["", "target", "endpoints", "load", "timers", "registrar"]), _KEYS, _TOML_VALUES),
        max_size=8,
    )
)
def test_any_document_loads_or_raises_scenario_error(items: list[tuple[str, str, str]]) -> None:
    sections: dict[str, dict[str, str]] = {}
    for section, key, value in items:
        sections.setdefault(section, {})[key] = value
    text = "\n".join(f"{k} = {v}" for k, v in sections.pop("", {}).items())
    for section, body in sections.items():
        text += f"\n[{section}]\n" + "\n".join(f"{k} = {v}" for k, v in body.items())
    try:
        parse_scenario(text, "fuzz.toml")
    except ScenarioError as exc:
        assert str(exc).startswith("fuzz.toml: ")


# ------------------------------------------------------------------------------------------------ overrides


def test_overrides_apply_and_revalidate() -> None:
    smoke = load_scenario(ROOT / "scenarios" / "smoke.toml")
    s = smoke.with_overrides(endpoints=50, rate=10, duration=12.5)
    assert (s.endpoints.count, s.load.rate, s.load.duration) == (50, 10.0, 12.5)
    assert (smoke.endpoints.count, smoke.load.rate) == (200, 100.0)  # the original is unchanged
    assert s.with_overrides() == s
    steps = load_scenario(DATA / "steps.toml").with_overrides(rate=1000)
    assert steps.load.shape is LoadShape.CONSTANT and steps.load.steps == () and steps.load.rate == 1000


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"rate": 0}, "--rate: must be > 0, got 0"),
        ({"rate": -2.5}, "--rate: must be > 0, got -2.5"),
        ({"rate": math.nan}, "--rate: must be > 0, got nan"),
        ({"endpoints": 0}, "--endpoints: must be a positive integer, got 0"),
        ({"endpoints": True}, "--endpoints: must be a positive integer, got true"),
        ({"duration": 0}, "--duration: must be > 0, got 0"),
        ({"duration": -1.0}, "--duration: must be > 0, got -1.0"),
        ({"target": "http://x"}, "--target: must start with sip: or sips:, got 'http://x'"),
        ({"duration": 1.0}, "--duration: 1s is shorter than the 1.99s that 200 endpoints need to arrive at 100/s"),
    ],
)
def test_override_errors_name_the_flag(kwargs: dict[str, object], message: str) -> None:
    smoke = load_scenario(ROOT / "scenarios" / "smoke.toml")
    with pytest.raises(ScenarioError) as info:
        smoke.with_overrides(**kwargs)  # type: ignore[arg-type]
    assert str(info.value) == message


def test_override_cross_field_errors_mention_the_flags() -> None:
    smoke = load_scenario(ROOT / "scenarios" / "smoke.toml")
    with pytest.raises(ScenarioError) as info:
        smoke.with_overrides(endpoints=5000)
    assert str(info.value) == (
        "scenarios/smoke.toml: load.duration: 25s is shorter than the 49.99s that 5000 "
        "endpoints need to arrive at 100/s (with --endpoints 5000)".replace(
            "scenarios/smoke.toml", str(ROOT / "scenarios" / "smoke.toml")
        )
    )
    csv = load_scenario(DATA / "csv_users.toml")
    with pytest.raises(ScenarioError, match=r"^--endpoints: must not exceed the 3 user\(s\) in .*, got 4$"):
        csv.with_overrides(endpoints=4)


def test_override_default_duration_follows_the_new_load(tmp_path: Path) -> None:
    s = good(tmp_path, endpoints="count = 10", load="rate = 10")
    assert s.load.duration == 0.9
    assert s.with_overrides(endpoints=21, rate=2).load.duration == 10.0


def test_override_target() -> None:
    smoke = load_scenario(ROOT / "scenarios" / "smoke.toml")
    s = smoke.with_overrides(target="sip:127.0.0.1:5080;transport=tcp")
    assert s.registrar is None and s.target.transport is Transport.TCP
    assert s.target.domain == "sipload.test"  # the scenario's domain is kept
    kam = load_scenario(ROOT / "scenarios" / "kamailio.toml")
    e = kam.with_overrides(target="embedded")
    assert e.target.embedded and e.registrar is not None
    assert e.target.domain == "127.0.0.1" and e.registrar.realm == "127.0.0.1"
    tls = kam.with_overrides(target="sips:127.0.0.1:5071")
    assert tls.target.transport is Transport.TLS and tls.target.uri is not None
    assert tls.target.uri.effective_port == 5071


# ------------------------------------------------------------------------------------------ arrival schedule


def _load(**kwargs: object) -> Load:
    return Load(**kwargs)  # type: ignore[arg-type]


def test_constant_arrivals_exact() -> None:
    load = _load(rate=10.0)
    assert list(load.arrival_times(5)) == [0.0, 0.1, 0.2, 0.3, 0.4]
    assert list(load.arrival_times(0)) == []
    # no drift: the millionth arrival at 3/s is exactly 10**6 / 3, unlike a running sum of 1/3
    times = list(_load(rate=3.0).arrival_times(10**6 + 1))
    assert times[-1] == 10**6 / 3
    running = 0.0
    for _ in range(10**6):
        running += 1 / 3
    assert running != 10**6 / 3
    assert load.rate_at(-1) == load.rate_at(0) == load.rate_at(1e9) == 10.0


def test_step_arrivals_exact() -> None:
    load = _load(steps=(Step(50.0, 10.0), Step(200.0, 10.0)))
    times = list(load.arrival_times(2601))
    assert len(times) == 2601
    assert times[:3] == [0.0, 0.02, 0.04] and times[499] == 499 / 50
    assert times[500] == 10.0 and times[501] == 10.0 + 1 / 200
    assert times[2499] == 10.0 + 1999 / 200
    assert times[2500] == 20.0 and times[2600] == 20.5  # the last step's rate continues
    assert [load.rate_at(t) for t in (0, 9.99, 10, 19.9, 25)] == [50, 50, 200, 200, 200]
    assert load.arrival_time(2600) == 20.5


def test_steps_with_pause_and_fractional_boundaries() -> None:
    load = _load(steps=(Step(10.0, 1.0), Step(0.0, 5.0), Step(10.0, 1.0)))
    times = list(load.arrival_times(12))
    assert times[9] == 0.9 and times[10] == 6.0 and times[11] == 6.1
    assert load.rate_at(3) == 0
    # 2.5 arrivals due in the first step: arrivals 0, 1, 2 in it, arrival 3 at 1 + 0.5/4
    frac = _load(steps=(Step(2.5, 1.0), Step(4.0, 1.0)))
    assert list(frac.arrival_times(5)) == [0.0, 0.4, 0.8, 1.125, 1.375]


def test_ramp_arrivals() -> None:
    load = _load(ramp=Ramp(10.0, 500.0, 60.0))
    slope = 490 / 60
    times = list(load.arrival_times(15801))
    for k in (1, 2, 100, 5000, 15299):
        t = times[k]
        assert 10 * t + slope * t * t / 2 == pytest.approx(k, rel=1e-12)
    assert times[15300] == 60.0  # N(60) = 10*60 + 490*30 = 15300
    assert times[15800] == 61.0  # then 500/s
    assert load.rate_at(0) == 10 and load.rate_at(30) == pytest.approx(255) and load.rate_at(99) == 500
    down = list(_load(ramp=Ramp(100.0, 10.0, 10.0)).arrival_times(600))
    assert down[550] == 10.0 and down[599] == pytest.approx(14.9)  # N(10) = 550
    zero = list(_load(ramp=Ramp(0.0, 2.0, 2.0)).arrival_times(3))  # rate t: N(t) = t^2/2
    assert zero[0] == 0.0 and zero[1] == pytest.approx(math.sqrt(2)) and zero[2] == 2.0


@settings(max_examples=200, deadline=None)
@given(st.floats(0.01, 1e6), st.integers(0, 10**7))
def test_constant_kth_arrival_is_k_over_r(rate: float, k: int) -> None:
    assert _load(rate=rate).arrival_time(k) == k / rate


@settings(max_examples=100, deadline=None)
@given(st.floats(0.01, 1e5), st.integers(1, 2000))
def test_constant_arrival_times_are_k_over_r(rate: float, count: int) -> None:
    assert list(_load(rate=rate).arrival_times(count)) == [k / rate for k in range(count)]


_rates = st.just(0.0) | st.floats(0.01, 5000.0)
_durations = st.floats(0.001, 100.0)
_steps = st.lists(st.builds(Step, _rates, _durations), min_size=1, max_size=6).filter(lambda s: s[-1].rate > 0)
_ramps = st.builds(Ramp, _rates, st.floats(0.01, 5000.0), _durations)


@settings(max_examples=200, deadline=None)
@given(
    st.one_of(
        _steps.map(lambda s: _load(steps=tuple(s))),
        _ramps.map(lambda r: _load(ramp=r)),
        st.floats(0.01, 1e5).map(lambda r: _load(rate=r)),
    ),
    st.integers(0, 3000),
)
def test_arrivals_are_non_decreasing_and_match_the_integral(load: Load, count: int) -> None:
    times = list(load.arrival_times(count))
    assert len(times) == count
    assert all(a <= b for a, b in itertools.pairwise(times))
    assert all(t >= 0 for t in times)
    for k in range(0, count, max(1, count // 7)):
        assert _integral(load, times[k]) == pytest.approx(k, rel=1e-6, abs=1e-6)
        assert load.arrival_time(k) == pytest.approx(times[k], rel=1e-12, abs=1e-12)


def _integral(load: Load, t: float) -> float:
    """Arrivals due by t: the integral of the rate, computed independently (exact for steps)."""
    if load.ramp is not None:
        r = load.ramp
        if t <= r.duration:
            return r.start_rate * t + (r.end_rate - r.start_rate) / r.duration * t * t / 2
        return (r.start_rate + r.end_rate) * r.duration / 2 + r.end_rate * (t - r.duration)
    if load.steps:
        total, start = Fraction(0), Fraction(0)
        for i, step in enumerate(load.steps):
            end = start + Fraction(step.duration)
            last = i == len(load.steps) - 1
            span = Fraction(t) - start if last else min(Fraction(t), end) - start
            total += Fraction(step.rate) * max(span, Fraction(0))
            start = end
        return float(total)
    assert load.rate is not None
    return load.rate * t


# ---------------------------------------------------------------------------------------------- bundled


def test_bundled_smoke_scenario() -> None:
    s = load_scenario(ROOT / "scenarios" / "smoke.toml")
    assert s.name == "smoke" and s.target.embedded and s.registrar is not None
    ep = s.endpoints
    assert 150 <= ep.count <= 250 and ep.expires == 10
    last = s.load.arrival_time(ep.count - 1)
    # each endpoint renews at least twice within the run, even with the latest jitter
    assert last + 2 * ep.refresh_delay(ep.expires, 1.0) < s.load.duration
    assert s.load.unregister and s.load.duration + s.load.unregister_timeout + last < 60
    assert s.registrar.password_for(ep.credentials(0).auth_user) == ep.credentials(0).password
    assert {t.metric for t in s.thresholds} >= {
        "register.p99",
        "register.success_rate",
        "timeouts",
        "unregister.success_rate",
    }


def test_bundled_kamailio_scenario() -> None:
    s = load_scenario(ROOT / "scenarios" / "kamailio.toml")
    assert s.target.uri is not None and str(s.target.uri) == "sip:127.0.0.1:5070"
    assert s.target.transport is Transport.UDP and s.target.domain == "127.0.0.1" and s.registrar is None
    assert 200 <= s.endpoints.count <= 900 and s.endpoints.expires == 10
    assert s.endpoints.credentials(41) == Credential("user42", "pw-user42", "user42")
    last = s.load.arrival_time(s.endpoints.count - 1)
    assert last + 3 * s.endpoints.refresh_delay(10, 1.0) < s.load.duration  # renews at least three times
