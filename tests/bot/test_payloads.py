"""Member records from Discord's payloads."""

from __future__ import annotations

from bot.payloads import member_from_payload


def test_a_nul_character_in_any_text_is_read_as_the_replacement_character() -> None:
    payload = {
        "user": {"id": "5", "username": "a\x00b", "global_name": "\x00", "avatar": "f\x00", "bot": True},
        "nick": "nul\x00nick\x00",
        "roles": ["1", "2"],
        "joined_at": "2026-01-01T00:00:00+00:00",
    }
    member = member_from_payload(payload)
    assert (member.username, member.global_name, member.avatar) == ("a\ufffdb", "\ufffd", "f\ufffd")
    assert member.nick == "nul\ufffdnick\ufffd"
    assert (member.user_id, member.bot, member.roles) == (5, True, (1, 2))


def test_text_without_nul_and_absent_fields_are_read_as_they_came() -> None:
    member = member_from_payload({"user": {"id": "6", "username": "plain é"}})
    assert (member.username, member.global_name, member.nick, member.avatar) == ("plain é", None, None, None)
    assert (member.bot, member.roles, member.joined_at) == (False, (), None)
