"""Reading `[[groups]]`: shares and counts, overrides, behaviours, the fleet plan, and errors
that name the file, the field and the value."""

from __future__ import annotations

from pathlib import Path

import pytest

from sipload.scenario import Scenario, ScenarioError, Transport, parse_scenario
from sipload.scenario.groups import Role, interleave, largest_remainder, plan_fleet

BASE = """
name = "g"
seed = 9
[target]
registrar = "TARGET"
[endpoints]
count = COUNT
expires = 600
user_agent = "base/1"
[load]
rate = 100
"""


def sc(groups: str, *, count: int = 10, target: str = "embedded") -> Scenario:
    text = BASE.replace("TARGET", target).replace("COUNT", str(count)) + groups
    return parse_scenario(text, Path("g.toml"))


def error(groups: str, **kwargs: object) -> str:
    with pytest.raises(ScenarioError) as info:
        sc(groups, **kwargs)  # type: ignore[arg-type]
    return str(info.value)


def test_without_groups_one_default_group_is_the_endpoints_section() -> None:
    s = sc("")
    (group,) = s.fleet
    assert group.name == "default" and group.count == 10 and group.endpoints is s.endpoints
    assert group.transport is Transport.UDP and group.churn is None and not group.outbound
    plan = plan_fleet(s.fleet, 10, s.seed)
    assert set(plan.group) == {0} and set(plan.role) == {Role.NORMAL}


def test_shares_round_to_exactly_the_endpoint_count_and_overrides_apply() -> None:
    s = sc("""
[[groups]]
name = "desk"
share = 0.7
[[groups]]
name = "soft"
share = 0.2
transport = "tcp"
expires = 300
refresh_at = 0.8
user_agent = "soft/2"
username = "soft{n}"
password = "pw-{username}"
keepalive = "30s"
outbound = true
gruu = true
[[groups]]
name = "web"
share = 0.1
""", count=7)
    desk, soft, web = s.fleet
    assert (desk.count, soft.count, web.count) == (5, 1, 1)  # 4.9, 1.4, 0.7 by largest remainder
    assert soft.transport is Transport.TCP and soft.endpoints.expires == 300 and soft.endpoints.refresh_at == 0.8
    assert soft.endpoints.user_agent == "soft/2" and desk.endpoints.user_agent == "base/1"
    assert soft.endpoints.credentials(3).username == "soft4" and desk.endpoints.credentials(3).username == "user4"
    assert (soft.keepalive, soft.outbound, soft.gruu) == (30.0, True, True)
    assert (desk.keepalive, desk.outbound, desk.gruu) == (0.0, False, False)
    s2 = s.with_overrides(endpoints=1000)
    assert [g.count for g in s2.fleet] == [700, 200, 100]


def test_counts_and_largest_remainder() -> None:
    s = sc("""
[[groups]]
name = "a"
count = 3
[[groups]]
name = "b"
count = 7
""")
    assert [g.count for g in s.fleet] == [3, 7]
    assert largest_remainder([1 / 3, 1 / 3, 1 / 3], 10) == [4, 3, 3]
    assert sum(largest_remainder([0.123, 0.456, 0.421], 997)) == 997


def test_plan_interleaves_groups_and_is_a_pure_function_of_the_scenario() -> None:
    assert interleave([7, 2, 1]).count(0) == 7 and interleave([7, 2, 1])[:3] != b"\0\0\0"
    s = sc("""
[[groups]]
name = "a"
share = 0.5
wrong_passwords = 0.1
churn = { share = 0.2, every = "60s", away = "30s" }
flap = { share = 0.3, period = "10s" }
[[groups]]
name = "b"
share = 0.5
avalanche = ["30s", "10s"]
""", count=100)
    plan = plan_fleet(s.fleet, 100, s.seed)
    assert plan == plan_fleet(s.fleet, 100, s.seed)  # every worker process computes the same plan
    a = [i for i in range(100) if plan.group[i] == 0]
    roles = [plan.role[i] for i in a]
    assert len(a) == 50
    assert (roles.count(Role.WRONG_PASSWORD), roles.count(Role.CHURN), roles.count(Role.FLAP)) == (5, 10, 15)
    assert all(plan.role[i] == Role.NORMAL for i in range(100) if plan.group[i] == 1)
    assert s.fleet[1].avalanche == (10.0, 30.0)
    other = plan_fleet(s.fleet, 100, 10)
    assert other.group == plan.group and other.role != plan.role  # the seed picks the devices


