"""Scenario files: a TOML document validated into frozen configuration.

Theory of operation: ``load_scenario`` reads the file and ``build`` walks the document one section at a
time, each section read by its own module with a ``Table`` reader (``reader``) that rejects unknown keys
before anything else and turns every type or range problem into a ScenarioError naming the file, the dotted
field and the offending value (``scenarios/x.toml: endpoints.count: must be a positive integer, got -5``).
Cross-field rules (the run is long enough for every arrival, a [registrar] section only for the embedded
registrar, ...) are checked once the sections they need are built. ``Scenario.with_overrides`` builds an
edited copy of the document again, so command-line flags get the same validation. Besides the scenario,
the only files read are the CSV files it names (and the TLS files it names, checked for existence).

Modules: ``reader`` (ScenarioError, Table, Ctx), ``target`` ([target], SIP URIs), ``endpoints``
([endpoints], CSV users), ``groups`` ([[groups]]: device groups, behaviours, the fleet plan), ``schedule``
([load] arrival schedule, [timers]), ``registrar`` ([registrar]: the embedded registrar's own RegistrarSettings),
``build`` (Scenario, [crosscheck], loading, overrides).
"""

from sipload.scenario.build import CrossCheck, Scenario, load_scenario, parse_scenario
from sipload.scenario.endpoints import AddressRange, Credential, CsvMode, Endpoints, IPAddress, SocketMode
from sipload.scenario.reader import DIGEST_ALGORITHMS, ScenarioError
from sipload.scenario.registrar import Delay, DelayDistribution, RegistrarConfig
from sipload.scenario.schedule import Load, LoadShape, Ramp, Step, TimerConfig
from sipload.scenario.target import SipUri, Target, Transport, parse_sip_uri

__all__ = [
    "DIGEST_ALGORITHMS",
    "AddressRange",
    "Credential",
    "CrossCheck",
    "CsvMode",
    "Delay",
    "DelayDistribution",
    "Endpoints",
    "IPAddress",
    "Load",
    "LoadShape",
    "Ramp",
    "RegistrarConfig",
    "Scenario",
    "ScenarioError",
    "SipUri",
    "SocketMode",
    "Step",
    "Target",
    "TimerConfig",
    "Transport",
    "load_scenario",
    "parse_scenario",
    "parse_sip_uri",
]
