"""guildlink and the sandbox as real processes, a browser that walks the consent flow, and the database read
from outside.

Nothing here imports guildlink's own modules: these tests see it as an operator does, through its command
line, its HTTP face and its database (the SQLite file, or PostgreSQL through asyncpg).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import parse_qsl, urlsplit

import aiohttp
import asyncpg

ROOT = Path(__file__).resolve().parents[2]
PYTHON = sys.executable
API_TOKEN = "reliability-suite-api-token-" + "r" * 32
# Settings guildlink reads; none may leak in from the environment the tests run in.
GUILDLINK_SETTINGS = (
    "DISCORD_CLIENT_ID",
    "DISCORD_CLIENT_SECRET",
    "DISCORD_BOT_TOKEN",
    "DISCORD_BASE_URL",
    "DISCORD_REDIRECT_URI",
    "DISCORD_SCOPES",
    "DISCORD_PERMISSIONS",
    "WEB_HOST",
    "WEB_PORT",
    "TLS_CERT_FILE",
    "TLS_KEY_FILE",
    "DATABASE_URL",
    "DATA_DIR",
    "API_TOKEN",
    "LOG_LEVEL",
    "EVENT_RETENTION_DAYS",
    "WEBHOOK_URL",
    "WEBHOOK_SECRET",
    "WEBHOOK_EVENTS",
    "SHARD_COUNT",
    "SHARD_IDS",
    "IDENTIFY_INTERVAL",
    "MEMBER_BUFFER_MAX",
    "READ_PAUSE_MAX",
    "METRICS",
    "LINK_RATE_LIMIT",
    "TRUSTED_PROXIES",
)

T = TypeVar("T")


class ProcessFailedError(AssertionError):
    """A process exited or never became ready; the message carries the tail of its log."""


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def eventually(
    check: Callable[[], Awaitable[T]], *, within: float, interval: float = 0.2, what: str = "condition"
) -> T:
    """Await `check` until it returns something truthy; fail with its last value after `within` seconds."""
    deadline = time.monotonic() + within
    while True:
        value = await check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not met within {within:.0f}s (last value: {value!r})")
        await asyncio.sleep(interval)


async def until(
    check: Callable[[], T], *, within: float, interval: float = 0.2, what: str = "condition"
) -> T:
    """`eventually` for a check that does not await (a read of the database, a log file)."""

    async def run() -> T:
        return check()

    return await eventually(run, within=within, interval=interval, what=what)


def _tail(path: Path, lines: int = 40) -> str:
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except FileNotFoundError:
        return "(no log)"
    return "\n".join(text.splitlines()[-lines:])


def _stop(popen: subprocess.Popen[bytes], *, gracefully: bool) -> None:
    """End a process we started: SIGTERM then, after 15 s, SIGKILL (or SIGKILL at once)."""
    if popen.poll() is None:
        if gracefully:
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                popen.kill()
        else:
            popen.kill()
    popen.wait()


# -- the sandbox ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class SandboxGuild:
    """A guild the sandbox's admin manages, as `python -m sandbox` described it at start-up."""

    id: int
    name: str
    member_count: int


