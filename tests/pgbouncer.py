"""A throwaway pgbouncer for the tests: Debian's program, a generated ini, in front of a PostgreSQL server."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from tests.harness import free_port

# The one login the tests use through it: md5 against its own user list, as Debian's installed ini has it.
USER = "postgres"
PASSWORD = "pooled-pa55word"
START_TIMEOUT = 30.0


class PgbouncerMissingError(RuntimeError):
    """No pgbouncer on this machine, or it did not start."""


@dataclass
class ThrowawayPgbouncer:
    """pgbouncer on a free loopback port, its settings Debian's defaults but for `pool_mode` and where to listen."""

    process: subprocess.Popen[bytes]
    folder: Path
    port: int

    def url_for(self, database_url: str) -> str:
        """`database_url`'s database, reached through this pgbouncer with its login."""
        path = urlsplit(database_url).path
        return urlunsplit(("postgresql", f"{USER}:{PASSWORD}@127.0.0.1:{self.port}", path, "", ""))

    @property
    def log(self) -> str:
        log = self.folder / "pgbouncer.log"
        return log.read_text(errors="replace") if log.is_file() else ""

    def stop(self) -> None:
        """Stop it at once and delete its files."""
        try:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        finally:
            shutil.rmtree(self.folder, ignore_errors=True)


def _ini(server_url: str, port: int, folder: Path, pool_mode: str) -> str:
    server = urlsplit(server_url)
    password = f" password={server.password}" if server.password else ""
    # Every database name goes to the server's database of that name, as the server's login.
    return f"""\
[databases]
* = host={server.hostname} port={server.port or 5432} user={server.username}{password}

[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = md5
auth_file = {folder / "userlist.txt"}
logfile = {folder / "pgbouncer.log"}
pidfile = {folder / "pgbouncer.pid"}
pool_mode = {pool_mode}
"""


@contextlib.contextmanager
def running_pgbouncer(server_url: str, *, pool_mode: str = "session") -> Iterator[ThrowawayPgbouncer]:
    """pgbouncer in `pool_mode` in front of the server `server_url` names, stopped on exit."""
    program = shutil.which("pgbouncer") or "/usr/sbin/pgbouncer"
    if not Path(program).is_file():
        raise PgbouncerMissingError("pgbouncer is not installed: run 'apt-get install pgbouncer'")
    folder = Path(tempfile.mkdtemp(prefix="guildlink-pgbouncer-"))
    port = free_port()
    (folder / "userlist.txt").write_text(f'"{USER}" "{PASSWORD}"\n')
    (folder / "pgbouncer.ini").write_text(_ini(server_url, port, folder, pool_mode))
    command = [program, str(folder / "pgbouncer.ini")]
    if os.geteuid() == 0:
        # pgbouncer refuses to run as root; its files must be readable by whoever it runs as.
        shutil.chown(folder, "postgres", "postgres")
        for path in folder.iterdir():
            shutil.chown(path, "postgres", "postgres")
        command = ["runuser", "-u", "postgres", "--", *command]
    # Its log goes to stderr as well as to its logfile: a file, not a pipe nobody reads, which would fill.
    with (folder / "stderr.log").open("wb") as stderr:
        process = subprocess.Popen(
            command, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=stderr
        )
    pgbouncer = ThrowawayPgbouncer(process, folder, port)
    try:
        _wait_listening(pgbouncer)
        yield pgbouncer
    finally:
        pgbouncer.stop()


def _wait_listening(pgbouncer: ThrowawayPgbouncer) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        if pgbouncer.process.poll() is not None:
            stderr = (pgbouncer.folder / "stderr.log").read_text(errors="replace")
            raise PgbouncerMissingError(f"pgbouncer exited ({pgbouncer.process.returncode}): {stderr}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", pgbouncer.port), timeout=1):
            return
        time.sleep(0.05)
    raise PgbouncerMissingError(f"pgbouncer did not listen within {START_TIMEOUT:.0f}s: {pgbouncer.log}")
