"""Our JSON Schemas of the Discord REST payloads the sandbox sends, and validation against them.

Each `*.json` here is written from Discord's developer docs (`x-source`) and names the schema of Discord's
official OpenAPI spec it must agree with (`x-openapi-schema`); test_discord_schemas.py holds it to that.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SCHEMA_DIR = Path(__file__).parent

# The schema of each response the REST tests read, keyed as Discord's spec keys its responses (a path alone
# is GET's; another method comes first, "PUT /path"). GET /guilds/{id} is always asked with_counts (the spec
# gives the one path one schema, counts optional).
RESPONSES: dict[tuple[str, str], dict[str, Any]] = {
    ("/users/@me", "200"): {"$ref": "private-user.json"},
    ("/users/@me/guilds", "200"): {"type": "array", "items": {"$ref": "my-guild.json"}},
    ("/oauth2/applications/@me", "200"): {"$ref": "application.json"},
    ("/gateway", "200"): {"$ref": "gateway.json"},
    ("/gateway/bot", "200"): {"$ref": "gateway-bot.json"},
    ("/soundboard-default-sounds", "200"): {"type": "array", "items": {"$ref": "soundboard-sound.json"}},
    ("/guilds/{guild_id}", "200"): {"$ref": "guild-with-counts.json"},
    ("/guilds/{guild_id}/members", "200"): {"type": "array", "items": {"$ref": "guild-member.json"}},
    ("/users/@me", "4XX"): {"$ref": "error.json"},
    ("/guilds/{guild_id}/members", "4XX"): {"$ref": "error.json"},
    ("/users/@me", "429"): {"$ref": "rate-limited.json"},
    ("PUT /guilds/{guild_id}/members/{user_id}/roles/{role_id}", "4XX"): {"$ref": "error.json"},
    ("DELETE /guilds/{guild_id}/members/{user_id}/roles/{role_id}", "4XX"): {"$ref": "error.json"},
    ("PUT /guilds/{guild_id}/members/{user_id}/roles/{role_id}", "429"): {"$ref": "rate-limited.json"},
    ("DELETE /guilds/{guild_id}/members/{user_id}/roles/{role_id}", "429"): {"$ref": "rate-limited.json"},
}


def schema_names() -> list[str]:
    """The file name of every schema here, sorted."""
    return sorted(path.name for path in SCHEMA_DIR.glob("*.json"))


@cache
def registry() -> Registry[Any]:
    """Every schema under its file name, so that `{"$ref": "user.json"}` finds it; a malformed one raises."""
    resources = []
    for name in schema_names():
        schema = json.loads((SCHEMA_DIR / name).read_text())
        jsonschema.Draft202012Validator.check_schema(schema)
        if not str(schema.get("x-source", "")).startswith("https://discord.com/developers/docs/"):
            raise ValueError(f"{name} names no Discord developer docs page as its x-source")
        resources.append((name, DRAFT202012.create_resource(schema)))
    return Registry().with_resources(resources)


def validate(instance: Any, schema: str | dict[str, Any]) -> None:
    """Raise jsonschema.ValidationError unless `instance` matches a schema file, or a schema referring to them."""
    root = {"$ref": schema} if isinstance(schema, str) else schema
    jsonschema.Draft202012Validator(root, registry=registry()).validate(instance)


def validate_response(instance: Any, path: str, status: str = "200") -> None:
    """Raise jsonschema.ValidationError unless `instance` is what Discord answers to `path` with `status`."""
    validate(instance, RESPONSES[(path, status)])