def test_target_registrar_may_be_a_list() -> None:
    s = sc("", target="sip:127.0.0.1:5070")
    assert [str(u) for u in s.target.registrars] == ["sip:127.0.0.1:5070"]
    text = BASE.replace('registrar = "TARGET"', 'registrar = ["sip:127.0.0.1:5070", "sip:127.0.0.2:5080"]')
    s = parse_scenario(text.replace("COUNT", "3"), Path("g.toml"))
    assert [str(u) for u in s.target.registrars] == ["sip:127.0.0.1:5070", "sip:127.0.0.2:5080"]
    assert s.target.uri == s.target.registrars[0]


@pytest.mark.parametrize(
    ("groups", "fragment"),
    [
        ('[[groups]]\nname = "a"\nshare = 0.5\n[[groups]]\nname = "b"\nshare = 0.4',
         "g.toml: groups[1].share: the shares must add up to 1, got 0.9"),
        ('[[groups]]\nname = "a"\ncount = 4\n[[groups]]\nname = "b"\ncount = 4',
         "g.toml: groups[1].count: the groups' counts add up to 8, endpoints.count is 10"),
        ('[[groups]]\nname = "a"\nshare = 0.5\n[[groups]]\nname = "b"\ncount = 5',
         "g.toml: groups[1]: give every group a share or every group a count, not a mix"),
        ('[[groups]]\nname = "a"\nshare = 1.5', "g.toml: groups[0].share: must be a number > 0 and <= 1, got 1.5"),
        ('[[groups]]\nname = "a"', "g.toml: groups[0]: needs a share"),
        ('[[groups]]\nname = "a"\nshare = 1\ncolour = "red"', "g.toml: groups[0]: unknown key 'colour'"),
        ('[[groups]]\nname = "a"\nshare = 0.5\n[[groups]]\nname = "a"\nshare = 0.5',
         "g.toml: groups[1].name: must be unique among the groups, got 'a'"),
        ('[[groups]]\nname = "a"\nshare = 1\ntransport = "tls"', "g.toml: groups[0].transport: the embedded registrar"),
        ('[[groups]]\nname = "a"\nshare = 1\ntransport = "sctp"', "groups[0].transport: must be one of"),
        ('[[groups]]\nname = "a"\nshare = 1\nwrong_passwords = 2', "groups[0].wrong_passwords: must be a number"),
        ('[[groups]]\nname = "a"\nshare = 1\nchurn = { share = 0.2, every = "soon", away = "1s" }',
         "g.toml: groups[0].churn.every: must be"),
        ('[[groups]]\nname = "a"\nshare = 1\nchurn = 3', "g.toml: groups[0].churn: must be a table"),
        ('[[groups]]\nname = "a"\nshare = 1\nflap = { share = 0.2 }', "g.toml: groups[0].flap.period: required"),
        ('[[groups]]\nname = "a"\nshare = 1\navalanche = ["30s", "later"]',
         "g.toml: groups[0].avalanche[1]: must be"),
        ('[[groups]]\nname = "a"\nshare = 1\nwrong_passwords = 0.6\nflap = { share = 0.5, period = "1s" }',
         "g.toml: groups[0]: wrong_passwords, churn.share and flap.share add up to 1.1"),
        ('[[groups]]\nname = "a"\nshare = 1\nusername = "fixed"',
         "g.toml: groups[0].username: must use {n}"),
        ('[[groups]]\nname = "a"\nshare = 1\npassword = "{nope}"',
         "g.toml: groups[0].password: template cannot be rendered"),
        ('[[groups]]\nname = "a"\nshare = 1\nrefresh_at = 0.96', "g.toml: groups[0].refresh_jitter"),
    ],
)
def test_group_errors_name_file_field_and_value(groups: str, fragment: str) -> None:
    message = error(groups)
    assert fragment in message, message
    assert "pw-" not in message  # a password template is never quoted


def test_groups_must_be_a_list_of_tables() -> None:
    expected = r"g.toml: groups: must be a non-empty list of \[\[groups\]\] tables, got 5"
    with pytest.raises(ScenarioError, match=expected):
        parse_scenario("groups = 5\n" + BASE.replace("TARGET", "embedded").replace("COUNT", "2"), Path("g.toml"))


def test_list_registrar_errors() -> None:
    text = BASE.replace('registrar = "TARGET"', 'registrar = ["sip:127.0.0.1:5070", "http://x"]').replace("COUNT", "2")
    with pytest.raises(ScenarioError, match=r"g.toml: target.registrar\[1\]: must be a SIP URI .*'http://x'"):
        parse_scenario(text, Path("g.toml"))
    text = BASE.replace('registrar = "TARGET"', "registrar = []").replace("COUNT", "2")
    with pytest.raises(ScenarioError, match=r"g.toml: target.registrar: must be 'embedded', a SIP URI or a non"):
        parse_scenario(text, Path("g.toml"))
