"""What the last run used, kept under DATA_DIR so that `main.py status` reads the same database."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

log = logging.getLogger(__name__)

RECORD_NAME = "last-run.json"


@dataclass(frozen=True, slots=True)
class RunRecord:
    """The database a run used (without its password) and whether it was a sandbox run."""

    database_url: str
    sandbox: bool
    started_at: str


def without_password(url: str) -> str:
    """The URL with any password taken out: the record and what status prints must never hold one."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    host = parts.netloc.rpartition("@")[2]
    user = f"{parts.username}@" if parts.username else ""
    return urlunsplit(parts._replace(netloc=user + host))


def save(data_dir: Path, database_url: str, *, sandbox: bool) -> None:
    """Record this run's database; a failure to write is logged, never a reason not to run."""
    record = {
        "database_url": without_password(database_url),
        "sandbox": sandbox,
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    path = data_dir / RECORD_NAME
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(RECORD_NAME + ".partial")
        partial.write_text(json.dumps(record) + "\n")
        os.replace(partial, path)
    except OSError as exc:
        log.warning("guildlink.run_not_recorded path=%s error=%s", path, exc.strerror or exc)


def load(data_dir: Path) -> RunRecord | None:
    """The last run's record, or None if there is none (or it cannot be read)."""
    try:
        data = json.loads((data_dir / RECORD_NAME).read_text())
        return RunRecord(str(data["database_url"]), bool(data["sandbox"]), str(data.get("started_at", "")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