@dataclass
class SandboxProcess:
    """`python -m sandbox` running: its description and its `/_sandbox/...` controls."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    base_url: str
    client_id: str
    client_secret: str
    bot_token: str
    guilds: list[SandboxGuild]
    http: aiohttp.ClientSession

    async def control(self, method: str, path: str, body: Mapping[str, Any] | None = None) -> Any:
        """Call a control (`path` below /_sandbox) and return its JSON; fail on an error status."""
        async with self.http.request(method, f"{self.base_url}/_sandbox{path}", json=body) as response:
            data = await response.json()
            if response.status != 200:
                raise AssertionError(f"sandbox {method} {path}: {response.status} {data}")
            return data

    async def members(self, guild_id: int) -> dict[int, dict[str, Any]]:
        """Every current member of the guild (the bot included once it joined), by user id.

        The control answers the whole list at once (no paging), ordered by user id.
        """
        payloads = await self.control("GET", f"/guilds/{guild_id}/members")
        return {int(m["user"]["id"]): m for m in payloads}

    async def add_member(self, guild_id: int, username: str) -> int:
        data = await self.control("POST", f"/guilds/{guild_id}/members", {"username": username})
        return int(data["user_id"])

    async def update_member(self, guild_id: int, user_id: int, **changes: Any) -> None:
        await self.control("PATCH", f"/guilds/{guild_id}/members/{user_id}", changes)

    async def remove_member(self, guild_id: int, user_id: int) -> None:
        await self.control("DELETE", f"/guilds/{guild_id}/members/{user_id}")

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")

    def gateway_4008_closes(self) -> int:
        """Sessions the sandbox closed with 4008 (more than 120 commands in 60 s), from its INFO log."""
        return self.log_text().count("gateway.rate_limited session=")


# -- guildlink ------------------------------------------------------------------------------------


@dataclass
class GuildlinkProcess:
    """`python main.py` running against a sandbox."""

    popen: subprocess.Popen[bytes]
    log_path: Path
    web_url: str
    http: aiohttp.ClientSession

    @property
    def pid(self) -> int:
        return self.popen.pid

    def running(self) -> bool:
        return self.popen.poll() is None

    async def wait_ready(self, within: float = 60) -> None:
        """Poll /readyz until it answers 200; fail early, with the log, if the process exits."""

        async def ready() -> bool:
            if not self.running():
                raise ProcessFailedError(
                    f"guildlink exited with {self.popen.returncode} before it was ready:\n{_tail(self.log_path)}"
                )
            try:
                async with self.http.get(f"{self.web_url}/readyz") as response:
                    return response.status == 200
            except aiohttp.ClientError:
                return False

        try:
            await eventually(ready, within=within, interval=0.1, what="guildlink /readyz 200")
        except ProcessFailedError:
            raise
        except AssertionError as exc:
            raise ProcessFailedError(f"{exc}\n{_tail(self.log_path)}") from None

    async def readyz(self) -> dict[str, Any]:
        """GET /readyz's JSON, whatever its status."""
        async with self.http.get(f"{self.web_url}/readyz") as response:
            body: dict[str, Any] = await response.json()
            return body

    def kill(self) -> None:
        """kill -9: no shutdown code runs."""
        _stop(self.popen, gracefully=False)

    def rss_kib(self) -> int:
        """Resident set size from /proc/<pid>/status."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise AssertionError(f"no VmRSS for pid {self.pid}")

    def log_text(self) -> str:
        return self.log_path.read_text(encoding="utf-8", errors="replace")


# -- a browser ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class FlowResult:
    """One consent flow: the callback's status and page, and how long the callback took to answer."""

    guild_id: int
    status: int
    page: str
    callback_seconds: float


class FlowError(Exception):
    """A consent flow that broke off: at which step, and why."""

    def __init__(self, guild_id: int, step: str, cause: BaseException) -> None:
        super().__init__(f"{step}: {type(cause).__name__} {cause}".strip())
        self.guild_id = guild_id
        self.step = step


@dataclass
class Browser:
    """An HTTP client with its own cookie jar, walking the consent flow one redirect at a time."""

    session: aiohttp.ClientSession
    web_url: str
    sandbox: SandboxProcess

    async def start_link(self) -> dict[str, str]:
        """GET /link: a 302 to the sandbox's consent page; return that page's query."""
        async with self.session.get(f"{self.web_url}/link", allow_redirects=False) as response:
            if response.status != 302:
                raise AssertionError(f"GET /link answered {response.status}: {(await response.text())[:300]}")
            location = response.headers["Location"]
        consent = f"{self.sandbox.base_url}/oauth2/authorize?"
        if not location.startswith(consent):
            raise AssertionError(f"GET /link redirected to {location!r}, not to {consent}")
        return dict(parse_qsl(urlsplit(location).query))

    async def authorize(self, consent: Mapping[str, str], guild_id: int) -> str:
        """Click Authorize for `guild_id` (the sandbox's control); return Discord's redirect to our callback."""
        body = {**consent, "guild_id": str(guild_id)}
        async with self.session.post(f"{self.sandbox.base_url}/_sandbox/authorize", json=body) as response:
            data = await response.json()
            if response.status != 200:
                raise AssertionError(f"sandbox refused the consent: {data}")
        return str(data["location"])

    async def callback(self, location: str, guild_id: int) -> FlowResult:
        """Follow Discord's redirect to /authorize-discord; time it until the whole page is read."""
        started = time.perf_counter()
        async with self.session.get(location, allow_redirects=False) as response:
            page = await response.text()
        return FlowResult(guild_id, response.status, page, time.perf_counter() - started)

    async def link(self, guild_id: int) -> FlowResult:
        """The whole flow for one guild; FlowError names the step where it broke off."""
        step = "GET /link"
        try:
            consent = await self.start_link()
            step = "Authorize on the consent page"
            location = await self.authorize(consent, guild_id)
            step = "GET /authorize-discord"
            return await self.callback(location, guild_id)
        except (AssertionError, aiohttp.ClientError, TimeoutError) as exc:
            raise FlowError(guild_id, step, exc) from exc


