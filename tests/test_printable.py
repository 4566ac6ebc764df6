"""Escaping untrusted text before it reaches a log line or the operator's terminal."""

from __future__ import annotations

from printable import printable


def test_newlines_and_terminal_escapes_become_visible_escapes() -> None:
    assert printable("\x1b[31mred\nfake row\r\t") == "\\x1b[31mred\\nfake row\\r\\t"


def test_c1_controls_and_delete_are_escaped() -> None:
    # U+009B is an 8-bit CSI: some terminals act on it like ESC [.
    assert printable("a\x9b2Jb\x7f\x00") == "a\\x9b2Jb\\x7f\\x00"


def test_line_separators_and_bidi_overrides_are_escaped() -> None:
    assert printable("a\u2028b\u202eevil\u2066") == "a\\u2028b\\u202eevil\\u2066"


def test_backslashes_are_doubled_so_escapes_are_unambiguous() -> None:
    assert printable("a\\nb") == "a\\\\nb"
    assert printable("a\\nb") != printable("a\nb")


def test_ordinary_text_is_unchanged() -> None:
    name = "Café <b>Crew</b> 🎮 «ünïcode» 👨‍👩‍👧 spaces  and 'quotes'"
    assert printable(name) == name
