"""The role write-back's API on a real socket, on each engine: auth, 400s naming the parameter, 404, 202 and GET."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from store import RoleChangeOutcome, RoleChangeStatus, Store
from tests.store.records import a_link
from tests.web.serving import AUTH, Served, app_settings, serving
from tests.web.test_api import check_against_openapi

GUILD = 794928565794635776
USER = 172150183260323840
ROLE = 1189196735402987521
ROLE_PATH = "/api/guilds/{guild_id}/members/{user_id}/roles/{role_id}"
CHANGE_PATH = "/api/role-changes/{change_id}"


@pytest.fixture
async def served(database_url: str, store: Store) -> AsyncIterator[Served]:
    await store.save_link(a_link(GUILD))
    async with serving(app_settings(database_url), store) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(headers=AUTH) as session:
        yield session


async def call(
    http: aiohttp.ClientSession, served: Served, method: str, path: str, **kwargs: Any
) -> tuple[int, Any, Mapping[str, str]]:
    async with http.request(method, served.url + path, **kwargs) as response:
        return response.status, await response.json(), response.headers


def role_path(guild: object = GUILD, user: object = USER, role: object = ROLE) -> str:
    return f"/api/guilds/{guild}/members/{user}/roles/{role}"


async def test_a_put_queues_a_change_answered_202_with_its_location_and_reads_back_pending(
    http: aiohttp.ClientSession, served: Served
) -> None:
    status, body, headers = await call(
        http, served, "PUT", role_path(), headers={"X-Audit-Log-Reason": "won%20the%20raffle%20%E2%9C%93"}
    )
    assert status == 202, body
    check_against_openapi(ROLE_PATH, "put", 202, body)
    assert (body["guild_id"], body["user_id"], body["role_id"]) == (str(GUILD), str(USER), str(ROLE))
    assert (body["action"], body["status"], body["error"], body["attempts"]) == ("add", "pending", None, 0)
    assert body["reason"] == "won the raffle ✓"
    assert headers["Location"] == f"/api/role-changes/{body['id']}"
    status, again, _ = await call(http, served, "GET", headers["Location"])
    assert status == 200 and again == body
    check_against_openapi(CHANGE_PATH, "get", 200, again)


async def test_a_repeated_put_returns_the_pending_change_and_a_delete_queues_a_new_one(
    http: aiohttp.ClientSession, served: Served
) -> None:
    _, first, _ = await call(http, served, "PUT", role_path())
    _, repeated, _ = await call(http, served, "PUT", role_path())
    assert repeated["id"] == first["id"]
    status, removal, _ = await call(http, served, "DELETE", role_path())
    assert status == 202 and removal["action"] == "remove" and removal["id"] != first["id"]
    check_against_openapi(ROLE_PATH, "delete", 202, removal)


async def test_a_failed_change_reads_back_with_discords_code_and_a_plain_reason(
    http: aiohttp.ClientSession, served: Served, store: Store
) -> None:
    _, body, _ = await call(http, served, "PUT", role_path())
    await store.claim_role_changes("worker", lease=60, limit=1)
    reason = f"the bot's highest role must be above role {ROLE}"
    await store.finish_role_change(
        int(body["id"]), "worker", RoleChangeOutcome(RoleChangeStatus.FAILED, 50013, reason)
    )
    status, failed, _ = await call(http, served, "GET", f"/api/role-changes/{body['id']}")
    assert status == 200 and failed["status"] == "failed"
    assert failed["error"] == {"code": 50013, "reason": reason} and failed["attempts"] == 1
    check_against_openapi(CHANGE_PATH, "get", 200, failed)


@pytest.mark.parametrize(
    ("path", "headers", "parameter"),
    [
        (role_path(guild="abc"), {}, "guild_id"),
        (role_path(user="-1"), {}, "user_id"),
        (role_path(role="9" * 21), {}, "role_id"),
        (role_path(role="9223372036854775808"), {}, "role_id"),
        (role_path(), {"X-Audit-Log-Reason": "x" * 513}, "X-Audit-Log-Reason"),
        (role_path(), {"X-Audit-Log-Reason": "%C3"}, "X-Audit-Log-Reason"),
        (role_path(), {"X-Audit-Log-Reason": "tab%09inside"}, "X-Audit-Log-Reason"),
        (role_path(), {"X-Audit-Log-Reason": ""}, "X-Audit-Log-Reason"),
    ],
)
async def test_bad_input_is_a_400_naming_the_parameter(
    http: aiohttp.ClientSession,
    served: Served,
    store: Store,
    path: str,
    headers: dict[str, str],
    parameter: str,
) -> None:
    for method in ("PUT", "DELETE"):
        status, body, _ = await call(http, served, method, path, headers=headers)
        assert status == 400 and body["parameter"] == parameter, body
        check_against_openapi(ROLE_PATH, method.lower(), 400, body)
    assert await store.list_role_changes(GUILD) == []


async def test_a_reason_of_512_characters_once_decoded_is_taken(
    http: aiohttp.ClientSession, served: Served
) -> None:
    status, body, _ = await call(
        http, served, "PUT", role_path(), headers={"X-Audit-Log-Reason": "%C3%A9" * 512}
    )
    assert status == 202 and body["reason"] == "é" * 512


async def test_a_guild_not_linked_is_a_404_and_nothing_is_queued(
    http: aiohttp.ClientSession, served: Served, store: Store
) -> None:
    status, body, _ = await call(http, served, "PUT", role_path(guild=GUILD + 1))
    assert status == 404 and body["error"] == "not_found"
    await store.deactivate_link(GUILD)
    status, body, _ = await call(http, served, "DELETE", role_path())
    assert status == 404, body
    check_against_openapi(ROLE_PATH, "delete", 404, body)
    assert await store.list_role_changes(GUILD) == [] and await store.list_role_changes(GUILD + 1) == []


async def test_an_unknown_or_malformed_change_id_is_a_404_or_a_400(
    http: aiohttp.ClientSession, served: Served
) -> None:
    status, body, _ = await call(http, served, "GET", "/api/role-changes/12345")
    assert status == 404, body
    status, body, _ = await call(http, served, "GET", "/api/role-changes/x1")
    assert status == 400 and body["parameter"] == "change_id"


async def test_without_the_bearer_token_nothing_is_queued_or_shown(served: Served, store: Store) -> None:
    async with aiohttp.ClientSession() as anonymous:
        for method, path in (("PUT", role_path()), ("DELETE", role_path()), ("GET", "/api/role-changes/1")):
            async with anonymous.request(method, served.url + path) as response:
                assert response.status == 401
        wrong = {"Authorization": "Bearer " + "y" * 40}
        async with anonymous.put(served.url + role_path(), headers=wrong) as response:
            assert response.status == 401
    assert await store.list_role_changes(GUILD) == []