# -- the database, read from outside --------------------------------------------------------------


@dataclass(frozen=True)
class SyncRow:
    phase: str
    members_stored: int
    member_count: int | None
    synced_at: datetime | None


@dataclass(frozen=True)
class StoredMember:
    username: str
    nick: str | None


@dataclass(frozen=True)
class MemberRows:
    """One guild's member rows: every row (so that duplicates would show) and the fields compared."""

    rows: int
    distinct: int
    by_id: dict[int, StoredMember]


class Database:
    """guildlink's SQLite file, read with the stdlib: tables links, members, sync_states.

    Read it only while a guildlink process is running: between a kill and the restart the files must stay
    exactly as the kill left them (the last connection to close a WAL database checkpoints it).
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        # mode=rw: never create the file; query_only: never write.
        connection = sqlite3.connect(f"file:{self.path}?mode=rw", uri=True, timeout=30)
        try:
            connection.execute("PRAGMA query_only = 1")
            yield connection
        finally:
            connection.close()

    def links(self) -> dict[int, bool]:
        """Every stored link: guild id -> active."""
        with self._connect() as db:
            return {int(g): bool(a) for g, a in db.execute("SELECT guild_id, active FROM links")}

    def link_rows(self) -> tuple[int, int]:
        """Rows in links, and distinct guild ids among them."""
        with self._connect() as db:
            rows, distinct = db.execute("SELECT COUNT(*), COUNT(DISTINCT guild_id) FROM links").fetchone()
            return int(rows), int(distinct)

    def sync_state(self, guild_id: int) -> SyncRow | None:
        with self._connect() as db:
            row = db.execute(
                "SELECT phase, members_stored, member_count, synced_at FROM sync_states WHERE guild_id = ?",
                (guild_id,),
            ).fetchone()
        if row is None:
            return None
        phase, stored, count, synced_at = row
        return SyncRow(
            str(phase),
            int(stored),
            int(count) if count is not None else None,
            datetime.fromisoformat(synced_at) if synced_at else None,
        )

    def sync_phases(self) -> dict[int, str]:
        with self._connect() as db:
            return {int(g): str(p) for g, p in db.execute("SELECT guild_id, phase FROM sync_states")}

    def members(self, guild_id: int) -> MemberRows:
        with self._connect() as db:
            rows = db.execute(
                "SELECT user_id, username, nick FROM members WHERE guild_id = ?", (guild_id,)
            ).fetchall()
        by_id = {int(u): StoredMember(str(name), nick) for u, name, nick in rows}
        return MemberRows(len(rows), len(by_id), by_id)

    def last_event_id(self) -> int:
        with self._connect() as db:
            return int(db.execute("SELECT COALESCE(MAX(id), 0) FROM events").fetchone()[0])

    def events(self, guild_id: int, *, after: int) -> list[tuple[str, dict[str, Any]]]:
        """The guild's events of the feed after `after`, oldest first: (type, data)."""
        with self._connect() as db:
            rows = db.execute(
                "SELECT type, data FROM events WHERE guild_id = ? AND id > ? ORDER BY id", (guild_id, after)
            ).fetchall()
        return [(str(kind), json.loads(data)) for kind, data in rows]

    def member_ids_by_guild(self) -> dict[int, set[int]]:
        with self._connect() as db:
            result: dict[int, set[int]] = {}
            for guild_id, user_id in db.execute("SELECT guild_id, user_id FROM members"):
                result.setdefault(int(guild_id), set()).add(int(user_id))
            return result


