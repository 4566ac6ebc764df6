"""The sandbox's webhook events: signed with the key /applications/@me publishes, checked and sent as Discord does."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from sandbox import Sandbox, SandboxOptions
from tests.harness import eventually


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as session:
        yield session


class Receiver:
    """A loopback endpoint that checks signatures with the sandbox's published key and keeps what it took."""

    def __init__(self, verify_key: str, *, check_signatures: bool = True) -> None:
        self.key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(verify_key))
        self.check_signatures = check_signatures
        self.bodies: list[dict[str, Any]] = []
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers["X-Signature-Timestamp"]
        try:
            self.key.verify(bytes.fromhex(request.headers["X-Signature-Ed25519"]), stamp.encode() + body)
        except Exception:
            if self.check_signatures:
                return web.Response(status=401)
        self.bodies.append(json.loads(body))
        return web.Response(status=204)


@pytest.fixture
async def receiver(sandbox: Sandbox) -> AsyncIterator[Receiver]:
    receiver = Receiver(sandbox.verify_key)
    app = web.Application()
    app.router.add_post("/events", receiver.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    receiver.url = f"http://{host}:{port}/events"
    yield receiver
    await runner.cleanup()


async def test_the_published_verify_key_is_the_one_that_signs(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    headers = {"Authorization": f"Bot {sandbox.bot_token}"}
    async with http.get(f"{sandbox.base_url}/api/v10/applications/@me", headers=headers) as resp:
        assert (await resp.json())["verify_key"] == sandbox.verify_key
    body = b'{"type": 0}'
    signed = sandbox.app_events.signed_headers(body, timestamp=1700000000)
    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(sandbox.verify_key))
    key.verify(bytes.fromhex(signed["X-Signature-Ed25519"]), b"1700000000" + body)


async def test_the_key_is_the_same_for_the_same_seed(make_sandbox) -> None:
    first = await make_sandbox(SandboxOptions(seed=7, guilds=1, members=1))
    second = await make_sandbox(SandboxOptions(seed=7, guilds=1, members=1))
    other = await make_sandbox(SandboxOptions(seed=8, guilds=1, members=1))
    assert first.verify_key == second.verify_key != other.verify_key


async def test_the_url_control_checks_the_url_then_add_app_and_deauthorize_send_events(
    sandbox: Sandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    async with http.patch(
        f"{sandbox.base_url}/_sandbox/settings", json={"webhook_events_url": receiver.url}
    ) as resp:
        assert resp.status == 200 and (await resp.json())["webhook_events_url"] == receiver.url
    assert [body["type"] for body in receiver.bodies] == [0]
    guild = sandbox.managed_guilds()[0]
    async with http.post(f"{sandbox.base_url}/_sandbox/guilds/{guild.id}/add-app") as resp:
        assert resp.status == 200
    assert guild.id in sandbox.bot_guild_ids()
    async with http.post(f"{sandbox.base_url}/_sandbox/deauthorize") as resp:
        assert resp.status == 200
    await _until(lambda: len(receiver.bodies) == 3)
    # Each is POSTed in the background, as Discord does: they may arrive in either order.
    authorized, deauthorized = sorted(
        (body["event"] for body in receiver.bodies[1:]), key=lambda e: e["type"]
    )
    assert authorized["type"] == "APPLICATION_AUTHORIZED"
    assert authorized["data"]["integration_type"] == 0 and authorized["data"]["guild"]["id"] == str(guild.id)
    assert authorized["data"]["user"]["id"] == str(sandbox.user_id)
    assert deauthorized["type"] == "APPLICATION_DEAUTHORIZED"
    assert deauthorized["data"]["user"]["id"] == str(sandbox.user_id)
    assert all(body["application_id"] == str(sandbox.client_id) for body in receiver.bodies)


async def test_a_url_that_takes_bad_signatures_is_refused(
    sandbox: Sandbox, receiver: Receiver, http: aiohttp.ClientSession
) -> None:
    receiver.check_signatures = False
    async with http.patch(
        f"{sandbox.base_url}/_sandbox/settings", json={"webhook_events_url": receiver.url}
    ) as resp:
        assert resp.status == 400 and "401" in (await resp.json())["error"]
    assert sandbox.app_events.url is None


async def test_add_app_to_a_guild_the_user_cannot_manage_is_404(
    sandbox: Sandbox, http: aiohttp.ClientSession
) -> None:
    async with http.post(f"{sandbox.base_url}/_sandbox/guilds/1/add-app") as resp:
        assert resp.status == 404


async def _until(check: Callable[[], bool]) -> None:
    async def checked() -> bool:
        return bool(check())

    await eventually(checked)
