"""A throwaway PostgreSQL server for the tests: initdb into a temporary folder, pg_ctl on loopback."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import asyncpg

from tests.harness import free_port

SUPERUSER = "postgres"
# Debian keeps the server's programs out of PATH, one folder per major version.
DEBIAN_BIN_DIRS = "/usr/lib/postgresql/*/bin"


class PostgresMissingError(RuntimeError):
    """No PostgreSQL server programs on this machine, or the throwaway cluster did not start."""


def find_bin_dir() -> Path:
    """The folder of initdb and pg_ctl: Debian's newest version, else whatever PATH has."""
    found = sorted(
        Path("/").glob(DEBIAN_BIN_DIRS.lstrip("/") + "/initdb"),
        key=lambda path: int(path.parent.parent.name) if path.parent.parent.name.isdigit() else 0,
    )
    if found:
        return found[-1].parent
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).resolve().parent
    raise PostgresMissingError(
        f"PostgreSQL is not installed (no initdb in {DEBIAN_BIN_DIRS} or on PATH): run"
        " 'apt-get install postgresql', or set GUILDLINK_TEST_POSTGRES_URL to a server where the tests may"
        " create databases."
    )


@dataclass
class ThrowawayCluster:
    """A PostgreSQL cluster in a temporary folder, listening on 127.0.0.1 only, trusting local logins."""

    bin_dir: Path
    folder: Path
    port: int

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    def _run(self, program: str, *args: str) -> None:
        # initdb refuses to run as root, and the server must own its files: as root (CI), run as postgres.
        command = [str(self.bin_dir / program), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        result = subprocess.run(
            command, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=120, check=False
        )
        if result.returncode != 0:
            log = self.folder / "server.log"
            server_log = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
            raise PostgresMissingError(
                f"{program} failed ({result.returncode}): {result.stderr.strip()[-2000:]}\n{server_log}"
            )

    @classmethod
    def start(cls, *, durable: bool = False) -> ThrowawayCluster:
        """initdb and start a new cluster on a free loopback port.

        `durable`: PostgreSQL's own defaults (fsync on), as a benchmark against SQLite's fsyncs must have.
        """
        bin_dir = find_bin_dir()
        # Not under pytest's basetemp: its folders are private to root, and the server runs as postgres.
        folder = Path(tempfile.mkdtemp(prefix="guildlink-postgres-"))
        if os.geteuid() == 0:
            shutil.chown(folder, "postgres", "postgres")
        cluster = cls(bin_dir, folder, free_port())
        try:
            cluster._run(
                "initdb", "-D", str(cluster.data_dir), "-U", SUPERUSER, "--auth=trust", "-E", "UTF8",
                "--locale=C", "--no-sync",
            )  # fmt: skip
            options = f"-c listen_addresses=127.0.0.1 -p {cluster.port} -c unix_socket_directories={folder}"
            if not durable:
                # Durability settings off: the cluster is thrown away, and fsyncs would only slow the suite.
                options += " -c fsync=off -c full_page_writes=off -c synchronous_commit=off"
            log = str(folder / "server.log")
            cluster._run(
                "pg_ctl", "-D", str(cluster.data_dir), "-l", log, "-o", options, "-w", "-t", "60", "start"
            )
        except BaseException:
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return cluster

    def stop(self) -> None:
        """Stop the server at once and delete its files."""
        try:
            self._run("pg_ctl", "-D", str(self.data_dir), "-m", "immediate", "-w", "stop")
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


@contextlib.asynccontextmanager
async def fresh_database(server_url: str, prefix: str) -> AsyncIterator[str]:
    """A new, empty database named `prefix`_<random> on the server, dropped on exit; yields its URL."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(server_url)
    try:
        await admin.execute(f'CREATE DATABASE "{name}"')
    finally:
        await admin.close()
    try:
        yield urlunsplit(urlsplit(server_url)._replace(path=f"/{name}"))
    finally:
        admin = await asyncpg.connect(server_url)
        try:
            await admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        finally:
            await admin.close()
