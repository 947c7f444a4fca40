"""The cross-check: what each endpoint knows against what the provider reports.

Theory of operation
-------------------
Input: one `OurEndpoint` per endpoint (username, sipload's state string, Unix time of its last
REGISTER 200 OK) and a `StatusSource`. `run_crosscheck`:

1. asks the provider about every user once (`source.statuses`);
2. when `poll_limit` > 0, keeps asking, every `poll_interval`, about the users sipload holds
   registered but the provider does not show registered yet, until it does or the limit passes;
3. classifies each final answer into a column (a `ProviderState` value, `missing` or `error`),
   counts the matrix `ours x theirs`, and decides agreement with `agreement.expected`.

Propagation delay (from the 200 OK until the provider first shows the user registered) is
measured for users that had to be polled, and for those whose first answer came within one
poll interval of their 200 OK: for any other user the first answer only bounds the delay from
above by the registration's age, which says nothing about propagation. `measure_propagation`
does the same for one user right after its 200 OK (for sampling while a run holds).

Time: `clock` is Unix time, `sleep` awaits; both injectable, so tests never wait.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio

from sipload.providers.agreement import COLUMNS, ERROR, MISSING, agrees, expects_registered
from sipload.providers.errors import NotProvisioned
from sipload.providers.http_api import Sleep
from sipload.providers.settings import CrossCheckConfig
from sipload.providers.sources import Answer, StatusSource
from sipload.providers.status import ProviderError, ProviderState, RegistrationStatus

PERCENTILES = (50.0, 90.0, 99.0)


@dataclass(frozen=True, slots=True)
class OurEndpoint:
    username: str
    state: str                        # "registered", "unregistered", "failed:auth_rejected", ...
    last_ok_at: float | None = None   # Unix time of the last REGISTER 200 OK, None when unknown


@dataclass(frozen=True, slots=True)
class Disagreement:
    username: str
    ours: str
    theirs: str
    detail: str


@dataclass(frozen=True, slots=True)
class EndpointError:
    username: str
    message: str


@dataclass
class CrossCheckResult:
    provider: str
    checked: int = 0
    agreed: int = 0
    matrix: dict[str, dict[str, int]] = field(default_factory=dict)   # ours -> theirs -> count
    disagreements: list[Disagreement] = field(default_factory=list)  # the first `max_listed`
    disagreements_total: int = 0
    errors: list[EndpointError] = field(default_factory=list)        # the first `max_listed`
    errors_total: int = 0
    propagation_ms: list[float] = field(default_factory=list)
    not_propagated: int = 0           # polled users never shown registered within the poll limit
    min_agreement: float | None = None

    @property
    def agreement_pct(self) -> float:
        return 100.0 * self.agreed / self.checked if self.checked else 100.0

    def passed(self, min_agreement: float | None = None) -> bool:
        wanted = min_agreement if min_agreement is not None else self.min_agreement
        return wanted is None or self.agreement_pct >= wanted

    def propagation_summary(self) -> dict[str, float]:
        values = sorted(self.propagation_ms)
        if not values:
            return {"count": 0}
        out: dict[str, float] = {"count": len(values)}
        for p in PERCENTILES:
            out[f"p{p:g}"] = round(_percentile(values, p), 3)
        out["max"] = round(values[-1], 3)
        out["mean"] = round(sum(values) / len(values), 3)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready, for summary.json's `crosscheck` entry."""
        return {
            "provider": self.provider,
            "checked": self.checked,
            "agreed": self.agreed,
            "agreement_pct": round(self.agreement_pct, 3),
            "min_agreement": self.min_agreement,
            "passed": self.passed(),
            "matrix": {ours: dict(row) for ours, row in sorted(self.matrix.items())},
            "columns": list(COLUMNS),
            "disagreements": [vars_of(d) for d in self.disagreements],
            "disagreements_total": self.disagreements_total,
            "errors": [vars_of(e) for e in self.errors],
            "errors_total": self.errors_total,
            "propagation_ms": self.propagation_summary(),
            "not_propagated": self.not_propagated,
        }


def vars_of(item: Disagreement | EndpointError) -> dict[str, str]:
    return {name: getattr(item, name) for name in item.__slots__}


def _percentile(sorted_values: Sequence[float], p: float) -> float:
    """Nearest-rank percentile of sorted values."""
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


def column(answer: Answer) -> str:
    if isinstance(answer, RegistrationStatus):
        return answer.state.value
    if isinstance(answer, NotProvisioned):
        return MISSING
    return ERROR


