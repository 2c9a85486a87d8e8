"""Untrusted text escaped before it reaches a terminal: the function every output edge uses,
and doctor's report, whose details quote the API server."""

from __future__ import annotations

import pytest

from ctrltrace.doctor import Check, Report, Status
from ctrltrace.printable import printable


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("\x1b]0;pwned\x07", "\\x1b]0;pwned\\x07"),  # set the terminal's title
        ("\x1b[2J\x1b[H", "\\x1b[2J\\x1b[H"),  # clear the screen, cursor home
        ("ok\rforged", "ok\\rforged"),  # overwrite the line
        ("a\nb\tc", "a\\nb\\tc"),
        ("\x9b31m\x7f\x00", "\\x9b31m\\x7f\\x00"),  # C1 CSI, DEL, NUL
        ("\u202eevil\u2066", "\\u202eevil\\u2066"),  # bidirectional override, isolate
        ("plain ü 日本 ✓", "plain ü 日本 ✓"),
    ],
)
def test_controls_and_bidi_marks_are_printed_as_escapes(text: str, shown: str) -> None:
    assert printable(text) == shown


def test_multi_line_text_keeps_its_lines_only() -> None:
    assert printable("Traceback\n  \x1b[31mboom\r\n", newlines=True) == (
        "Traceback\n  \\x1b[31mboom\\r\n"
    )


def test_doctor_prints_an_api_servers_words_escaped() -> None:
    check = Check(Status.FAIL, "Access", "list widgets", detail="denied \x1b]0;pwned\x07")
    text = Report("app:mgr", "https://127.0.0.1:6443", "v1.36.3", "alice", (check,)).render()
    assert "denied \\x1b]0;pwned\\x07" in text and "\x1b" not in text
