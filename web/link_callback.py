"""The OAuth2 callback's decisions: check the state and invite, exchange the code, store the link or leave.

No aiohttp here: `LinkCallback.answer` returns an outcome, and web/link_flow.py's handler turns it into a page,
a status and a /metrics label.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import Enum, auto
from typing import NamedTuple, Protocol, TypeAlias

from config import Secret
from handoff import GuildLinker
from store import Invite, InviteUnusableError, Link, RefConflictError, StoreUnavailableError
from web.oauth import DiscordOAuthError, DiscordUser, InvalidClientError, InvalidGrantError, TokenGrant
from web.params import ParameterError, parse_optional_snowflake, parse_whole_number
from web.states import AcceptedState, StateProblem, is_token, token_hash

log = logging.getLogger(__name__)

# Discord's codes are 30 characters; anything much longer is not a code.
MAX_CODE_LENGTH = 256


@dataclass(frozen=True, slots=True)
class CallbackParams:
    """The callback's query, checked before anything is used up, exchanged or stored."""

    state: str | None
    code: str | None
    error: str | None
    guild_hint: int | None
    permissions: int


def parse_callback_params(query: Mapping[str, str]) -> CallbackParams:
    """The callback's query as CallbackParams; ParameterError naming the first malformed parameter."""
    code = query.get("code")
    if code is not None and (len(code) > MAX_CODE_LENGTH or not code.isascii() or not code.isprintable()):
        raise ParameterError("code", "code is not an authorization code Discord issues.")
    permissions = query.get("permissions")
    return CallbackParams(
        state=query.get("state"),
        code=code,
        error=query.get("error"),
        guild_hint=parse_optional_snowflake(query.get("guild_id"), "guild_id"),
        permissions=0 if permissions is None else parse_whole_number(permissions, "permissions"),
    )


def start_url(invite_token: str | None) -> str:
    """Where a flow starts again: the same invite (its ref kept) or a fresh /link."""
    return f"/start/{invite_token}" if invite_token else "/link"


class CallbackResult(Enum):
    """How a callback ended; web/link_flow.py's table gives each its page, status and /metrics label."""

    LINKED = auto()
    CANCELLED = auto()
    # Refused before a token named the guild, so no guild to leave (Refused):
    BAD_PARAMETER = auto()
    STATE_MISSING = auto()
    STATE_UNKNOWN = auto()
    STATE_EXPIRED = auto()
    STATE_OTHER_BROWSER = auto()
    NO_CODE = auto()
    INVITE_GONE = auto()
    CODE_EXPIRED = auto()
    CLIENT_REFUSED = auto()
    NO_GUILD = auto()
    # Either side of the exchange: the token endpoint (Refused) or /users/@me (NotStored) failed.
    DISCORD_FAILED = auto()
    # Discord added the bot, but no link was stored (NotStored):
    GUILD_MISMATCH = auto()
    INVITE_USED = auto()
    REF_CONFLICT = auto()
    STORE_UNAVAILABLE = auto()
    FAILED = auto()


STATE_REFUSALS = {
    StateProblem.MISSING: CallbackResult.STATE_MISSING,
    StateProblem.UNKNOWN: CallbackResult.STATE_UNKNOWN,
    StateProblem.EXPIRED: CallbackResult.STATE_EXPIRED,
    StateProblem.OTHER_BROWSER: CallbackResult.STATE_OTHER_BROWSER,
}


class BotFate(Enum):
    """Where the bot is after a callback that stored no link."""

    # An existing link of the guild keeps it there.
    STAYS = auto()
    LEFT = auto()
    # Leaving failed: the admin must remove it by hand.
    NOT_LEFT = auto()


@dataclass(frozen=True, slots=True)
class Linked:
    """The link is committed and handed to the bot."""

    link: Link

    @property
    def result(self) -> CallbackResult:
        return CallbackResult.LINKED


@dataclass(frozen=True, slots=True)
class Cancelled:
    """The admin declined on Discord's consent page; the state is used up."""

    retry_url: str

    @property
    def result(self) -> CallbackResult:
        return CallbackResult.CANCELLED


@dataclass(frozen=True, slots=True)
class Refused:
    """Refused before a token named the guild: no guild to leave. `detail`: the parameter's or Discord's message."""

    result: CallbackResult
    retry_url: str
    detail: str = ""


@dataclass(frozen=True, slots=True)
class NotStored:
    """Discord added the bot to `guild_id` but no link was stored; `bot` says whether it left."""

    guild_id: int
    result: CallbackResult
    bot: BotFate
    retry_url: str
    detail: str = ""


CallbackOutcome: TypeAlias = Linked | Cancelled | Refused | NotStored


class StateChecker(Protocol):
    async def accept(self, state: str | None, browser_id: str | None) -> AcceptedState | StateProblem: ...


class CodeExchange(Protocol):
    async def exchange_code(self, code: str) -> TokenGrant: ...

    async def fetch_user(self, access_token: Secret) -> DiscordUser: ...


class InviteReader(Protocol):
    async def get_invite(self, token_hash: bytes) -> Invite | None: ...


class LinkRecords(InviteReader, Protocol):
    async def save_link(self, link: Link, *, invite_hash: bytes | None = None) -> Link: ...

    async def get_link(self, guild_id: int) -> Link | None: ...


class AbandonedInstalls(Protocol):
    """web/uncalled_installs.py's side: Discord's event of an install the callback left must not link it."""

    def callback_abandoned(self, guild_id: int) -> None: ...


