"""The sandbox's seeded world: the application, the signed-in user, guilds and their members."""

from __future__ import annotations

import bisect
import hashlib
import logging
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass, field, replace

log = logging.getLogger(__name__)

DISCORD_EPOCH_MS = 1_420_070_400_000
# Fixed so that a seed always yields the same world, whatever the wall clock says.
WORLD_ORIGIN_MS = 1_609_459_200_000  # 2021-01-01T00:00:00Z

ADMINISTRATOR = 1 << 3
MANAGE_GUILD = 1 << 5
MANAGE_ROLES = 1 << 28
ALL_PERMISSIONS = (1 << 51) - 1
EVERYONE_PERMISSIONS = 1_071_698_660_929

GUILD_NAMES = [
    "Café ☕ Lounge",
    "<b>Bold</b> & \"Quoted\" 'Guild'",
    "日本語サーバー 🎌",
    "The Remarkably Long Guild Name That Keeps Going Because Some Admins Love Long Names, Truly 🐢",
    "Plain Guild",
    "Ñandú Nest 🦤",
    "<script>alert(1)</script> Testers",
    "Ελληνικά & Кириллица",
]
PLAIN_GUILD_NAME = "Just Visiting 👀"
FIRST_NAMES = ["amelia", "bjorn", "chloe", "dmitri", "emeka", "fatima", "giulia", "hiro", "ines", "jamal"]
GLOBAL_NAMES: list[str | None] = [
    None,
    "Zoë 🌸",
    "<b>not bold</b>",
    "\"Quote\" & 'Apostrophe'",
    "Łukasz Żółć",
    "李小龍",
    "🎮🎮🎮",
    "A Very Long Display Name Of 32 C",
    "Ñoño",
    None,
]
NICKNAMES = ["the <i>boss</i>", "🦊 fox", "Renée", 'O\'Brien "OB"', "x" * 32, "مرحبا", "nick & name"]
BOT_WORDS = ["helper", "music", "mod", "stats", "meme"]


def snowflake(ms: int, increment: int = 0) -> int:
    """A Discord snowflake for a Unix time in milliseconds."""
    return ((ms - DISCORD_EPOCH_MS) << 22) | (increment & 0x3FFFFF)


def snowflake_ms(value: int) -> int:
    """The Unix time in milliseconds a snowflake was made at."""
    return (value >> 22) + DISCORD_EPOCH_MS


