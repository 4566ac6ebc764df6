"""Links Discord's webhook events told of, and the events that go with no other change, on each engine."""

from __future__ import annotations

from dataclasses import replace

from store import EventType, LinkSource, Store
from tests.store.records import a_link


async def test_a_link_keeps_who_told_of_it_and_announces_it(store: Store) -> None:
    saved = await store.save_link(replace(a_link(7), source=LinkSource.DISCORD_WEBHOOK))
    assert saved.source is LinkSource.DISCORD_WEBHOOK
    stored = await store.get_link(7)
    assert stored is not None and stored.source is LinkSource.DISCORD_WEBHOOK
    [guild] = await store.list_linked_guilds()
    assert guild.link.source is LinkSource.DISCORD_WEBHOOK
    [event] = await store.list_events()
    assert event.type is EventType.GUILD_LINKED and event.data["source"] == "discord_webhook"


async def test_the_callback_storing_the_link_later_makes_it_a_callback_link(store: Store) -> None:
    await store.save_link(replace(a_link(7, ref=None), source=LinkSource.DISCORD_WEBHOOK))
    await store.save_link(a_link(7, ref="customer"))
    stored = await store.get_link(7)
    assert stored is not None and stored.source is LinkSource.CALLBACK and stored.ref == "customer"


async def test_a_link_is_a_callback_link_unless_said_otherwise(store: Store) -> None:
    await store.save_link(a_link(7))
    stored = await store.get_link(7)
    assert stored is not None and stored.source is LinkSource.CALLBACK
    [event] = await store.list_events()
    assert event.data["source"] == "callback"


async def test_an_announcement_is_one_event_and_changes_nothing_else(store: Store) -> None:
    # The shapes web/discord_events.py and web/uncalled_installs.py announce.
    deauthorized = {"user_id": "42"}
    refused = {
        "name": "Seven",
        "installed_by": {"id": "9", "username": "x"},
        "source": "discord_webhook",
        "bot_left": True,
    }
    await store.announce(EventType.APP_DEAUTHORIZED, 0, deauthorized)
    await store.announce(EventType.GUILD_INSTALL_REFUSED, 7, refused)
    events = await store.list_events()
    assert [(e.type, e.guild_id, e.data) for e in events] == [
        (EventType.APP_DEAUTHORIZED, 0, deauthorized),
        (EventType.GUILD_INSTALL_REFUSED, 7, refused),
    ]
    assert events[0].id < events[1].id
    assert await store.list_links() == []