class PostgresDatabase:
    """guildlink's PostgreSQL database, read with asyncpg: the same answers as `Database` gives for SQLite."""

    def __init__(self, url: str) -> None:
        self.url = url

    async def _fetch(self, sql: str, *args: Any) -> list[asyncpg.Record]:
        connection = await asyncpg.connect(self.url)
        try:
            return list(await connection.fetch(sql, *args))
        finally:
            await connection.close()

    async def links(self) -> dict[int, bool]:
        return {int(g): bool(a) for g, a in await self._fetch("SELECT guild_id, active FROM links")}

    async def sync_state(self, guild_id: int) -> SyncRow | None:
        rows = await self._fetch(
            "SELECT phase, members_stored, member_count, synced_at FROM sync_states WHERE guild_id = $1",
            guild_id,
        )
        if not rows:
            return None
        phase, stored, count, synced_at = rows[0]
        return SyncRow(str(phase), int(stored), int(count) if count is not None else None, synced_at)

    async def members(self, guild_id: int) -> MemberRows:
        rows = await self._fetch("SELECT user_id, username, nick FROM members WHERE guild_id = $1", guild_id)
        by_id = {int(u): StoredMember(str(name), nick) for u, name, nick in rows}
        return MemberRows(len(rows), len(by_id), by_id)


@dataclass(frozen=True)
class MemberComparison:
    """Stored members against the sandbox's: what is missing, left over, doubled or different."""

    expected: int
    lost: int
    stale: int
    duplicated: int
    mismatched: int

    @property
    def exact(self) -> bool:
        return not (self.lost or self.stale or self.duplicated or self.mismatched)


def compare_members(
    expected: Mapping[int, Mapping[str, Any]], stored: MemberRows, fields: Iterable[str] = ()
) -> MemberComparison:
    """Compare by user id, and for each member in both the `fields` named (`nick`, `username`)."""
    fields = tuple(fields)
    mismatched = 0
    for user_id, row in stored.by_id.items():
        payload = expected.get(user_id)
        if payload is None:
            continue
        wanted = {"nick": payload.get("nick"), "username": payload["user"]["username"]}
        got = {"nick": row.nick, "username": row.username}
        if any(wanted[name] != got[name] for name in fields):
            mismatched += 1
    return MemberComparison(
        expected=len(expected),
        lost=len(expected.keys() - stored.by_id.keys()),
        stale=len(stored.by_id.keys() - expected.keys()),
        duplicated=stored.rows - stored.distinct,
        mismatched=mismatched,
    )


# -- owning the processes -------------------------------------------------------------------------


