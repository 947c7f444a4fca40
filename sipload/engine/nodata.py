"""Why a threshold's metric had no value, said beside the bare "n/a": a CI gate that fails for lack of
data should say what did not happen and, where the scenario tells, why."""

from __future__ import annotations

from sipload.metrics.aggregate import Aggregate
from sipload.metrics.phases import Phase
from sipload.scenario import Scenario

_PHASES = {p.value: p for p in Phase}
_NOUNS = {Phase.REGISTER: "registration", Phase.CHALLENGE: "challenge", Phase.AUTH: "authenticated REGISTER",
          Phase.REFRESH: "refresh", Phase.UNREGISTER: "unregistration"}


def _first_refresh_point(scenario: Scenario) -> tuple[float, str]:
    """The earliest refresh point after a registration (seconds), and how it comes about."""
    groups = [g for g in scenario.fleet if g.count]
    first = min(groups, key=lambda g: g.endpoints.expires * (g.endpoints.refresh_at - g.endpoints.refresh_jitter))
    e = first.endpoints
    point = e.expires * (e.refresh_at - e.refresh_jitter)
    return point, f"expires {e.expires} s x refresh_at {e.refresh_at:g}" + (
        f", less {e.refresh_jitter:g} of jitter" if e.refresh_jitter else "")


def why_no_value(metric: str, scenario: Scenario, agg: Aggregate, ran_s: float) -> str:
    """Why `metric` had no value in a run of the scenario that lasted `ran_s` ("" when nothing more can be
    said)."""
    head = metric.split(".", 1)[0]
    if head == "crosscheck" and scenario.crosscheck is None:
        return "no cross-check ran ([crosscheck] is not set)"
    if head == "webhook":
        if scenario.crosscheck is None or not scenario.crosscheck.config.events:
            return "no webhooks were watched ([crosscheck] events = true is not set)"
        return "no event of that type matched a transition (see summary.json's events)"
    phase = _PHASES.get(head)
    if phase is None:
        return ""
    noun = _NOUNS[phase]
    counts = agg.counts(phase)
    if counts.attempted and not counts.succeeded:
        return f"no {noun} succeeded ({counts.failed} failed)"
    if counts.attempted:
        return ""
    registered = agg.counts(Phase.REGISTER).succeeded
    if phase is Phase.REFRESH:
        if not registered:
            return "no refresh happened: nothing registered"
        point, how = _first_refresh_point(scenario)
        ran = min(scenario.load.duration, ran_s)
        if ran < point:
            return (f"no refresh happened: the run ended after {ran:.3g} s, before the first refresh point, "
                    f"{point:g} s after a registration ({how})")
        return "no refresh happened"
    if phase is Phase.UNREGISTER:
        if not scenario.load.unregister:
            return "no unregistration happened: load.unregister is false"
        return "no unregistration happened" + (": nothing registered" if not registered else "")
    if phase is Phase.CHALLENGE and registered:
        return "no challenge came: the registrar accepted REGISTERs without asking for credentials"
    return f"no {noun} happened"
