"""The scenario as a whole: `Scenario`, its top-level keys, `[crosscheck]`, loading and command-line overrides.

``build`` reads the top-level keys, then each section with its module's reader (target, endpoints,
schedule, registrar), in the order that cross-field rules need: the endpoint count fixes the default
duration, the target decides whether a [registrar] section is allowed. ``Scenario.with_overrides`` edits a
copy of the document and builds it again, so that command-line flags get exactly the same validation;
errors about an overridden field name the flag instead of the file.
"""

from __future__ import annotations

import copy
import math
import re
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from sipload.durations import format_duration
from sipload.providers.settings import CrossCheckConfig, config_from_mapping
from sipload.scenario.endpoints import Endpoints, read_endpoints
from sipload.scenario.groups import Group, default_group, read_groups
from sipload.scenario.reader import MISSING, TOP_KEYS, Ctx, ScenarioError, Table, show
from sipload.scenario.registrar import RegistrarConfig, read_registrar
from sipload.scenario.schedule import Load, TimerConfig, read_load, read_timers
from sipload.scenario.target import Target, Transport, parse_sip_uri, read_target
from sipload.thresholds import Threshold, ThresholdError, parse_threshold


@dataclass(frozen=True, slots=True)
class CrossCheck:
    """`[crosscheck]`: ask a provider about every endpoint, after the run or while it holds."""

    config: CrossCheckConfig
    when: str = "after"  # "after": final states; "holding": at the end of the hold, before unregistering


@dataclass(frozen=True, slots=True)
class Scenario:
    path: Path
    name: str
    description: str
    seed: int | None  # None: not reproducible (Call-IDs differ between runs)
    target: Target
    endpoints: Endpoints
    load: Load
    timers: TimerConfig
    registrar: RegistrarConfig | None  # None unless target.registrar = "embedded"
    thresholds: tuple[Threshold, ...]
    document: Mapping[str, Any] = field(default_factory=dict, repr=False, compare=False)  # the TOML as read
    crosscheck: CrossCheck | None = None
    groups: tuple[Group, ...] = ()  # the device groups; build() always gives at least "default"

    @property
    def fleet(self) -> tuple[Group, ...]:
        """The device groups (one implicit "default" group for a scenario without [[groups]])."""
        return self.groups or (default_group(self.endpoints, self.target),)

    def with_overrides(
        self,
        *,
        target: str | Sequence[str] | None = None,
        endpoints: int | None = None,
        rate: float | None = None,
        duration: float | None = None,
    ) -> Scenario:
        """The scenario with command-line overrides applied and validated again.

        ``target`` replaces the registrar ("embedded", a URI or a list of URIs: failover order, or a URI
        per transport; the transport then comes from the first URI; target.domain, outbound_proxy, dns, and
        the TLS files / WebSocket path for such URIs are kept); ``rate`` replaces the load shape with a constant rate.
        """
        doc: dict[str, Any] = copy.deepcopy(dict(self.document))
        flags: dict[str, str] = {}
        notes: list[str] = []

        def section(name: str) -> dict[str, Any]:
            value = doc.setdefault(name, {})
            return value if isinstance(value, dict) else {}

        if target is not None:
            targets = [target] if isinstance(target, str) else target
            if not targets or not all(isinstance(t, str) for t in targets):
                raise ScenarioError(f"--target: must be 'embedded' or a SIP URI, got {show(target)}")
            if "embedded" in targets and len(targets) > 1:
                raise ScenarioError("--target: 'embedded' cannot be given with other targets")
            old = section("target")
            new: dict[str, Any] = {"registrar": targets[0] if len(targets) == 1 else list(targets)}
            new.update({k: old[k] for k in ("domain", "outbound_proxy") if k in old})
            if targets != ["embedded"]:
                uris = []
                for text in targets:
                    try:
                        uris.append(parse_sip_uri(text))
                    except ValueError as exc:
                        raise ScenarioError(f"--target: {exc}, got {text!r}") from None
                doc.pop("registrar", None)
                carried = {"dns", "probe"}  # the nameserver, the probe, TLS files and WebSocket path still apply
                if any(u.transport in (Transport.TLS, Transport.WSS) for u in uris):
                    carried |= {k for k in old if k.startswith("tls_")}
                if any(u.transport in (Transport.WS, Transport.WSS) for u in uris):
                    carried.add("ws_path")
                new.update({k: old[k] for k in sorted(carried) if k in old})
            doc["target"] = new
            flags["target.registrar"] = "--target"
            notes.append(" ".join(f"--target {t}" for t in targets))
        if endpoints is not None:
            if isinstance(endpoints, bool) or not isinstance(endpoints, int) or endpoints < 1:
                raise ScenarioError(f"--endpoints: must be a positive integer, got {show(endpoints)}")
            section("endpoints")["count"] = endpoints
            flags["endpoints.count"] = "--endpoints"
            notes.append(f"--endpoints {endpoints}")
        if rate is not None:
            if isinstance(rate, bool) or not isinstance(rate, int | float) or not 0 < rate < math.inf:
                raise ScenarioError(f"--rate: must be > 0, got {show(rate)}")
            load = section("load")
            for key in ("steps", "ramp"):
                load.pop(key, None)
            load["rate"] = rate
            flags["load.rate"] = "--rate"
            notes.append(f"--rate {rate:g}")
        if duration is not None:
            if isinstance(duration, bool) or not isinstance(duration, int | float) or not 0 < duration < math.inf:
                raise ScenarioError(f"--duration: must be > 0, got {show(duration)}")
            section("load")["duration"] = duration
            flags["load.duration"] = "--duration"
            notes.append(f"--duration {format_duration(duration)}")
        note = f" (with {', '.join(notes)})" if notes else ""
        return build(doc, self.path, Ctx(str(self.path), self.path.parent, flags, note))


