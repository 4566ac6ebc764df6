"""The gateway protocol seen from a raw WebSocket client: framing, checks, limits, shards, chunks, resume."""

from __future__ import annotations

import asyncio
import json
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import pytest

from sandbox import Sandbox, SandboxOptions
from tests.conftest import MakeSandbox

ZLIB_SUFFIX = b"\x00\x00\xff\xff"
GUILDS, GUILD_MEMBERS = 1 << 0, 1 << 1


class Closed(Exception):
    def __init__(self, code: int | None) -> None:
        super().__init__(code)
        self.code = code


class RawGateway:
    """A minimal gateway client that decodes zlib-stream like discord.py does."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.inflater = zlib.decompressobj()
        self.buffer = bytearray()
        self.frame_types: list[aiohttp.WSMsgType] = []
        self.seq: int | None = None

    async def recv(self, within: float = 5.0) -> dict[str, Any]:
        while True:
            msg = await self.ws.receive(timeout=within)
            if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.CLOSING):
                raise Closed(self.ws.close_code)
            self.frame_types.append(msg.type)
            if msg.type is aiohttp.WSMsgType.TEXT:
                data = json.loads(msg.data)
                break
            self.buffer.extend(msg.data)
            if self.buffer[-4:] == ZLIB_SUFFIX:
                data = json.loads(self.inflater.decompress(bytes(self.buffer)))
                self.buffer.clear()
                break
        if data.get("s") is not None:
            self.seq = data["s"]
        return data

    async def recv_until(
        self, predicate: Callable[[dict[str, Any]], bool], within: float = 5.0
    ) -> dict[str, Any]:
        while True:
            msg = await self.recv(within)
            if predicate(msg):
                return msg

    async def dispatch(self, event: str, within: float = 5.0) -> dict[str, Any]:
        return (await self.recv_until(lambda m: m.get("t") == event, within))["d"]

    async def send(self, op: int, d: Any) -> None:
        await self.ws.send_str(json.dumps({"op": op, "d": d}))

    async def identify(
        self, sandbox: Sandbox, intents: int = GUILDS | GUILD_MEMBERS, **extra: Any
    ) -> dict[str, Any]:
        await self.send(2, {"token": sandbox.bot_token, "intents": intents, "properties": {}, **extra})
        return await self.dispatch("READY")

    async def closed_with(self) -> int | None:
        with pytest.raises(Closed) as info:
            while True:
                await self.recv()
        return info.value.code


@pytest.fixture
async def connect() -> AsyncIterator[Callable[..., Any]]:
    session = aiohttp.ClientSession()

    async def open_gateway(sandbox: Sandbox, *, compress: bool = True) -> RawGateway:
        query = "?v=10&encoding=json" + ("&compress=zlib-stream" if compress else "")
        ws = await session.ws_connect(sandbox.gateway_url + query)
        gateway = RawGateway(ws)
        hello = await gateway.recv()
        assert hello["op"] == 10
        assert hello["d"]["heartbeat_interval"] > 0
        return gateway

    yield open_gateway
    await session.close()


async def test_zlib_stream_frames_and_heartbeat_ack(sandbox: Sandbox, connect: Callable[..., Any]) -> None:
    gw = await connect(sandbox)
    await gw.send(1, None)
    assert (await gw.recv())["op"] == 11
    assert set(gw.frame_types) == {aiohttp.WSMsgType.BINARY}


async def test_plain_frames_without_compression(sandbox: Sandbox, connect: Callable[..., Any]) -> None:
    gw = await connect(sandbox, compress=False)
    ready = await gw.identify(sandbox)
    assert ready["user"]["id"] == str(sandbox.client_id)
    assert set(gw.frame_types) == {aiohttp.WSMsgType.TEXT}


@pytest.mark.parametrize(
    ("identify", "code"),
    [
        ({"token": "nope", "intents": 1}, 4004),
        ({"intents": 1 << 30}, 4013),
        ({"intents": -1}, 4013),
        ({"intents": 1, "shard": [2, 2]}, 4010),
    ],
)
async def test_identify_is_checked(
    sandbox: Sandbox, connect: Callable[..., Any], identify: dict[str, Any], code: int
) -> None:
    gw = await connect(sandbox)
    await gw.send(2, {"token": sandbox.bot_token, "properties": {}, **identify})
    assert await gw.closed_with() == code


async def test_members_intent_off_closes_4014_and_other_intents_pass(
    make_sandbox: MakeSandbox, connect: Callable[..., Any]
) -> None:
    sandbox = await make_sandbox(SandboxOptions(members_intent_enabled=False))
    gw = await connect(sandbox)
    await gw.send(2, {"token": sandbox.bot_token, "intents": GUILDS | GUILD_MEMBERS, "properties": {}})
    assert await gw.closed_with() == 4014
    gw = await connect(sandbox)
    await gw.identify(sandbox, GUILDS)
    sandbox.options.members_intent_enabled = True  # flipped at run time, as a test of the portal switch
    gw = await connect(sandbox)
    await gw.identify(sandbox, GUILDS | GUILD_MEMBERS)


async def test_more_than_120_commands_a_minute_closes_4008(
    sandbox: Sandbox, connect: Callable[..., Any]
) -> None:
    gw = await connect(sandbox)
    for _ in range(121):
        await gw.send(1, None)
    acks = 0
    with pytest.raises(Closed) as info:
        while True:
            if (await gw.recv())["op"] == 11:
                acks += 1
    assert info.value.code == 4008
    assert acks == 120


async def test_ready_then_guild_create_for_each_guild(sandbox: Sandbox, connect: Callable[..., Any]) -> None:
    ids = [g.id for g in sandbox.managed_guilds()]
    for gid in ids:
        sandbox.add_bot(gid)
    gw = await connect(sandbox)
    ready = await gw.identify(sandbox)
    assert ready["session_id"]
    assert ready["resume_gateway_url"].startswith("ws://")
    assert ready["guilds"] == [{"id": str(gid), "unavailable": True} for gid in sorted(ids)]
    assert "shard" not in ready
    created = [await gw.dispatch("GUILD_CREATE") for _ in ids]
    assert sorted(int(g["id"]) for g in created) == sorted(ids)
    assert all(g["unavailable"] is False for g in created)  # READY's unavailable guilds arriving


async def test_guild_events_join_leave_and_outage(sandbox: Sandbox, connect: Callable[..., Any]) -> None:
    first, second = (g.id for g in sandbox.managed_guilds()[:2])
    gw = await connect(sandbox)
    await gw.identify(sandbox)
    sandbox.add_bot(first)
    joined = await gw.dispatch("GUILD_CREATE")
    assert joined["id"] == str(first)
    assert "unavailable" not in joined  # a join while connected
    assert joined["member_count"] == sandbox.guild(first).member_count
    sandbox.set_guild_unavailable(first, True)
    assert await gw.dispatch("GUILD_DELETE") == {"id": str(first), "unavailable": True}
    sandbox.set_guild_unavailable(first, False)
    back = await gw.dispatch("GUILD_CREATE")
    assert (back["id"], back["unavailable"]) == (str(first), False)
    sandbox.kick_bot(first)
    assert await gw.dispatch("GUILD_DELETE") == {"id": str(first)}
    sandbox.add_bot(second)
    assert (await gw.dispatch("GUILD_CREATE"))["id"] == str(second)


async def test_large_threshold_decides_whether_members_are_inlined(
    make_sandbox: MakeSandbox, connect: Callable[..., Any]
) -> None:
    sandbox = await make_sandbox(SandboxOptions(members=100))
    gid = sandbox.managed_guilds()[0].id
    sandbox.add_bot(gid)
    gw = await connect(sandbox)
    await gw.identify(sandbox, large_threshold=250)
    small = await gw.dispatch("GUILD_CREATE")
    assert small["large"] is False
    assert len(small["members"]) == small["member_count"] == 101
    gw = await connect(sandbox)
    await gw.identify(sandbox, large_threshold=50)
    large = await gw.dispatch("GUILD_CREATE")
    assert large["large"] is True
    assert [m["user"]["id"] for m in large["members"]] == [str(sandbox.client_id)]


async def test_sharding_splits_guilds_by_id(make_sandbox: MakeSandbox, connect: Callable[..., Any]) -> None:
    sandbox = await make_sandbox(SandboxOptions(guilds=12, members=5))
    ids = [g.id for g in sandbox.managed_guilds()]
    for gid in ids:
        sandbox.add_bot(gid)
    seen: dict[int, set[int]] = {}
    shards = []
    for shard in (0, 1):
        gw = await connect(sandbox)
        ready = await gw.identify(sandbox, shard=[shard, 2])
        assert ready["shard"] == [shard, 2]
        seen[shard] = {int(g["id"]) for g in ready["guilds"]}
        assert seen[shard] == {gid for gid in ids if (gid >> 22) % 2 == shard}
        shards.append(gw)
    assert seen[0] and seen[1]
    assert seen[0] | seen[1] == set(ids)
    # A member event goes to the guild's shard only.
    target = min(seen[1])
    uid = sandbox.add_member(target)
    event = await shards[1].dispatch("GUILD_MEMBER_ADD")
    assert (event["guild_id"], event["user"]["id"]) == (str(target), str(uid))
    sandbox.add_member(min(seen[0]))
    event = await shards[0].dispatch("GUILD_MEMBER_ADD")
    assert event["guild_id"] == str(min(seen[0]))


async def test_whole_list_chunks_carry_index_count_and_nonce(
    make_sandbox: MakeSandbox, connect: Callable[..., Any]
) -> None:
    sandbox = await make_sandbox(SandboxOptions(members=2_500))
    gid = sandbox.managed_guilds()[0].id
    sandbox.add_bot(gid)
    gw = await connect(sandbox)
    await gw.identify(sandbox)
    await gw.send(8, {"guild_id": str(gid), "query": "", "limit": 0, "nonce": "n1", "presences": True})
    chunks = [await gw.dispatch("GUILD_MEMBERS_CHUNK") for _ in range(3)]
    assert [(c["chunk_index"], c["chunk_count"], c["nonce"]) for c in chunks] == [
        (i, 3, "n1") for i in range(3)
    ]
    assert [len(c["members"]) for c in chunks] == [1000, 1000, 501]
    assert all(c["presences"] == [] for c in chunks)
    ids = [m["user"]["id"] for c in chunks for m in c["members"]]
    assert ids == [m["user"]["id"] for m in sandbox.members(gid)]


async def test_query_and_user_ids_requests(sandbox: Sandbox, connect: Callable[..., Any]) -> None:
    gid = sandbox.managed_guilds()[0].id
    sandbox.add_bot(gid)
    members = sandbox.members(gid)
    gw = await connect(sandbox)
    await gw.identify(sandbox)
    wanted = [int(members[3]["user"]["id"]), int(members[7]["user"]["id"])]
    await gw.send(8, {"guild_id": gid, "user_ids": [*wanted, 42], "limit": 0, "nonce": "ids"})
    chunk = await gw.dispatch("GUILD_MEMBERS_CHUNK")
    assert chunk["nonce"] == "ids"
    assert [int(m["user"]["id"]) for m in chunk["members"]] == wanted
    assert chunk["not_found"] == ["42"]
    await gw.send(8, {"guild_id": str(gid), "query": "AMELIA", "limit": 3, "nonce": "q"})
    chunk = await gw.dispatch("GUILD_MEMBERS_CHUNK")
    expected = [
        m
        for m in members
        if m["user"]["username"].startswith("amelia") or (m["nick"] or "").lower().startswith("amelia")
    ]
    assert [m["user"]["id"] for m in chunk["members"]] == [m["user"]["id"] for m in expected[:3]]
    assert (chunk["chunk_index"], chunk["chunk_count"]) == (0, 1)


async def test_query_results_are_capped_at_100(
    make_sandbox: MakeSandbox, connect: Callable[..., Any]
) -> None:
    sandbox = await make_sandbox(SandboxOptions(members=400))
    gid = sandbox.managed_guilds()[0].id
    sandbox.add_bot(gid)
    gw = await connect(sandbox)
    await gw.identify(sandbox)
    await gw.send(8, {"guild_id": gid, "query": "", "limit": 500})
    chunk = await gw.dispatch("GUILD_MEMBERS_CHUNK")
    assert len(chunk["members"]) == 100
    # Not a whole-list request, so it does not start the cooldown.
    await gw.send(8, {"guild_id": gid, "query": "", "limit": 0})
    chunk = await gw.dispatch("GUILD_MEMBERS_CHUNK")
    assert chunk["chunk_count"] == 1
    assert len(chunk["members"]) == 401


async def test_resume_replays_exactly_the_missed_events(
    sandbox: Sandbox, connect: Callable[..., Any]
) -> None:
    gid = sandbox.managed_guilds()[0].id
    sandbox.add_bot(gid)
    gw = await connect(sandbox)
    ready = await gw.identify(sandbox)
    await gw.dispatch("GUILD_CREATE")
    seen_seq = gw.seq
    sandbox.drop_gateway()
    with pytest.raises((Closed, aiohttp.ClientError, asyncio.TimeoutError)):
        await gw.recv(2)
    missed = [sandbox.add_member(gid) for _ in range(2)]
    sandbox.update_member(gid, missed[0], nick=None, roles=[])
    resumed = await connect(sandbox)
    await resumed.send(6, {"token": sandbox.bot_token, "session_id": ready["session_id"], "seq": seen_seq})
    replay = [await resumed.recv() for _ in range(4)]
    assert [m["t"] for m in replay] == [
        "GUILD_MEMBER_ADD",
        "GUILD_MEMBER_ADD",
        "GUILD_MEMBER_UPDATE",
        "RESUMED",
    ]
    assert [m["s"] for m in replay] == [seen_seq + i for i in range(1, 5)]
    assert [m["d"]["user"]["id"] for m in replay[:2]] == [str(u) for u in missed]


async def test_resume_of_an_unknown_session_is_refused(sandbox: Sandbox, connect: Callable[..., Any]) -> None:
    gw = await connect(sandbox)
    await gw.send(6, {"token": sandbox.bot_token, "session_id": "nope", "seq": 3})
    msg = await gw.recv()
    assert (msg["op"], msg["d"]) == (9, False)


async def test_commands_before_identify_close_4003(sandbox: Sandbox, connect: Callable[..., Any]) -> None:
    gw = await connect(sandbox)
    await gw.send(8, {"guild_id": "1", "query": "", "limit": 0})
    assert await gw.closed_with() == 4003


async def test_a_session_over_the_guild_limit_is_closed_4011(
    make_sandbox: MakeSandbox, connect: Callable[..., Any]
) -> None:
    sandbox = await make_sandbox(SandboxOptions(guilds=6, members=5, max_guilds_per_session=4))
    for guild in sandbox.managed_guilds():
        sandbox.add_bot(guild.id)
    gw = await connect(sandbox)
    await gw.send(2, {"token": sandbox.bot_token, "intents": GUILDS, "properties": {}})
    assert await gw.closed_with() == 4011
    # Two shards each hold few enough: accepted.
    for shard in (0, 1):
        gw = await connect(sandbox)
        held = {int(g["id"]) for g in (await gw.identify(sandbox, shard=[shard, 2]))["guilds"]}
        assert held == {g.id for g in sandbox.managed_guilds() if (g.id >> 22) % 2 == shard}


async def test_an_identify_inside_its_buckets_window_gets_op_9(
    make_sandbox: MakeSandbox, connect: Callable[..., Any]
) -> None:
    sandbox = await make_sandbox(
        SandboxOptions(guilds=1, members=5, identify_interval=0.6, max_concurrency=2)
    )
    first = await connect(sandbox)
    await first.identify(sandbox, shard=[0, 4])
    other_bucket = await connect(sandbox)
    await other_bucket.identify(sandbox, shard=[1, 4])  # bucket 1: its own window
    early = await connect(sandbox)
    await early.send(2, {"token": sandbox.bot_token, "intents": GUILDS, "properties": {}, "shard": [2, 4]})
    assert (await early.recv_until(lambda m: m["op"] == 9))["d"] is False
    await asyncio.sleep(0.6)
    late = await connect(sandbox)
    assert (await late.identify(sandbox, shard=[2, 4]))["shard"] == [2, 4]


async def test_gateway_bot_recommends_a_shard_per_thousand_guilds(make_sandbox: MakeSandbox) -> None:
    sandbox = await make_sandbox(SandboxOptions(guilds=2_345, members=1, max_concurrency=4))
    for guild in sandbox.managed_guilds():
        sandbox.add_bot(guild.id)
    async with (
        aiohttp.ClientSession() as session,
        session.get(
            f"{sandbox.base_url}/api/v10/gateway/bot", headers={"Authorization": f"Bot {sandbox.bot_token}"}
        ) as response,
    ):
        body = await response.json()
    assert body["shards"] == 3 and body["session_start_limit"]["max_concurrency"] == 4


@pytest.mark.parametrize("paced", [True, False])
async def test_a_storm_arrives_whole_and_in_order_paced_or_not(
    sandbox: Sandbox, connect: Callable[..., Any], paced: bool
) -> None:
    gid = sandbox.managed_guilds()[0].id
    sandbox.add_bot(gid)
    gw = await connect(sandbox)
    await gw.identify(sandbox)
    await gw.dispatch("GUILD_CREATE")
    ids = [m["user"]["id"] for m in sandbox.members(gid)]
    updates = min(250, len(ids))
    async with (
        aiohttp.ClientSession() as http,
        http.post(
            f"{sandbox.base_url}/_sandbox/guilds/{gid}/storm",
            json={"updates": updates, "removals": 3, "paced": paced},
        ) as resp,
    ):
        assert resp.status == 200
    seqs: list[int] = []
    seen: list[tuple[str, str, str | None]] = []
    while len(seen) < updates + 3:
        msg = await gw.recv_until(lambda m: m.get("t") in ("GUILD_MEMBER_UPDATE", "GUILD_MEMBER_REMOVE"))
        seqs.append(msg["s"])
        seen.append((msg["t"], msg["d"]["user"]["id"], msg["d"].get("nick")))
    assert seqs == list(range(seqs[0], seqs[0] + updates + 3))
    assert seen == [
        *(("GUILD_MEMBER_UPDATE", uid, f"storm {i}") for i, uid in enumerate(ids[:updates])),
        *(("GUILD_MEMBER_REMOVE", uid, None) for uid in ids[-3:]),
    ]