async def invite_is_open(invites: InviteReader, invite_token: str | None) -> bool:
    """The invite exists, is not used up and has not expired."""
    if not is_token(invite_token):
        return False
    invite = await invites.get_invite(token_hash(invite_token))
    return invite is not None and invite.is_open(datetime.now(UTC))


class _Unstored(NamedTuple):
    """Why a link was not stored after the exchange, before the bot's fate is known."""

    result: CallbackResult
    detail: str = ""


class LinkCallback:
    """Discord's redirect after consent, decided: each callback ends in exactly one outcome."""

    def __init__(
        self,
        *,
        states: StateChecker,
        oauth: CodeExchange,
        store: LinkRecords,
        linker: GuildLinker,
        abandoned_installs: AbandonedInstalls | None,
    ) -> None:
        self._states = states
        self._oauth = oauth
        self._store = store
        self._linker = linker
        # None without DISCORD_PUBLIC_KEY: then no event of Discord's can link a guild after us.
        self._abandoned_installs = abandoned_installs

    async def answer(self, params: CallbackParams, browser_id: str | None) -> CallbackOutcome:
        """Use up the state, then exchange the code and store the link; or say why not, and where the bot is."""
        accepted = await self._states.accept(params.state, browser_id)
        if isinstance(accepted, StateProblem):
            log.info("link.state_refused reason=%s", accepted.name)
            return Refused(STATE_REFUSALS[accepted], start_url(None))
        retry_url = start_url(accepted.invite_token)
        if params.error is not None:
            log.info("link.consent_declined error=%r", params.error[:64])
            return Cancelled(retry_url)
        if not params.code:
            return Refused(CallbackResult.NO_CODE, retry_url)
        if accepted.invite_token is not None and not await invite_is_open(self._store, accepted.invite_token):
            return Refused(CallbackResult.INVITE_GONE, retry_url)
        try:
            grant = await self._oauth.exchange_code(params.code)
        except InvalidGrantError:
            return Refused(CallbackResult.CODE_EXPIRED, retry_url)
        except InvalidClientError:
            return Refused(CallbackResult.CLIENT_REFUSED, retry_url)
        except DiscordOAuthError as exc:
            return Refused(CallbackResult.DISCORD_FAILED, retry_url, exc.public_message)
        if grant.guild_id is None:
            log.warning("link.no_guild_in_token scopes=%s", " ".join(grant.scopes))
            return Refused(CallbackResult.NO_GUILD, retry_url)

        # From here on Discord has added the bot to the guild: either the link is stored, or the bot leaves.
        guild_id = grant.guild_id
        try:
            stored = await self._store_link(accepted, params, grant, guild_id)
        except Exception:
            log.exception("link.failed_after_exchange guild=%d", guild_id)
            stored = _Unstored(CallbackResult.FAILED)
        if isinstance(stored, _Unstored):
            return NotStored(
                guild_id, stored.result, await self._bot_fate(guild_id, stored), retry_url, stored.detail
            )
        log.info("link.saved guild=%d user=%d", stored.guild_id, stored.linked_by_id)
        try:
            # Never waits on the gateway: the bot picks the sync up in its own time.
            await self._linker.guild_linked(stored)
        except Exception:
            # The link is committed; the bot picks every active link up again at start-up.
            log.exception("link.handoff_failed guild=%d", stored.guild_id)
        return Linked(stored)

    async def _store_link(
        self, accepted: AcceptedState, params: CallbackParams, grant: TokenGrant, guild_id: int
    ) -> Link | _Unstored:
        if params.guild_hint is not None and params.guild_hint != guild_id:
            # The redirect's guild_id is only a hint; a mismatch means the URL was tampered with.
            log.warning("link.guild_mismatch token_guild=%d redirect_guild=%d", guild_id, params.guild_hint)
            return _Unstored(CallbackResult.GUILD_MISMATCH)
        try:
            user = await self._oauth.fetch_user(grant.access_token)
        except DiscordOAuthError as exc:
            return _Unstored(CallbackResult.DISCORD_FAILED, exc.public_message)
        invite = (
            await self._store.get_invite(token_hash(accepted.invite_token)) if accepted.invite_token else None
        )
        # The access token is dropped here: nothing we do needs it again.
        try:
            return await self._store.save_link(
                Link(
                    guild_id=guild_id,
                    guild_name=grant.guild_name or str(guild_id),
                    linked_by_id=user.id,
                    linked_by_username=user.username,
                    scopes=grant.scopes,
                    permissions=params.permissions,
                    linked_at=datetime.now(UTC),
                    ref=invite.ref if invite else None,
                ),
                invite_hash=invite.token_hash if invite else None,
            )
        except InviteUnusableError:
            return _Unstored(CallbackResult.INVITE_USED)
        except RefConflictError:
            log.warning("link.ref_conflict guild=%d: linked for another ref, left unchanged", guild_id)
            return _Unstored(CallbackResult.REF_CONFLICT)
        except StoreUnavailableError:
            return _Unstored(CallbackResult.STORE_UNAVAILABLE)

    async def _bot_fate(self, guild_id: int, unstored: _Unstored) -> BotFate:
        """Leave the guild, unless a link of it (ours, or another ref's) keeps the bot there."""
        try:
            existing = await self._store.get_link(guild_id)
        except StoreUnavailableError:
            existing = None
        if unstored.result is CallbackResult.REF_CONFLICT or (existing is not None and existing.active):
            return BotFate.STAYS
        if self._abandoned_installs is not None:
            self._abandoned_installs.callback_abandoned(guild_id)
        return BotFate.LEFT if await self._linker.guild_abandoned(guild_id) else BotFate.NOT_LEFT
