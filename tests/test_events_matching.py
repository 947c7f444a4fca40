"""Matching provider events to the endpoints' transitions (sans-IO: times are given, nothing waits)."""

from __future__ import annotations

from sipload.providers.events import events_line, match_events
from sipload.providers.webhook_receiver import Received
from sipload.thresholds import parse_threshold


def ev(at: float, kind: str, device: str | None) -> Received:
    return Received(at, f"device.{kind}", device, kind)


def user_of(device: str) -> str | None:
    return device.removeprefix("dev_") if device.startswith("dev_") else None


TRANSITIONS = {
    "u1": (("registered", 100.0), ("unregistered", 110.0)),
    "u2": (("registered", 101.0), ("offline", 105.0), ("registered", 130.0)),
    "u3": (("registered", 102.0),),
}


def test_each_event_matches_its_transition_and_its_latency_is_recorded() -> None:
    received = [ev(100.004, "registered", "dev_u1"), ev(101.010, "registered", "dev_u2"),
                ev(102.002, "registered", "dev_u3"), ev(110.006, "unregistered", "dev_u1"),
                ev(125.0, "offline", "dev_u2"), ev(130.020, "registered", "dev_u2")]
    result = match_events(TRANSITIONS, received, user_of)
    reg = result.kinds["registered"]
    assert (reg.expected, reg.matched, reg.missing) == (4, 4, 0)
    assert 1.9 < reg.latency.percentiles_us([50.0])[50.0] / 1000 < 4.1
    assert 19.9 < result.kinds["offline"].latency.max_us / 1e6 < 20.1   # announced at the expiry, 20 s later
    assert result.out_of_order == 0 and result.total("missing") == 0
    values = result.metric_values()
    assert values["webhook.registered.count"] == 4 and values["webhook.missing"] == 0
    assert 19 < values["webhook.registered.max"] < 21                     # u2's second registration: 20 ms
    assert parse_threshold("webhook.registered.p99 < 2s").check(values["webhook.registered.p99"])
    assert events_line(result).startswith("registered 4/4 p50 ")


def test_missing_duplicate_unexpected_unknown_and_out_of_order() -> None:
    received = [ev(100.01, "registered", "dev_u1"), ev(100.02, "registered", "dev_u1"),   # a duplicate
                ev(102.5, "offline", "dev_u3"),                                          # never went away
                ev(103.0, "registered", "dev_nobody"), ev(103.1, "registered", "phone-9"),   # unknown
                ev(120.0, "unregistered", "dev_u1"), ev(121.0, "registered", "dev_u1"),   # nothing new
                ev(131.0, "registered", "dev_u2"), ev(131.5, "offline", "dev_u2"),       # u2's first lost,
                Received(132.0, "device.exploded", "dev_u2", None)]                     # then out of order
    result = match_events(TRANSITIONS, received, user_of)
    assert result.kinds["registered"].duplicates == 2
    assert result.kinds["offline"].unexpected == 1
    assert result.unknown_device == 2 and result.unknown_devices == ["dev_nobody", "phone-9"]
    assert result.other_events == 1
    assert result.out_of_order == 1                       # u2's offline matched after its later registration
    assert result.kinds["registered"].missing == 2        # u2's second registration and u3's
    assert result.total("missing") == 2 and result.to_dict()["received"] == 9


def test_an_event_before_its_transition_is_matched_within_the_slack_only() -> None:
    early = match_events({"u1": (("registered", 100.0),)}, [ev(99.5, "registered", "dev_u1")], user_of)
    assert early.kinds["registered"].matched == 1 and early.kinds["registered"].latency.max_us <= 1
    stale = match_events({"u1": (("registered", 100.0),)}, [ev(95.0, "registered", "dev_u1")], user_of)
    assert stale.kinds["registered"].unexpected == 1 and stale.total("missing") == 1
