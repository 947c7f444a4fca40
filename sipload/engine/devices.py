"""How a shard's devices are built from the scenario, and what the report says of each at the end.

Theory of operation
-------------------
Each device group (`sipload.scenario.groups`) gets one `Profile` (`build_profile`): the target's
domain, the group's expiry and refresh policy, the transaction timers and, outbound and
GRUU. `build_endpoints` makes one endpoint per device of the worker's shard: its credentials (a
wrong password when the fleet plan chose it), its digest client, a `Registration` whose Contact and
Via name the local address of its first route, and its routes (one slot of its group's channels,
round robin). A device of a group with a UDP keep-alive, outbound or GRUU is a `FlowEndpoint`
(`sipload.engine.flows`); the others are plain `Endpoint`s, so they do no new work per message.
A device's `+sip.instance` is a pure function of the scenario's name and its index
(`instance_for`): a device that churns, flaps or avalanches comes back as the same instance.

Nothing here runs per message. `record` is the device's line in the report (`EndpointState`).
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence

from sipload.engine.endpoint import Endpoint
from sipload.engine.flows import FlowEndpoint
from sipload.engine.routes import Channel
from sipload.report.result import EndpointState
from sipload.scenario import Scenario
from sipload.scenario.groups import FleetPlan, Group, Role
from sipload.sip.digest import Algorithm, DigestClient
from sipload.sip.ids import IdSource
from sipload.sip.options_keepalive import OptionsKeepalive
from sipload.sip.registration import Profile, Registration
from sipload.sip.transaction import Timers


def build_profile(scenario: Scenario, transport: str = "UDP", group: Group | None = None) -> Profile:
    t = scenario.timers
    ep = scenario.endpoints if group is None else group.endpoints
    target = scenario.target
    route = f"<{target.outbound_proxy};lr>" if target.outbound_proxy is not None else None
    return Profile(
        domain=target.domain,
        registrar_uri=f"sip:{target.domain}",
        transport=transport,
        expires=ep.expires,
        refresh_at=ep.refresh_at,
        refresh_jitter=ep.refresh_jitter,
        refresh_margin=ep.refresh_margin,
        user_agent=ep.user_agent or "sipload",
        timers=Timers(t1=t.t1, t2=t.t2, t4=t.t4),
        max_retries=t.max_retries,
        retry_backoff=t.retry_backoff,
        retry_backoff_max=t.retry_backoff_max,
        route=route,
        outbound=group is not None and group.outbound,
        gruu=group is not None and group.gruu,
    )


# the namespace of the devices' +sip.instance URNs (uuid5 of "scenario name/endpoint index")
INSTANCE_NAMESPACE = uuid.UUID("5b7d0c3e-2f4a-5d61-9c1e-8a0b7f3d2e14")


def instance_for(scenario_name: str, index: int) -> str:
    """The +sip.instance of device `index`: the same on every run of the scenario and every re-creation."""
    return f"urn:uuid:{uuid.uuid5(INSTANCE_NAMESPACE, f'{scenario_name}/{index}')}"


def _preference(names: tuple[str, ...] | None) -> list[Algorithm] | None:
    if names is None:
        return None
    out = [a for a in (Algorithm.parse(n) for n in names) if a is not None]
    return out or None


def build_endpoints(
    sc: Scenario,
    plan: FleetPlan,
    indices: Iterable[int],
    slots: Mapping[int, Sequence[Sequence[Channel]]],
    ids: IdSource,
    after_flush: Callable[[FlowEndpoint], None],
) -> Iterator[Endpoint]:
    """The endpoints of devices `indices`, in that order, each placed on its group's slots round robin."""
    profiles = {g: build_profile(sc, grp.transport.value.upper(), grp) for g, grp in enumerate(plan.groups)}
    preferences = {g: _preference(grp.endpoints.digest_preference) for g, grp in enumerate(plan.groups)}
    placed = [0] * len(plan.groups)
    for i in indices:
        g = plan.group[i]
        group = plan.groups[g]
        cred = group.endpoints.credentials(i)
        password = cred.password
        if plan.role[i] == Role.WRONG_PASSWORD:
            password = f"{password}-wrong"  # deterministic: the plan chose this device
        group_slots = slots[g]
        routes = group_slots[placed[g] % len(group_slots)]
        placed[g] += 1
        sent_by = routes[0].sent_by
        auth = DigestClient(cred.auth_user, password, cnonce=ids.cnonce, preference=preferences[g])
        profile = profiles[g]
        reg = Registration(
            profile,
            user=cred.username,
            contact=f"sip:{cred.username}@{sent_by};transport={group.transport.value}",
            sent_by=sent_by,
            auth=auth,
            ids=ids,
            instance=instance_for(sc.name, i) if profile.outbound or profile.gruu else None,
        )
        endpoint: Endpoint
        pings = group.keepalive > 0 and group.transport.value.upper() == "UDP"  # (streams: the channel's)
        if pings or profile.outbound or profile.gruu:
            ka = OptionsKeepalive(target_uri=profile.registrar_uri, aor=reg.aor, sent_by=reg.sent_by,
                                  ids=ids, interval=group.keepalive,
                                  timeout=min(group.keepalive, 64 * profile.timers.t1),  # Timer F at most
                                  user_agent=profile.user_agent, timers=profile.timers) if pings else None
            endpoint = FlowEndpoint(i, cred.username, reg, routes[0].send, after_flush, ka)
        else:
            endpoint = Endpoint(i, cred.username, reg, routes[0].send)
        endpoint.group = g
        endpoint.auth = auth
        endpoint.routes = routes
        yield endpoint


def record(e: Endpoint, group: str = "default", unix_offset: float = 0.0) -> EndpointState:
    flow = e if isinstance(e, FlowEndpoint) else None
    ka = flow.ka if flow is not None else None
    return EndpointState(
        index=e.index,
        username=e.username,
        state=e.state,
        last_status=e.last_status,
        failure_reason=e.failure.value if e.failure is not None else "",
        registrations=e.registrations,
        refreshes=e.refreshes,
        contact=e.reg.contact,
        call_id=e.reg.call_id,
        group=group,
        vanished=e.vanished,
        returned=e.returned,
        flaps=e.flaps,
        avalanches=e.avalanches,
        failovers=e.failovers,
        keepalive_pings=ka.sent if ka is not None else 0,
        keepalive_answered=ka.answered if ka is not None else 0,
        keepalive_unanswered=ka.unanswered if ka is not None else 0,
        outbound_required=flow.outbound_required if flow is not None else 0,
        pub_gruu=flow is not None and flow.pub_gruu,
        transitions=e.trace.unix(unix_offset) if e.trace is not None else (),
    )
