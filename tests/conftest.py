"""Fixtures for real peers (Kamailio, SIPp) started by the project's own scripts (peers/)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from peers import (
    HOW_TO_INSTALL_KAMAILIO,
    HOW_TO_INSTALL_SIPP,
    KamailioPeer,
    have,
    require_peer,
    start_kamailio,
    stop_kamailio,
)


@pytest.fixture(scope="session")
def kamailio() -> Iterator[KamailioPeer]:
    """A fresh Kamailio registrar (peers/kamailio/start) for the session, stopped at the end.

    SIP on udp+tcp 127.0.0.1:5070, JSON-RPC at http://127.0.0.1:5071/RPC (or the
    SIPLOAD_KAMAILIO_PORT / SIPLOAD_KAMAILIO_RPC_PORT env). Users userN / pw-userN.
    """
    require_peer("kamailio", have("kamailio"), HOW_TO_INSTALL_KAMAILIO)
    peer = start_kamailio()
    try:
        yield peer
    finally:
        stop_kamailio()


@pytest.fixture(scope="session")
def sipp() -> str:
    """The sipp program (fails in CI / skips elsewhere when missing)."""
    require_peer("sipp", have("sipp"), HOW_TO_INSTALL_SIPP)
    return "sipp"
