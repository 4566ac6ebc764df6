"""LinkCallback's decisions, one outcome per way a callback ends: no sockets, its collaborators faked.

The real-socket tests (test_link_flow.py, test_bot_not_left_behind.py, ...) walk the same paths end to end.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiohttp import web

from config import Secret
from store import Invite, InviteUnusableError, Link, RefConflictError, StoreUnavailableError
from web.keys import PAGES, PROGRESS
from web.link_callback import (
    MAX_CODE_LENGTH,
    BotFate,
    CallbackParams,
    CallbackResult,
    Cancelled,
    LinkCallback,
    Linked,
    NotStored,
    Refused,
    parse_callback_params,
)
from web.link_flow import CALLBACK_PAGES, outcome_page
from web.oauth import (
    DiscordOAuthError,
    DiscordUnavailableError,
    DiscordUser,
    InvalidClientError,
    InvalidGrantError,
    TokenGrant,
)
from web.pages import Pages
from web.params import ParameterError
from web.progress import ProgressTokens
from web.states import AcceptedState, StateProblem, new_token, token_hash

GUILD = 81384788765712384
OTHER_GUILD = 81384788765712385
USER = DiscordUser(id=42, username="admin")
GRANT = TokenGrant(
    access_token=Secret("access"), scopes=("identify", "guilds", "bot"), guild_id=GUILD, guild_name="Guild"
)
INVITE_TOKEN = new_token()


# A callback as Discord sends it back, the state sealed by us.
CALLBACK = CallbackParams(state="sealed", code="code", error=None, guild_hint=GUILD, permissions=8)
WITHOUT_INVITE = AcceptedState(invite_token=None)


def params(**changes: Any) -> CallbackParams:
    return replace(CALLBACK, **changes)


@dataclass
class FakeStates:
    accepted: AcceptedState | StateProblem = WITHOUT_INVITE

    async def accept(self, state: str | None, browser_id: str | None) -> AcceptedState | StateProblem:
        return self.accepted


@dataclass
class FakeOAuth:
    grant: TokenGrant | Exception = GRANT
    user: DiscordUser | Exception = USER
    exchanged: list[str] = field(default_factory=list)
    users_read: int = 0

    async def exchange_code(self, code: str) -> TokenGrant:
        self.exchanged.append(code)
        if isinstance(self.grant, Exception):
            raise self.grant
        return self.grant

    async def fetch_user(self, access_token: Secret) -> DiscordUser:
        self.users_read += 1
        if isinstance(self.user, Exception):
            raise self.user
        return self.user


@dataclass
class FakeStore:
    invites: dict[bytes, Invite] = field(default_factory=dict)
    links: dict[int, Link] = field(default_factory=dict)
    save_fails: Exception | None = None
    saved: list[tuple[Link, bytes | None]] = field(default_factory=list)

    async def get_invite(self, token_hash: bytes) -> Invite | None:
        return self.invites.get(token_hash)

    async def save_link(self, link: Link, *, invite_hash: bytes | None = None) -> Link:
        if self.save_fails is not None:
            raise self.save_fails
        self.saved.append((link, invite_hash))
        self.links[link.guild_id] = link
        return link

    async def get_link(self, guild_id: int) -> Link | None:
        return self.links.get(guild_id)


@dataclass
class FakeLinker:
    leaves: bool = True
    handoff_fails: bool = False
    linked: list[int] = field(default_factory=list)
    abandoned: list[int] = field(default_factory=list)

    async def guild_linked(self, link: Link) -> None:
        self.linked.append(link.guild_id)
        if self.handoff_fails:
            raise ConnectionError("the bot's end is gone")

    async def guild_abandoned(self, guild_id: int) -> bool:
        self.abandoned.append(guild_id)
        return self.leaves

    async def guild_unlinked(self, guild_id: int) -> None:
        raise AssertionError("the callback never unlinks")


@dataclass
class FakeInstalls:
    abandoned: list[int] = field(default_factory=list)

    def callback_abandoned(self, guild_id: int) -> None:
        self.abandoned.append(guild_id)


@dataclass
class Parts:
    states: FakeStates = field(default_factory=FakeStates)
    oauth: FakeOAuth = field(default_factory=FakeOAuth)
    store: FakeStore = field(default_factory=FakeStore)
    linker: FakeLinker = field(default_factory=FakeLinker)
    installs: FakeInstalls = field(default_factory=FakeInstalls)

    def callback(self) -> LinkCallback:
        return LinkCallback(
            states=self.states,
            oauth=self.oauth,
            store=self.store,
            linker=self.linker,
            abandoned_installs=self.installs,
        )


def an_invite(*, expires_in: timedelta = timedelta(days=1), used: bool = False) -> Invite:
    now = datetime.now(UTC)
    return Invite(
        token_hash=token_hash(INVITE_TOKEN),
        ref="customer-7",
        created_at=now,
        expires_at=now + expires_in,
        used_at=now if used else None,
    )


def a_link(*, active: bool = True) -> Link:
    return Link(
        guild_id=GUILD,
        guild_name="Guild",
        linked_by_id=7,
        linked_by_username="earlier",
        scopes=("bot",),
        permissions=0,
        linked_at=datetime.now(UTC),
        active=active,
    )


def invited() -> Parts:
    parts = Parts(states=FakeStates(AcceptedState(invite_token=INVITE_TOKEN)))
    parts.store.invites[token_hash(INVITE_TOKEN)] = an_invite()
    return parts


@pytest.mark.parametrize(
    ("problem", "result"),
    [
        (StateProblem.MISSING, CallbackResult.STATE_MISSING),
        (StateProblem.UNKNOWN, CallbackResult.STATE_UNKNOWN),
        (StateProblem.EXPIRED, CallbackResult.STATE_EXPIRED),
        (StateProblem.OTHER_BROWSER, CallbackResult.STATE_OTHER_BROWSER),
    ],
)
async def test_a_refused_state_is_refused_before_any_exchange(
    problem: StateProblem, result: CallbackResult
) -> None:
    parts = Parts(states=FakeStates(problem))
    assert await parts.callback().answer(params(), "browser") == Refused(result, "/link")
    assert parts.oauth.exchanged == []


async def test_a_declined_consent_is_cancelled_and_offers_the_same_invite_again() -> None:
    parts = invited()
    outcome = await parts.callback().answer(params(code=None, error="access_denied"), "browser")
    assert outcome == Cancelled(f"/start/{INVITE_TOKEN}")
    assert parts.oauth.exchanged == []


async def test_no_code_is_refused() -> None:
    parts = Parts()
    assert await parts.callback().answer(params(code=""), "browser") == Refused(
        CallbackResult.NO_CODE, "/link"
    )
    assert parts.oauth.exchanged == []


@pytest.mark.parametrize("invite", [None, an_invite(used=True), an_invite(expires_in=-timedelta(seconds=1))])
async def test_an_invite_no_longer_open_is_refused_before_the_exchange(invite: Invite | None) -> None:
    parts = Parts(states=FakeStates(AcceptedState(invite_token=INVITE_TOKEN)))
    if invite is not None:
        parts.store.invites[invite.token_hash] = invite
    outcome = await parts.callback().answer(params(), "browser")
    assert outcome == Refused(CallbackResult.INVITE_GONE, f"/start/{INVITE_TOKEN}")
    assert parts.oauth.exchanged == []


@pytest.mark.parametrize(
    ("error", "result", "detail"),
    [
        (InvalidGrantError("invalid_grant"), CallbackResult.CODE_EXPIRED, ""),
        (InvalidClientError("invalid_client"), CallbackResult.CLIENT_REFUSED, ""),
        (
            DiscordUnavailableError("HTTP 503"),
            CallbackResult.DISCORD_FAILED,
            DiscordUnavailableError.public_message,
        ),
        (DiscordOAuthError("HTTP 400"), CallbackResult.DISCORD_FAILED, DiscordOAuthError.public_message),
    ],
)
async def test_a_failed_exchange_is_refused_and_nothing_is_left(
    error: Exception, result: CallbackResult, detail: str
) -> None:
    parts = Parts(oauth=FakeOAuth(grant=error))
    assert await parts.callback().answer(params(), "browser") == Refused(result, "/link", detail)
    assert parts.linker.abandoned == [] and parts.store.saved == []


async def test_a_grant_without_a_guild_is_refused_and_the_bot_is_not_asked_to_leave() -> None:
    parts = Parts(oauth=FakeOAuth(grant=TokenGrant(Secret("access"), ("identify",), None, None)))
    assert await parts.callback().answer(params(), "browser") == Refused(CallbackResult.NO_GUILD, "/link")
    assert parts.linker.abandoned == [] and parts.oauth.users_read == 0


async def test_a_tampered_guild_hint_stores_nothing_and_the_bot_leaves() -> None:
    parts = Parts()
    outcome = await parts.callback().answer(params(guild_hint=OTHER_GUILD), "browser")
    assert outcome == NotStored(GUILD, CallbackResult.GUILD_MISMATCH, BotFate.LEFT, "/link")
    assert parts.oauth.users_read == 0 and parts.store.saved == []
    assert parts.linker.abandoned == [GUILD] and parts.installs.abandoned == [GUILD]


async def test_a_bot_that_cannot_leave_is_said_to_be_still_there() -> None:
    parts = Parts(linker=FakeLinker(leaves=False))
    outcome = await parts.callback().answer(params(guild_hint=OTHER_GUILD), "browser")
    assert isinstance(outcome, NotStored) and outcome.bot is BotFate.NOT_LEFT


async def test_users_me_failing_keeps_the_bot_for_an_existing_active_link() -> None:
    parts = Parts(oauth=FakeOAuth(user=DiscordUnavailableError("HTTP 503")))
    parts.store.links[GUILD] = a_link()
    outcome = await parts.callback().answer(params(), "browser")
    assert outcome == NotStored(
        GUILD, CallbackResult.DISCORD_FAILED, BotFate.STAYS, "/link", DiscordUnavailableError.public_message
    )
    assert parts.linker.abandoned == [] and parts.installs.abandoned == []


async def test_an_inactive_earlier_link_does_not_keep_the_bot() -> None:
    parts = Parts(oauth=FakeOAuth(user=DiscordUnavailableError("HTTP 503")))
    parts.store.links[GUILD] = a_link(active=False)
    outcome = await parts.callback().answer(params(), "browser")
    assert isinstance(outcome, NotStored) and outcome.bot is BotFate.LEFT
    assert parts.linker.abandoned == [GUILD]


async def test_another_refs_link_keeps_the_bot_and_is_a_ref_conflict() -> None:
    # The fake holds no link: the conflict alone must keep the bot (the store said the guild is linked).
    parts = invited()
    parts.store.save_fails = RefConflictError(GUILD)
    outcome = await parts.callback().answer(params(), "browser")
    assert outcome == NotStored(GUILD, CallbackResult.REF_CONFLICT, BotFate.STAYS, f"/start/{INVITE_TOKEN}")
    assert parts.linker.abandoned == []


@pytest.mark.parametrize(
    ("error", "result"),
    [
        (InviteUnusableError(), CallbackResult.INVITE_USED),
        (StoreUnavailableError("database is locked"), CallbackResult.STORE_UNAVAILABLE),
        (RuntimeError("a bug"), CallbackResult.FAILED),
    ],
)
async def test_a_link_the_store_would_not_take_makes_the_bot_leave(
    error: Exception, result: CallbackResult, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.ERROR, logger="web.link_callback")
    parts = invited()
    parts.store.save_fails = error
    outcome = await parts.callback().answer(params(), "browser")
    assert outcome == NotStored(GUILD, result, BotFate.LEFT, f"/start/{INVITE_TOKEN}")
    assert parts.linker.abandoned == [GUILD] and parts.linker.linked == []
    failures = [r for r in caplog.records if r.getMessage().startswith("link.failed_after_exchange")]
    assert len(failures) == (1 if result is CallbackResult.FAILED else 0)


async def test_a_link_is_stored_with_the_invites_ref_and_handed_to_the_bot() -> None:
    parts = invited()
    outcome = await parts.callback().answer(params(permissions=2048), "browser")
    [(saved, invite_hash)] = parts.store.saved
    assert outcome == Linked(saved)
    assert (saved.guild_id, saved.guild_name, saved.ref, saved.permissions) == (
        GUILD,
        "Guild",
        "customer-7",
        2048,
    )
    assert (saved.linked_by_id, saved.linked_by_username, saved.scopes) == (
        USER.id,
        USER.username,
        GRANT.scopes,
    )
    assert invite_hash == token_hash(INVITE_TOKEN)
    assert parts.linker.linked == [GUILD] and parts.linker.abandoned == []


async def test_a_guild_without_a_name_is_stored_under_its_id_and_no_ref_without_an_invite() -> None:
    parts = Parts(oauth=FakeOAuth(grant=TokenGrant(Secret("access"), ("bot",), GUILD, None)))
    outcome = await parts.callback().answer(params(guild_hint=None), "browser")
    assert isinstance(outcome, Linked)
    assert outcome.link.guild_name == str(GUILD) and outcome.link.ref is None
    assert parts.store.saved[0][1] is None


async def test_a_failed_hand_off_still_ends_linked() -> None:
    # The link is committed; the bot picks every active link up again at start-up.
    parts = Parts(linker=FakeLinker(handoff_fails=True))
    outcome = await parts.callback().answer(params(), "browser")
    assert isinstance(outcome, Linked) and parts.linker.linked == [GUILD]


def test_the_query_is_parsed_with_permissions_zero_when_absent() -> None:
    parsed = parse_callback_params({"state": "s", "code": "c", "guild_id": str(GUILD)})
    assert parsed == CallbackParams(state="s", code="c", error=None, guild_hint=GUILD, permissions=0)


@pytest.mark.parametrize(
    ("query", "parameter"),
    [
        ({"code": "c" * (MAX_CODE_LENGTH + 1)}, "code"),
        ({"code": "c\x00de"}, "code"),
        ({"code": "cödé"}, "code"),
        ({"guild_id": "12a"}, "guild_id"),
        ({"permissions": "-1"}, "permissions"),
    ],
)
def test_a_malformed_query_names_its_parameter(query: dict[str, str], parameter: str) -> None:
    with pytest.raises(ParameterError) as raised:
        parse_callback_params(query)
    assert raised.value.parameter == parameter


def test_every_result_has_a_page_and_its_label_is_the_one_metrics_always_counted() -> None:
    # /metrics' labels by status, as dashboards know them; a cancel is the only 200 that is not a link.
    by_status = {
        200: "linked",
        400: "refused",
        409: "ref_conflict",
        500: "500",
        502: "discord_error",
        503: "unavailable",
    }
    assert set(CALLBACK_PAGES) == set(CallbackResult)
    for result, page in CALLBACK_PAGES.items():
        expected = "cancelled" if result is CallbackResult.CANCELLED else by_status[page.status]
        assert page.label == expected, result


def page_app() -> web.Application:
    app = web.Application()
    app[PAGES] = Pages()
    app[PROGRESS] = ProgressTokens(Secret("client-secret"))
    return app


def text_of(response: web.Response) -> str:
    assert response.text is not None
    return response.text


def test_a_page_that_stored_nothing_says_where_the_bot_is() -> None:
    app = page_app()
    stays = outcome_page(app, NotStored(GUILD, CallbackResult.STORE_UNAVAILABLE, BotFate.STAYS, "/link"))
    assert stays.status == 503
    assert "We could not record the link right now. Nothing was stored; the bot stays" in text_of(stays)
    # A failure nobody foresaw has no words of its own: the page says only where the bot is.
    failed = outcome_page(app, NotStored(GUILD, CallbackResult.FAILED, BotFate.NOT_LEFT, "/start/x"))
    assert failed.status == 500 and "<p>Nothing was stored, but the bot could not leave" in text_of(failed)
    assert 'href="/start/x"' in text_of(failed)


def test_a_page_offers_to_start_again_only_where_that_can_help() -> None:
    app = page_app()
    expired = outcome_page(app, Refused(CallbackResult.CODE_EXPIRED, "/start/x"))
    assert expired.status == 400 and InvalidGrantError.public_message in text_of(expired)
    assert 'href="/start/x"' in text_of(expired)
    for result in (CallbackResult.INVITE_GONE, CallbackResult.CLIENT_REFUSED):
        assert "Start again" not in text_of(outcome_page(app, Refused(result, "/start/x"))), result


def test_the_linked_page_carries_the_guilds_progress_link() -> None:
    app = page_app()
    response = outcome_page(app, Linked(a_link()))
    token = text_of(response).split('data-status-url="/progress/', 1)[1].split('"', 1)[0]
    assert response.status == 200 and app[PROGRESS].guild_of(token) == GUILD