THRESHOLD_KEYS = ("expr", "abort_on_fail", "delay")
_THRESHOLD_FORMS = ("a string such as 'register.p99 < 200ms' or a table such as "
                    "{ expr = 'register.success_rate == 100%', abort_on_fail = true, delay = '10s' }")


def _thresholds(ctx: Ctx, data: object) -> tuple[Threshold, ...]:
    if not isinstance(data, list):
        raise ctx.error("thresholds", f"must be a list, each item {_THRESHOLD_FORMS}, got {show(data)}")
    result = []
    for i, item in enumerate(data):
        where = f"thresholds[{i}]"
        abort, delay = False, 0.0
        if isinstance(item, dict):
            table = Table(ctx, where, item, THRESHOLD_KEYS)
            expr = table.text("expr", nonempty=True)
            abort = table.boolean("abort_on_fail", False)
            delay = table.duration("delay", 0.0)
            if table.given("delay") and not abort:
                raise table.fail("delay", "applies only with abort_on_fail = true")
        elif isinstance(item, str):
            expr = item
        else:
            raise ctx.error(where, f"must be {_THRESHOLD_FORMS}, got {show(item)}")
        try:
            threshold = parse_threshold(expr)
        except ThresholdError as exc:
            raise ctx.error(where + (".expr" if isinstance(item, dict) else ""), str(exc)) from None
        result.append(replace(threshold, abort=abort, abort_delay=delay))
    return tuple(result)


def build(document: Mapping[str, Any], path: Path, ctx: Ctx) -> Scenario:
    top = Table(ctx, "", document, TOP_KEYS)
    seed = top.integer("seed") if top.given("seed") else None
    target = read_target(ctx, document.get("target", {}))
    endpoints = read_endpoints(ctx, document.get("endpoints", {}), seed)
    return Scenario(
        path=path,
        name=top.text("name", path.stem, nonempty=True),
        description=top.text("description", "", multiline=True),
        seed=seed,
        target=target,
        endpoints=endpoints,
        load=read_load(ctx, document.get("load", {}), endpoints.count),
        timers=read_timers(ctx, document.get("timers", {})),
        registrar=read_registrar(ctx, document.get("registrar", MISSING), target, seed),
        thresholds=_thresholds(ctx, document.get("thresholds", [])),
        document=document,
        crosscheck=_crosscheck(ctx, document.get("crosscheck", MISSING)),
        groups=read_groups(ctx, document.get("groups", MISSING), endpoints, target),
    )


def _crosscheck(ctx: Ctx, data: object) -> CrossCheck | None:
    if data is MISSING:
        return None
    if not isinstance(data, Mapping):
        raise ctx.error("crosscheck", f"must be a table, got {show(data)}")
    table = dict(data)
    when = table.pop("when", "after")
    if when not in ("after", "holding"):
        raise ctx.error("crosscheck.when", f"must be 'after' or 'holding', got {show(when)}")
    try:
        config = config_from_mapping(table, where="crosscheck")
    except ValueError as exc:
        raise ScenarioError(f"{ctx.file}: {exc}{ctx.note}") from None
    return CrossCheck(config, str(when))


# ---------------------------------------------------------------------------------------------- loading


def parse_scenario(text: str, path: str | Path = "<scenario>") -> Scenario:
    """A scenario from TOML text; ``path`` names it in messages and anchors relative paths."""
    try:
        document = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        message = str(exc)
        match = re.fullmatch(r"(.*) \(at line (\d+), column (\d+)\)", message, re.DOTALL)
        where = f" at line {match.group(2)}, column {match.group(3)}" if match else ""
        reason = match.group(1) if match else message.replace(" (at end of document)", "")
        raise ScenarioError(f"{path}: invalid TOML{where}: {reason}") from None
    p = Path(path)
    return build(document, p, Ctx(str(path), p.parent, {}, ""))


def load_scenario(path: str | Path) -> Scenario:
    """Read and validate a scenario file; every problem is a ScenarioError naming the file and field."""
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise ScenarioError(f"{path}: file not found") from None
    except IsADirectoryError:
        raise ScenarioError(f"{path}: is a directory, not a scenario file") from None
    except OSError as exc:
        raise ScenarioError(f"{path}: cannot read: {exc.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ScenarioError(f"{path}: not UTF-8 text (byte {exc.start})") from None
    return parse_scenario(text, p)