def _shows_registered(answer: Answer | None) -> bool:
    return isinstance(answer, RegistrationStatus) and answer.state is ProviderState.REGISTERED


def _pollable(answer: Answer | None) -> bool:
    """Worth asking again: an answer that is not (yet) registered. Errors are not retried here."""
    return isinstance(answer, RegistrationStatus) and answer.state is not ProviderState.REGISTERED


async def run_crosscheck(
    endpoints: Sequence[OurEndpoint],
    source: StatusSource,
    config: CrossCheckConfig,
    *,
    clock: Callable[[], float] = time.time,
    sleep: Sleep | None = None,
) -> CrossCheckResult:
    """Ask the provider about every endpoint and compare (see the module docstring)."""
    nap: Sleep = sleep if sleep is not None else anyio.sleep
    users = list(dict.fromkeys(e.username for e in endpoints))
    started = clock()
    answers: dict[str, Answer] = dict(await source.statuses(users))
    answered_at = clock()
    seen_registered: dict[str, float] = {u: answered_at for u in users if _shows_registered(answers.get(u))}
    polled: set[str] = set()
    wanted = {e.username for e in endpoints if expects_registered(e.state)}
    pending = [u for u in users if u in wanted and _pollable(answers.get(u))]
    while pending and config.poll_limit > 0 and clock() + config.poll_interval <= started + config.poll_limit:
        await nap(config.poll_interval)
        polled.update(pending)
        fresh = await source.statuses(pending)
        now = clock()
        for user, answer in fresh.items():
            answers[user] = answer
            if _shows_registered(answer):
                seen_registered.setdefault(user, now)
        pending = [u for u in pending if _pollable(answers.get(u))]
    return _tally(endpoints, answers, seen_registered, polled, config, source.name)


def _tally(endpoints: Sequence[OurEndpoint], answers: dict[str, Answer], seen_registered: dict[str, float],
           polled: set[str], config: CrossCheckConfig, provider: str) -> CrossCheckResult:
    result = CrossCheckResult(provider, min_agreement=config.min_agreement)
    for endpoint in endpoints:
        user, ours = endpoint.username, endpoint.state
        answer = answers.get(user)
        if answer is None:
            answer = ProviderError(f"{provider}: no answer for {user!r}")
        theirs = column(answer)
        result.checked += 1
        row = result.matrix.setdefault(ours, {})
        row[theirs] = row.get(theirs, 0) + 1
        if isinstance(answer, ProviderError) and not isinstance(answer, NotProvisioned):
            result.errors_total += 1
            if len(result.errors) < config.max_listed:
                result.errors.append(EndpointError(user, str(answer)))
        if agrees(ours, theirs):
            result.agreed += 1
        else:
            result.disagreements_total += 1
            if len(result.disagreements) < config.max_listed:
                result.disagreements.append(Disagreement(user, ours, theirs, _detail(answer)))
        if expects_registered(ours):
            _record_propagation(result, endpoint, seen_registered.get(user), user in polled, config)
    return result


def _record_propagation(result: CrossCheckResult, endpoint: OurEndpoint, seen_at: float | None, polled: bool,
                        config: CrossCheckConfig) -> None:
    if polled and seen_at is None:
        result.not_propagated += 1
        return
    ok_at = endpoint.last_ok_at
    if seen_at is None or ok_at is None:
        return
    delay = max(0.0, seen_at - ok_at)
    if polled or delay <= config.poll_interval:
        result.propagation_ms.append(delay * 1000.0)


def _detail(answer: Answer) -> str:
    """What the provider said beyond its state: its error, or its detail ("" when nothing)."""
    if isinstance(answer, ProviderError):
        return str(answer)
    return answer.detail or ""


async def measure_propagation(source: StatusSource, user: str, ok_at: float, *, interval: float, limit: float,
                              clock: Callable[[], float] = time.time, sleep: Sleep | None = None) -> float | None:
    """Poll one user from its 200 OK (Unix `ok_at`) until the provider shows it registered.

    -> the delay in ms, or None when it was not shown registered within `limit` seconds."""
    nap: Sleep = sleep if sleep is not None else anyio.sleep
    while True:
        answer = (await source.statuses([user])).get(user)
        now = clock()
        if _shows_registered(answer):
            return max(0.0, now - ok_at) * 1000.0
        if now + interval > ok_at + limit:
            return None
        await nap(interval)