@dataclass
class Processes:
    """Starts processes and browsers for one test and ends every one of them, whatever the test's outcome."""

    directory: Path
    http: aiohttp.ClientSession
    # Each process, and whether it is ended gracefully (SIGTERM) rather than by kill -9.
    _popens: list[tuple[subprocess.Popen[bytes], bool]] = field(default_factory=list)
    _sessions: list[aiohttp.ClientSession] = field(default_factory=list)
    _logs: int = 0

    def _log_path(self, name: str) -> Path:
        self._logs += 1
        return self.directory / f"{self._logs:02d}-{name}.log"

    def _spawn(
        self, args: list[str], log_path: Path, *, graceful: bool, stdout: Path | None = None, **kwargs: Any
    ) -> subprocess.Popen[bytes]:
        """Start `python <args>` in the checkout; stderr (and stdout unless given) to `log_path`."""
        with contextlib.ExitStack() as files:
            log = files.enter_context(log_path.open("wb"))
            out = files.enter_context(stdout.open("wb")) if stdout else log
            popen = subprocess.Popen(
                [PYTHON, *args],
                cwd=ROOT,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=log,
                **kwargs,
            )
        self._popens.append((popen, graceful))
        return popen

    async def start_sandbox(
        self,
        *,
        guilds: int,
        members: int,
        redirect_uris: Iterable[str],
        log_level: str = "INFO",
        options: Iterable[str] = (),
    ) -> SandboxProcess:
        """`python -m sandbox` on a free port (`options`: more of its command line); returns once it has
        printed its JSON first line."""
        out = self._log_path("sandbox-stdout")
        log_path = self._log_path("sandbox")
        args = ["-m", "sandbox", "--guilds", str(guilds), "--members", str(members), "--port", "0"]
        args += ["--log-level", log_level, *options]
        for uri in redirect_uris:
            args += ["--redirect-uri", uri]
        popen = self._spawn(args, log_path, graceful=True, stdout=out)

        def first_line() -> str:
            if popen.poll() is not None:
                raise ProcessFailedError(
                    f"python -m sandbox exited with {popen.returncode}:\n{_tail(log_path)}"
                )
            text = out.read_text(encoding="utf-8")
            return text.split("\n", 1)[0] if "\n" in text else ""

        info = json.loads(await until(first_line, within=60, interval=0.05, what="the sandbox's JSON line"))
        return SandboxProcess(
            popen=popen,
            log_path=log_path,
            base_url=info["base_url"],
            client_id=info["client_id"],
            client_secret=info["client_secret"],
            bot_token=info["bot_token"],
            guilds=[SandboxGuild(int(g["id"]), g["name"], int(g["member_count"])) for g in info["guilds"]],
            http=self.http,
        )

    async def start_guildlink(
        self,
        sandbox: SandboxProcess,
        *,
        port: int,
        database: Path | None = None,
        database_url: str | None = None,
        log_level: str = "INFO",
        ready_within: float = 60,
        more_env: Mapping[str, str] | None = None,
    ) -> GuildlinkProcess:
        """`python main.py` against `sandbox`, serving http://localhost:<port>; returns once /readyz is 200.

        `more_env`: more settings (WEBHOOK_URL, ...), over the ones made here. Its database: the SQLite file
        `database`, or `database_url`.
        """
        if database is not None:
            data_dir, database_url = database.parent, f"sqlite:///{database}"
        else:
            assert database_url is not None, "a SQLite file or a database URL"
            data_dir = self.directory / f"data-{port}"
        env = {k: v for k, v in os.environ.items() if k not in GUILDLINK_SETTINGS}
        env |= {
            "DISCORD_CLIENT_ID": sandbox.client_id,
            "DISCORD_CLIENT_SECRET": sandbox.client_secret,
            "DISCORD_BOT_TOKEN": sandbox.bot_token,
            "DISCORD_BASE_URL": sandbox.base_url,
            "DISCORD_REDIRECT_URI": redirect_uri(port),
            "DATABASE_URL": database_url,
            "DATA_DIR": str(data_dir),
            "API_TOKEN": API_TOKEN,
            "LOG_LEVEL": log_level,
            **(more_env or {}),
        }
        log_path = self._log_path("guildlink")
        # An --env-file that does not exist: a developer's .env in the checkout must not leak in.
        popen = self._spawn(
            ["main.py", "--env-file", str(self.directory / "no.env")], log_path, graceful=False, env=env
        )
        process = GuildlinkProcess(popen, log_path, f"http://localhost:{port}", self.http)
        await process.wait_ready(ready_within)
        return process

    @contextlib.asynccontextmanager
    async def browser(
        self, guildlink: GuildlinkProcess, sandbox: SandboxProcess, *, request_timeout: float = 120
    ) -> AsyncIterator[Browser]:
        """A fresh browser: its own cookie jar (unsafe=True keeps cookies for localhost) and connections."""
        session = self.new_session(timeout=request_timeout)
        try:
            yield Browser(session, guildlink.web_url, sandbox)
        finally:
            await session.close()

    def new_session(
        self,
        *,
        timeout: float = 120,
        cookies: bool = True,
        local_address: str | None = None,
        limit: int = 100,
    ) -> aiohttp.ClientSession:
        """An HTTP client closed with the others at the end; `local_address` picks the client's own IP."""
        jar: aiohttp.abc.AbstractCookieJar = (
            aiohttp.CookieJar(unsafe=True) if cookies else aiohttp.DummyCookieJar()
        )
        connector = aiohttp.TCPConnector(
            limit=limit, local_addr=(local_address, 0) if local_address else None
        )
        session = aiohttp.ClientSession(
            cookie_jar=jar, connector=connector, timeout=aiohttp.ClientTimeout(total=timeout)
        )
        self._sessions.append(session)
        return session

    async def close(self) -> None:
        """Close every client, then end every process: guildlink by kill -9, the sandbox by SIGTERM."""
        for session in self._sessions:
            await session.close()
        for popen, graceful in reversed(self._popens):
            await asyncio.to_thread(_stop, popen, gracefully=graceful)


def redirect_uri(port: int) -> str:
    """guildlink's callback when it serves http://localhost:<port>."""
    return f"http://localhost:{port}/authorize-discord"


@contextlib.asynccontextmanager
async def process_owner(directory: Path) -> AsyncIterator[Processes]:
    """A `Processes` whose processes and clients end with the block, also when it raises."""
    http = aiohttp.ClientSession(cookie_jar=aiohttp.DummyCookieJar())
    owner = Processes(directory, http)
    try:
        yield owner
    finally:
        try:
            await owner.close()
        finally:
            await http.close()
