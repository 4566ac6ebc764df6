"""web/openapi.json is exact: schemathesis sends what it describes (and what it forbids) to the API on a socket."""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import UTC, datetime
from pathlib import Path

from store import open_store
from tests.store.records import a_link, a_member
from tests.web.serving import API_TOKEN, app_settings, serving

CONFIG = Path(__file__).with_name("schemathesis.toml")
DOCUMENT = json.loads((Path(__file__).resolve().parents[2] / "web" / "openapi.json").read_text())
OPERATIONS = sum(1 for path in DOCUMENT["paths"].values() for method in path if method != "parameters")
# Enough to reach every parameter's edges in the coverage phase and a few hundred generated requests; a
# fixed seed, so that a run fails or passes the same way each time (change it to explore further).
MAX_EXAMPLES = 60
SEED = 17


async def test_the_api_answers_as_its_openapi_document_says(tmp_path: Path) -> None:
    database_url = f"sqlite:///{tmp_path / 'guildlink.db'}"
    async with open_store(database_url) as store:
        # One guild with members and events, so that some requests find something.
        guild_id = 794928565794635776
        await store.save_link(a_link(guild_id, ref="customer-42"))
        await store.upsert_members(
            guild_id, [a_member(user_id) for user_id in range(1, 6)], datetime.now(UTC)
        )
        async with serving(app_settings(database_url), store) as served:
            run = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "schemathesis.cli", "--config-file", str(CONFIG), "--no-color",
                "run", f"{served.url}/api/openapi.json", "--url", served.url,
                "--header", f"Authorization: Bearer {API_TOKEN}",
                "--checks", "all", "--phases", "examples,coverage,fuzzing",
                "--max-examples", str(MAX_EXAMPLES), "--seed", str(SEED), "--workers", "1",
                cwd=tmp_path, stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
            )  # fmt: skip
            output, _ = await run.communicate()
    report = output.decode(errors="replace")
    assert run.returncode == 0, report
    # Every operation of the document was tried, none skipped for want of data.
    assert f"Selected: {OPERATIONS}/{OPERATIONS}" in report and f"Tested: {OPERATIONS}" in report, report
