"""The Audian emulator's troubleshooting endpoints from the registrar's own record, over real sockets on
127.0.0.1: credentials (never the password), device logs (requests, challenges, rejections with their
reason, registrations), and the per-device registrationExpiry the registrar then grants."""

from __future__ import annotations

import pytest
from audian_rig import ACCOUNT, Phone, phone, rig

from sipload.providers.errors import ProviderHttpError, ProviderNotFound
from sipload.sip.registration import RegState


async def test_credentials_give_username_and_realm_never_the_password() -> None:
    async with rig() as r:
        async with phone(r, "alice") as alice:
            await alice.register()
        raw = await r.client.api.call("GET", f"/accounts/{ACCOUNT}/devices/dev_sip_alice/credentials")
        assert raw == {"deviceId": "dev_sip_alice", "username": "alice", "realm": "sipload.test"}
        assert "pw-" not in str(raw)
        with pytest.raises(ProviderNotFound, match="device dev_sip_nobody not found"):
            await r.client.device_credentials("dev_sip_nobody")


async def test_logs_tell_why_a_device_failed_then_how_it_registered() -> None:
    async with rig() as r:
        async with phone(r, "bob", password="wrong") as bad:
            assert await bad.register() is RegState.FAILED
        async with phone(r, "bob", seed=1) as good:
            assert await good.register() is RegState.REGISTERED
            port = good.sock.getsockname()[1]
        lines = await r.client.device_logs("dev_sip_bob", lines=50)
        messages = [line.message for line in lines]
        assert messages[0].startswith("REGISTER from 127.0.0.1:") and "over udp, CSeq 1" in messages[0]
        assert "challenged (401, stale=false)" in messages
        assert "rejected: digest wrong response" in messages
        assert messages[-2:] == [f"registered from 127.0.0.1:{port}", "200 OK: 1 binding(s), expires 60 s"]
        assert all(line.timestamp.endswith("Z") for line in lines)
        assert [line.message for line in await r.client.device_logs("dev_sip_bob", lines=2)] == messages[-2:]
        with pytest.raises(ProviderHttpError, match="lines must be an integer 1-1000"):
            await r.client.device_logs("dev_sip_bob", lines=0)


async def test_registration_expiry_setting_is_granted_to_that_device_only() -> None:
    async with rig() as r:
        async with phone(r, "carol") as carol, phone(r, "dave") as dave:
            await carol.register()
            await dave.register()
            answer = await r.client.set_registration_expiry("dev_sip_carol", 120)
            assert answer["settings"]["registrationExpiry"] == 120 and answer["settings"]["maxContacts"] == 1
            carol.reg = Phone("carol", carol.sock, r.sip, seed=1).reg
            dave.reg = Phone("dave", dave.sock, r.sip, seed=1).reg
            assert await carol.register() is RegState.REGISTERED
            assert await dave.register() is RegState.REGISTERED
            assert (carol.reg.granted_expires, dave.reg.granted_expires) == (120, 60)
        device = await r.client.device_registration("dev_sip_carol")
        assert device.registration_expiry == 120


@pytest.mark.parametrize("body", [{"settings": {"registrationExpiry": 5}}, {"settings": {"registrationExpiry": "1h"}},
                                  {"settings": {"keepaliveInterval": 30}}, {"expiry": 60}])
async def test_bad_settings_are_400_naming_the_field(body: object) -> None:
    async with rig() as r:
        async with phone(r, "erin") as erin:
            await erin.register()
        with pytest.raises(ProviderHttpError, match=r"settings\.registrationExpiry must be an integer 30-86400"):
            await r.client.api.call("PATCH", f"/accounts/{ACCOUNT}/devices/dev_sip_erin", body=body)
