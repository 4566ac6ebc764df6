"""Progress links: they name one guild, can't be forged, and expire."""

from __future__ import annotations

from config import Secret
from web.progress import ProgressTokens


def test_a_token_names_its_guild_until_it_expires() -> None:
    tokens = ProgressTokens(Secret("client-secret"), ttl=60)
    token = tokens.issue(81384788765712384, now=1000.0)
    assert tokens.guild_of(token, now=1059.0) == 81384788765712384
    assert tokens.guild_of(token, now=1061.0) is None


def test_a_forged_or_mangled_token_names_nothing() -> None:
    tokens = ProgressTokens(Secret("client-secret"))
    token = tokens.issue(1)
    payload, signature = token.split(".")
    other = ProgressTokens(Secret("another-secret")).issue(2)
    assert tokens.guild_of(other) is None
    assert tokens.guild_of(other.split(".")[0] + "." + signature) is None
    assert tokens.guild_of(payload) is None
    assert tokens.guild_of("not base64!.@@") is None
    assert tokens.guild_of(token + "x") is None
