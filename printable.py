"""Untrusted text made safe for one log line or one terminal row: control characters shown as escapes."""

# Top-level and owned by no room (like handoff.py): web/ puts request paths into the access log, main.py's
# status command puts guild names on the operator's terminal, and bot/ logs what Discord sends; bot/ and
# web/ may not import each other, and neither owns the command line's output.

from __future__ import annotations

import re

# C0 and C1 controls and DEL (newlines, ESC, the 8-bit CSI), the Unicode line and paragraph separators,
# and the bidirectional controls that reorder what a terminal shows. The backslash too, so that a name
# holding a literal "\n" reads differently from one holding a newline.
_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069]")
_NAMED = {"\\": "\\\\", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def printable(text: str) -> str:
    """`text` with every control character written as a Python-style escape (`\\n`, `\\x1b`, `\\u202e`)."""
    return _UNSAFE.sub(_escape, text)


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    if char in _NAMED:
        return _NAMED[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
