"""POST /discord/webhook-events over a real socket, on each engine: signatures, hostile input, and what each
event does after the grace (with a linker that records what the bot was told)."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from store import EventType, Link, LinkSource, Store
from tests.harness import eventually
from tests.store.records import a_link
from tests.web.serving import AUTH, Served, app_settings, serving
from tests.web.test_api import check_against_openapi
from web.keys import UNCALLED_INSTALLS

KEY = Ed25519PrivateKey.generate()
PUBLIC_KEY = KEY.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
GUILD_ID = 1189196735402987520
USER_ID = 80351110224678912


@dataclass
class RecordingLinker:
    """What the web side told the bot."""

    linked: list[Link] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)

    async def guild_linked(self, link: Link) -> None:
        self.linked.append(link)

    async def guild_unlinked(self, guild_id: int) -> None:
        return None

    async def guild_abandoned(self, guild_id: int) -> bool:
        self.abandoned.append(guild_id)
        return True


@dataclass
class Endpoint:
    served: Served
    linker: RecordingLinker
    http: aiohttp.ClientSession

    @property
    def url(self) -> str:
        return f"{self.served.url}/discord/webhook-events"

    async def post(
        self, body: bytes, headers: Mapping[str, str] | None = None, *, signed: bool = True
    ) -> tuple[int, Any]:
        sent = {"Content-Type": "application/json", **(signature_headers(body) if signed else {})}
        sent.update(headers or {})
        async with self.http.post(self.url, data=body, headers=sent) as response:
            text = await response.text()
            return response.status, json.loads(text) if text else None

    async def event(self, kind: str, data: dict[str, Any]) -> int:
        status, _ = await self.post(event_body(kind, data))
        return status


def signature_headers(body: bytes, timestamp: int | None = None) -> dict[str, str]:
    stamp = str(int(time.time()) if timestamp is None else timestamp)
    return {"X-Signature-Ed25519": KEY.sign(stamp.encode() + body).hex(), "X-Signature-Timestamp": stamp}


def event_body(kind: str, data: dict[str, Any]) -> bytes:
    event = {"type": kind, "timestamp": "2026-12-03T18:00:00.000000", "data": data}
    return json.dumps({"version": 1, "application_id": "1", "type": 1, "event": event}).encode()


def install_data(guild_id: int = GUILD_ID, integration_type: int = 0) -> dict[str, Any]:
    return {
        "integration_type": integration_type,
        "scopes": ["applications.commands", "bot"],
        "user": {"id": str(USER_ID), "username": "alice"},
        "guild": {"id": str(guild_id), "name": "Chess club"},
    }


PING = json.dumps({"version": 1, "application_id": "1", "type": 0}).encode()


@contextlib.asynccontextmanager
async def endpoint_for(store: Store, database_url: str, **env: str) -> AsyncIterator[Endpoint]:
    linker = RecordingLinker()
    settings = app_settings(database_url, {"DISCORD_PUBLIC_KEY": PUBLIC_KEY, **env})
    async with serving(settings, store, linker=linker) as served, aiohttp.ClientSession() as http:
        yield Endpoint(served, linker, http)


@pytest.fixture
async def endpoint(store: Store, database_url: str) -> AsyncIterator[Endpoint]:
    async with endpoint_for(store, database_url, LINK_CALLBACK_GRACE_SECONDS="0.2") as opened:
        yield opened


async def test_a_signed_ping_is_answered_204_with_no_body(endpoint: Endpoint) -> None:
    assert await endpoint.post(PING) == (204, None)


@pytest.mark.parametrize(
    "headers",
    [
        {"X-Signature-Ed25519": "00" * 64},
        {"X-Signature-Ed25519": "not hex at all"},
        {"X-Signature-Ed25519": "abc"},
    ],
    ids=["wrong", "not-hex", "odd-length"],
)
async def test_a_bad_signature_is_401(endpoint: Endpoint, headers: dict[str, str]) -> None:
    status, body = await endpoint.post(PING, headers)
    assert status == 401 and body["error"] == "invalid_signature"


async def test_a_signature_over_another_timestamp_is_401(endpoint: Endpoint) -> None:
    now = int(time.time())
    headers = {**signature_headers(PING, timestamp=now), "X-Signature-Timestamp": str(now - 1)}
    assert (await endpoint.post(PING, headers, signed=False))[0] == 401


async def test_a_request_without_signature_headers_is_401(endpoint: Endpoint) -> None:
    assert (await endpoint.post(PING, signed=False))[0] == 401
    only_timestamp = {"X-Signature-Timestamp": str(int(time.time()))}
    assert (await endpoint.post(PING, only_timestamp, signed=False))[0] == 401


async def test_a_signed_request_from_long_ago_is_refused_as_a_replay(endpoint: Endpoint) -> None:
    old = signature_headers(PING, timestamp=int(time.time()) - 600)
    assert (await endpoint.post(PING, old, signed=False))[0] == 401
    future = signature_headers(PING, timestamp=int(time.time()) + 600)
    assert (await endpoint.post(PING, future, signed=False))[0] == 401


async def test_a_body_signed_for_another_body_is_401(endpoint: Endpoint) -> None:
    headers = signature_headers(PING)
    assert (await endpoint.post(event_body("APPLICATION_DEAUTHORIZED", {}), headers, signed=False))[0] == 401


async def test_hostile_bodies_get_a_clean_4xx(endpoint: Endpoint) -> None:
    huge = b"{" + b" " * (200 * 1024) + b"}"
    status, body = await endpoint.post(huge)
    assert status == 413 and body["error"] == "body_too_large"
    status, body = await endpoint.post(b"{not json")
    assert status == 400 and body["parameter"] == "body"
    status, body = await endpoint.post(b"[1, 2]")
    assert status == 400 and body["parameter"] == "type"
    status, body = await endpoint.post(b'{"type": 1, "event": "x"}')
    assert status == 400 and body["parameter"] == "event"
    status, body = await endpoint.post(b"[" * 60_000)
    assert status == 400
    status, body = await endpoint.post(PING, {"Content-Type": "text/plain"})
    assert status == 415 and body["error"] == "unsupported_media_type"
    bad_guild = install_data()
    bad_guild["guild"]["id"] = "12ab"
    status, body = await endpoint.post(event_body("APPLICATION_AUTHORIZED", bad_guild))
    assert status == 400 and body["parameter"] == "event.data.guild.id"
    async with endpoint.http.get(endpoint.url) as response:
        assert response.status == 405 and (await response.json())["error"]


async def test_without_a_public_key_the_route_is_not_served(store: Store, database_url: str) -> None:
    async with (
        serving(app_settings(database_url), store) as served,
        aiohttp.ClientSession() as http,
        http.post(f"{served.url}/discord/webhook-events", data=PING) as response,
    ):
        assert response.status == 404 and (await response.json())["error"] == "not_found"


async def test_an_unknown_event_type_is_answered_204_and_changes_nothing(
    endpoint: Endpoint, store: Store
) -> None:
    assert await endpoint.event("ENTITLEMENT_CREATE", {"id": "1"}) == 204
    assert await endpoint.event("APPLICATION_AUTHORIZED", install_data(integration_type=1)) == 204
    assert await store.list_events() == []


async def test_a_deauthorization_is_announced_in_the_feed_with_no_guild(
    endpoint: Endpoint, store: Store
) -> None:
    status = await endpoint.event("APPLICATION_DEAUTHORIZED", {"user": {"id": str(USER_ID), "username": "a"}})
    assert status == 204
    [event] = await store.list_events()
    assert event.type is EventType.APP_DEAUTHORIZED and event.data == {"user_id": str(USER_ID)}
    async with endpoint.http.get(f"{endpoint.served.url}/api/events", headers=AUTH) as response:
        body = await response.json()
    assert body["events"][0]["guild_id"] is None and body["events"][0]["type"] == "app.deauthorized"
    check_against_openapi("/api/events", "get", 200, body)


async def test_an_install_no_callback_stored_is_recorded_after_the_grace_and_handed_to_the_bot(
    endpoint: Endpoint, store: Store
) -> None:
    assert await endpoint.event("APPLICATION_AUTHORIZED", install_data()) == 204
    link = await eventually(lambda: store.get_link(GUILD_ID))
    assert link is not None
    assert (link.source, link.ref, link.linked_by_id, link.linked_by_username, link.guild_name) == (
        LinkSource.DISCORD_WEBHOOK,
        None,
        USER_ID,
        "alice",
        "Chess club",
    )
    assert link.scopes == ("applications.commands", "bot")
    await eventually(lambda: _async(endpoint.linker.linked))
    assert [told.guild_id for told in endpoint.linker.linked] == [GUILD_ID]
    [event] = await store.list_events()
    assert event.type is EventType.GUILD_LINKED and event.data["source"] == "discord_webhook"
    async with endpoint.http.get(f"{endpoint.served.url}/api/guilds/{GUILD_ID}", headers=AUTH) as response:
        assert (await response.json())["source"] == "discord_webhook"


async def test_an_install_the_callback_stored_within_the_grace_is_not_recorded_again(
    store: Store, database_url: str
) -> None:
    async with endpoint_for(store, database_url, LINK_CALLBACK_GRACE_SECONDS="1") as endpoint:
        assert await endpoint.event("APPLICATION_AUTHORIZED", install_data()) == 204
        await store.save_link(a_link(GUILD_ID, ref="customer-77"))
        installs = endpoint.served.app[UNCALLED_INSTALLS]
        await eventually(lambda: _async(not installs.waiting), within=5)
    [event] = await store.list_events()
    assert event.data["source"] == "callback"
    link = await store.get_link(GUILD_ID)
    assert link is not None and link.source is LinkSource.CALLBACK and link.ref == "customer-77"


async def test_with_refuse_an_install_no_callback_stored_makes_the_bot_leave(
    store: Store, database_url: str
) -> None:
    async with endpoint_for(
        store, database_url, LINK_CALLBACK_GRACE_SECONDS="0.1", LINK_WITHOUT_CALLBACK="refuse"
    ) as endpoint:
        assert await endpoint.event("APPLICATION_AUTHORIZED", install_data()) == 204
        events = await eventually(lambda: store.list_events())
        assert endpoint.linker.abandoned == [GUILD_ID] and endpoint.linker.linked == []
    assert [(e.type, e.guild_id) for e in events] == [(EventType.GUILD_INSTALL_REFUSED, GUILD_ID)]
    assert events[0].data["installed_by"] == {"id": str(USER_ID), "username": "alice"}
    assert events[0].data["bot_left"] is True
    assert await store.get_link(GUILD_ID) is None


async def _async(value: object) -> object:
    return value
