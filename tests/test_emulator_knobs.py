"""The emulators' settings as the `registrar --api` command would parse them, and keys kept secret."""

from __future__ import annotations

import pytest

from sipload.emulators.knobs import ApiKeys, ApiKnobs, parse_knobs
from sipload.hostport import parse_host_port as parse_api_address
from sipload.registrar.settings import DelayKind


def test_parse_knobs() -> None:
    knobs = parse_knobs("rate_limit_every=5, retry_after=1500ms,latency=uniform:1ms:10ms,stale_lag=2s,"
                        "stale_share=0.25,providers=telnyx+audian,retry_after_header=false,audian_account=acc_1")
    assert (knobs.rate_limit_every, knobs.retry_after, knobs.stale_lag, knobs.stale_share) == (5, 1.5, 2.0, 0.25)
    assert knobs.latency.kind is DelayKind.UNIFORM and knobs.providers == frozenset({"telnyx", "audian"})
    assert knobs.retry_after_header is False and knobs.audian_account == "acc_1"
    assert knobs.applies_to("audian") and not knobs.applies_to("ultravox")
    assert parse_knobs("") == ApiKnobs()
    for bad, message in [("colour=blue", "colour: unknown knob"), ("stale_lag=soon", "stale_lag: "),
                         ("rate_limit_every", "expected key=value"), ("stale_share=2", "stale_share"),
                         ("providers=twilio", "providers: unknown"), ("rate_limit_first=-1", "rate_limit_first")]:
        with pytest.raises(ValueError, match=message):
            parse_knobs(bad)


def test_parse_api_address() -> None:
    assert parse_api_address("127.0.0.1:8089") == ("127.0.0.1", 8089)
    assert parse_api_address("[::1]:0") == ("::1", 0)
    assert parse_api_address(":8089") == ("127.0.0.1", 8089)
    for bad in ("8089", "127.0.0.1:http", "127.0.0.1:70000"):
        with pytest.raises(ValueError, match="HOST:PORT"):
            parse_api_address(bad)


def test_keys_never_in_reprs_and_read_from_the_environment() -> None:
    keys = ApiKeys.from_env({"TELNYX_API_KEY": "tx-SECRET", "AUDIAN_AUTH_TOKEN": "", "ULTRAVOX_API_KEY": "uv-SECRET"})
    assert (keys.telnyx, keys.audian, keys.ultravox) == ("tx-SECRET", None, "uv-SECRET")
    assert "SECRET" not in repr(keys) and "SECRET" not in str(keys)
