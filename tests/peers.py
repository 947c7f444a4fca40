"""Real peers (Kamailio, SIPp) in tests: the harness is sipload/testing/peers.py, shared with bench/, and
re-exported here; what needs pytest lives here.

- ``require_peer``: a missing peer fails the run in CI (CI=true) and skips elsewhere, with the reason.
- ``private_kamailio``: a Kamailio of the test's own (run dir and free ports), stopped on exit.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest

from sipload.testing.peers import (
    HOW_TO_INSTALL_KAMAILIO,
    HOW_TO_INSTALL_SIPP,
    KamailioPeer,
    PeerError,
    SippResult,
    distinct_free_ports,
    free_port,
    have,
    in_ci,
    run_sipp,
    start_kamailio,
    stop_kamailio,
)

__all__ = [
    "HOW_TO_INSTALL_KAMAILIO", "HOW_TO_INSTALL_SIPP", "KamailioPeer", "PeerError", "SippResult", "free_port", "have",
    "in_ci", "private_kamailio", "require_peer", "run_sipp", "start_kamailio", "stop_kamailio",
]


def require_peer(name: str, available: bool, how_to_install: str) -> None:
    """Fail (CI=true) or skip (elsewhere) the calling test when peer `name` is not available."""
    if available:
        return
    reason = f"peer {name} is not available: {how_to_install}"
    if in_ci():
        pytest.fail(f"{reason} (CI=true: a missing peer fails the run)", pytrace=False)
    pytest.skip(reason)


@contextlib.contextmanager
def private_kamailio(rundir: Path) -> Iterator[KamailioPeer]:
    """A Kamailio of the caller's own (run dir, free SIP, RPC and WS ports), so that other suites'
    registrations never mix in; stopped on exit. Skips (fails under CI=true) when Kamailio is missing."""
    require_peer("kamailio", have("kamailio"), HOW_TO_INSTALL_KAMAILIO)
    sip_port, rpc_port, ws_port = distinct_free_ports(3)
    peer = start_kamailio(rundir, sip_port, rpc_port, ws_port=ws_port)
    try:
        yield peer
    finally:
        stop_kamailio(rundir)