def iso_time(ms: int) -> str:
    """Discord's timestamp format: ISO 8601 with microseconds and an explicit UTC offset."""
    seconds, millis = divmod(ms, 1000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{millis:03d}000+00:00"


def _mix(*parts: int) -> int:
    """A cheap deterministic 64-bit hash (splitmix64 over the parts)."""
    x = 0x9E3779B97F4A7C15
    for part in parts:
        x = (x ^ (part & 0xFFFFFFFFFFFFFFFF)) * 0xBF58476D1CE4E5B9 & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 31
        x = x * 0x94D049BB133111EB & 0xFFFFFFFFFFFFFFFF
        x ^= x >> 29
    return x


@dataclass
class User:
    """A Discord user."""

    id: int
    username: str
    global_name: str | None = None
    avatar: str | None = None
    bot: bool = False
    discriminator: str = "0"


@dataclass
class Member:
    """A guild member: a user plus the guild-specific fields."""

    user: User
    joined_at: str
    nick: str | None = None
    roles: tuple[int, ...] = ()
    avatar: str | None = None
    premium_since: str | None = None


@dataclass
class Role:
    """A guild role."""

    id: int
    name: str
    permissions: int
    position: int
    color: int = 0
    hoist: bool = False
    managed: bool = False
    bot_id: int | None = None


@dataclass
class GuildInfo:
    """A summary of a guild, as tests and the CLI want it."""

    id: int
    name: str
    member_count: int


@dataclass
class Guild:
    """A guild: generated members by index, with an overlay of added, changed and removed members."""

    index: int
    id: int
    name: str
    owner_id: int
    roles: list[Role]
    member_ts: int  # snowflake timestamp part of the member with index 0
    member_low_bits: int
    generated: int  # how many members are generated from their index
    seed: int
    unavailable: bool = False
    added: dict[int, Member] = field(default_factory=dict)
    added_ids: list[int] = field(default_factory=list)  # sorted keys of `added`
    changed: dict[int, Member] = field(default_factory=dict)
    removed: set[int] = field(default_factory=set)

    @property
    def member_count(self) -> int:
        """Members now in the guild."""
        removed_generated = sum(1 for uid in self.removed if self._index_of(uid) is not None)
        return self.generated - removed_generated + len(self.added)

    def info(self) -> GuildInfo:
        """This guild's summary."""
        return GuildInfo(id=self.id, name=self.name, member_count=self.member_count)

    def _generated_id(self, index: int) -> int:
        return ((self.member_ts + index) << 22) | self.member_low_bits

    def _index_of(self, user_id: int) -> int | None:
        if user_id & 0x3FFFFF != self.member_low_bits:
            return None
        index = (user_id >> 22) - self.member_ts
        return index if 0 <= index < self.generated else None

    def _generate(self, index: int) -> Member:
        h = _mix(self.seed, self.index, index)
        user_id = self._generated_id(index)
        is_bot = h % 29 == 7
        if is_bot:
            word = BOT_WORDS[(h >> 8) % len(BOT_WORDS)]
            user = User(
                id=user_id,
                username=f"{word}bot{index}",
                global_name=None,
                bot=True,
                discriminator=f"{(h >> 12) % 9000 + 1000:04d}",
                avatar=f"{h:016x}{h >> 3:016x}"[:32] if h & 4 else None,
            )
        else:
            first = FIRST_NAMES[(h >> 8) % len(FIRST_NAMES)]
            sep = "_."[(h >> 16) & 1]
            user = User(
                id=user_id,
                username=f"{first}{sep}{index}",
                global_name=GLOBAL_NAMES[(h >> 20) % len(GLOBAL_NAMES)],
                avatar=f"{h:016x}{h >> 3:016x}"[:32] if h & 2 else None,
            )
        nick = NICKNAMES[(h >> 24) % len(NICKNAMES)] if (h >> 28) % 5 == 0 else None
        # Roles after @everyone (index 0) and the admin roles (1, 2) are the ones ordinary members get.
        ordinary = self.roles[3:]
        roles = tuple(r.id for bit, r in enumerate(ordinary) if (h >> (32 + bit)) & 1 and not r.managed)
        joined_ms = snowflake_ms(user_id) + 86_400_000 + (h % 1_000_000)
        premium = iso_time(joined_ms + 3_600_000) if h % 50 == 3 else None
        return Member(user=user, joined_at=iso_time(joined_ms), nick=nick, roles=roles, premium_since=premium)

    def get_member(self, user_id: int) -> Member | None:
        """The member with this user id, or None."""
        if user_id in self.removed:
            return None
        if user_id in self.changed:
            return self.changed[user_id]
        if user_id in self.added:
            return self.added[user_id]
        index = self._index_of(user_id)
        return None if index is None else self._generate(index)

    def iter_members(self, after: int = 0) -> Iterator[Member]:
        """Members with user id greater than `after`, ordered by user id."""
        t = after >> 22
        # The generated id with timestamp t is either just above `after` or the next one is.
        start = t - self.member_ts + (0 if (t << 22) | self.member_low_bits > after else 1)
        index = min(max(start, 0), self.generated)
        pos = bisect.bisect_right(self.added_ids, after)
        added_ids = self.added_ids
        removed = self.removed
        changed = self.changed
        while True:
            next_generated = self._generated_id(index) if index < self.generated else None
            next_added = added_ids[pos] if pos < len(added_ids) else None
            if next_generated is None and next_added is None:
                return
            if next_added is None or (next_generated is not None and next_generated < next_added):
                assert next_generated is not None
                uid = next_generated
                index += 1
                if uid in removed:
                    continue
                yield changed[uid] if uid in changed else self._generate(index - 1)
            else:
                pos += 1
                if next_added in removed:
                    continue
                yield changed.get(next_added) or self.added[next_added]

    def add(self, member: Member) -> None:
        """Add a member (or re-add one that was removed)."""
        uid = member.user.id
        self.removed.discard(uid)
        self.changed.pop(uid, None)
        if self._index_of(uid) is not None:
            self.changed[uid] = member
            return
        if uid not in self.added:
            bisect.insort(self.added_ids, uid)
        self.added[uid] = member

    def replace(self, member: Member) -> None:
        """Store a changed version of an existing member."""
        uid = member.user.id
        if uid in self.added:
            self.added[uid] = member
        else:
            self.changed[uid] = member

    def remove(self, user_id: int) -> None:
        """Remove a member."""
        self.changed.pop(user_id, None)
        if user_id in self.added:
            del self.added[user_id]
            self.added_ids.remove(user_id)
        else:
            self.removed.add(user_id)

    def role(self, role_id: int) -> Role | None:
        """The role with this id, or None."""
        return next((r for r in self.roles if r.id == role_id), None)

    def top_role_position(self, member: Member) -> int:
        """The position of the member's highest role (@everyone's 0 if it has none)."""
        held = set(member.roles)
        return max((r.position for r in self.roles if r.id in held), default=0)

    def move_role(self, role_id: int, index: int) -> list[Role]:
        """Put a role at `index` of the order (1 is just above @everyone); the roles whose position changed.

        Positions stay Discord's: @everyone 0, the others 1..n-1 without gaps, so moving one shifts its neighbours.
        """
        moving = self.role(role_id)
        if moving is None or moving.id == self.id:
            raise KeyError(role_id)
        order = sorted((r for r in self.roles if r.id not in (role_id, self.id)), key=lambda r: r.position)
        order.insert(min(max(index, 1), len(order) + 1) - 1, moving)
        changed = []
        for position, role in enumerate(order, start=1):
            if role.position != position:
                role.position = position
                changed.append(role)
        return changed

    def permissions_of(self, member: Member) -> int:
        """The member's guild-level permissions."""
        if member.user.id == self.owner_id:
            return ALL_PERMISSIONS
        perms = self.roles[0].permissions
        by_id = {r.id: r for r in self.roles}
        for rid in member.roles:
            if rid in by_id:
                perms |= by_id[rid].permissions
        return ALL_PERMISSIONS if perms & ADMINISTRATOR else perms


class World:
    """Everything the sandbox knows, generated from a seed."""

    def __init__(self, *, seed: int, guilds: int, members: int, app_name: str = "Guildlink Sandbox") -> None:
        rng = random.Random(seed)
        self.seed = seed
        self.application_name = app_name
        self.application_id = snowflake(WORLD_ORIGIN_MS - 300 * 86_400_000 + rng.randrange(86_400_000))
        self.client_secret = hashlib.sha256(f"secret:{seed}".encode()).hexdigest()[:32]
        self.verify_key = hashlib.sha256(f"verify:{seed}".encode()).hexdigest()
        admin_id = snowflake(WORLD_ORIGIN_MS - 900 * 86_400_000 + rng.randrange(86_400_000))
        self.admin = User(id=admin_id, username="sandbox_admin", global_name="Sandbox Admin ✨")
        self.bot_user = User(
            id=self.application_id, username=app_name, bot=True, discriminator=f"{rng.randrange(1000, 9999)}"
        )
        self._added_counter = 0
        self.bot_guilds: set[int] = set()
        self.guilds: dict[int, Guild] = {}
        ms = WORLD_ORIGIN_MS
        for index in range(guilds + 1):
            ms += rng.randrange(1, 5 * 86_400_000)
            plain = index == guilds
            name = PLAIN_GUILD_NAME if plain else GUILD_NAMES[index % len(GUILD_NAMES)]
            if not plain and index >= len(GUILD_NAMES):
                name = f"{name} #{index}"
            self._make_guild(index, ms, name, plain=plain, members=members)
        log.debug("world.built seed=%s guilds=%s members=%s", seed, guilds, members)

    def _make_guild(self, index: int, ms: int, name: str, *, plain: bool, members: int) -> None:
        gid = snowflake(ms)
        roles = [
            Role(id=gid, name="@everyone", permissions=EVERYONE_PERMISSIONS, position=0),
            Role(id=snowflake(ms + 1), name="Admin", permissions=ADMINISTRATOR, position=5, color=0xE74C3C),
            Role(
                id=snowflake(ms + 2),
                name="Server Manager",
                permissions=MANAGE_GUILD | EVERYONE_PERMISSIONS,
                position=4,
                hoist=True,
            ),
            Role(
                id=snowflake(ms + 3), name='<b>Bold</b> & "Quoted"', permissions=0, position=3, color=0x3498DB
            ),
            Role(id=snowflake(ms + 4), name="🎨 Artists", permissions=0, position=2, color=0x9B59B6),
            Role(id=snowflake(ms + 5), name="Members", permissions=0, position=1),
        ]
        member_ts = (ms - DISCORD_EPOCH_MS) + 3_600_000
        guild = Guild(
            index=index,
            id=gid,
            name=name,
            owner_id=0,
            roles=roles,
            member_ts=member_ts,
            member_low_bits=(index % 4000) + 1,
            generated=max(members - 1, 0),  # the signed-in user is one of `members`
            seed=self.seed,
        )
        owned = not plain and index % 2 == 0
        if plain or not owned:
            # A generated member owns it; an empty guild still needs an owner, so fall back to the admin.
            guild.owner_id = guild._generated_id(0) if guild.generated else self.admin.id
        else:
            guild.owner_id = self.admin.id
        if plain:
            admin_roles: tuple[int, ...] = (roles[5].id,)
        elif owned:
            admin_roles = ()
        else:
            admin_roles = (roles[1].id if index % 4 == 1 else roles[2].id,)
        guild.add(Member(user=self.admin, joined_at=iso_time(ms + 60_000), roles=admin_roles))
        self.guilds[gid] = guild

    def new_user_id(self) -> int:
        """A fresh user id, later than every generated one."""
        self._added_counter += 1
        return snowflake(int(time.time() * 1000), 0x200000 | self._added_counter)

    def guild(self, guild_id: int) -> Guild:
        """The guild with this id (KeyError if unknown)."""
        return self.guilds[guild_id]

    def managed_guilds(self) -> list[Guild]:
        """Guilds where the signed-in user may add bots (owner, Administrator or Manage Server)."""
        result = []
        for guild in self.guilds.values():
            me = guild.get_member(self.admin.id)
            if me is not None and guild.permissions_of(me) & (MANAGE_GUILD | ADMINISTRATOR):
                result.append(guild)
        return result

    def admin_guilds(self) -> list[Guild]:
        """Every guild the signed-in user is a member of."""
        return [g for g in self.guilds.values() if g.get_member(self.admin.id) is not None]

    def bot_join(self, guild_id: int, permissions: int = 0) -> bool:
        """Put the bot in a guild; False if it already was there."""
        guild = self.guilds[guild_id]
        if guild_id in self.bot_guilds:
            return False
        self.bot_guilds.add(guild_id)
        role_id = snowflake(int(time.time() * 1000), 0x100000 | guild.index)
        guild.roles.append(
            Role(
                id=role_id,
                name=self.application_name,
                permissions=permissions,
                position=len(guild.roles),
                managed=True,
                bot_id=self.bot_user.id,
            )
        )
        now = int(time.time() * 1000)
        guild.add(Member(user=replace(self.bot_user), joined_at=iso_time(now), roles=(role_id,)))
        return True

    def bot_leave(self, guild_id: int) -> bool:
        """Take the bot out of a guild; False if it was not there."""
        if guild_id not in self.bot_guilds:
            return False
        self.bot_guilds.discard(guild_id)
        guild = self.guilds[guild_id]
        guild.remove(self.bot_user.id)
        guild.roles = [r for r in guild.roles if r.bot_id != self.bot_user.id]
        return True
