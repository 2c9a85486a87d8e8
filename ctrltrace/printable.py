"""Untrusted text made safe to print: what every output edge applies before a terminal sees it.

Annotations, finalizer names, the API server's error messages and the messages of exceptions
raised in user code reach ``explain``, ``doctor``, the TUI and the console logs. A control
character or an escape sequence among them could move the cursor, clear the screen, set the
terminal's title or hide text (bidirectional overrides), so each is printed as a visible escape
(``\\x1b``, ``\\u202e``) instead. Pure: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls (ESC, CSI, OSC, BEL, backspace, carriage return...), and
# the invisible bidirectional marks, embeddings, overrides and isolates that reorder what is
# shown ("Trojan Source").
_CONTROLS_BUT_NEWLINE = "\x00-\x09\x0b-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069"
_ANY = re.compile(f"[\n{_CONTROLS_BUT_NEWLINE}]")
_BUT_NEWLINES = re.compile(f"[{_CONTROLS_BUT_NEWLINE}]")
_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _escape(match: re.Match[str]) -> str:
    char = match.group()
    return _NAMED.get(char) or (
        f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}"
    )


def printable(text: str, *, newlines: bool = False) -> str:
    """``text`` with every control character and bidirectional mark written as an escape;
    with ``newlines``, line breaks stay (multi-line text such as a traceback or a report)."""
    return (_BUT_NEWLINES if newlines else _ANY).sub(_escape, text)
