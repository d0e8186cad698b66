"""Text from logs, file names and scripts made safe for a terminal.

A metric name, a CSV header, a file name or a module name comes from whoever wrote the log; printed
raw, its control characters act on the terminal (``ESC ] 0 ;`` sets the window title, ``ESC [ 2 J``
clears the screen, a carriage return or backspaces overwrite what came before). :func:`safe` shows
each such character as a visible escape (``\\x1b``) instead. Rich escapes only its own markup, so
every user-derived string goes through here before it reaches the console; JSON output does not
(``json`` escapes control characters itself, and a script reading it wants the exact name).
"""
from __future__ import annotations

import re

# C0 controls but newline, DEL, C1 controls (0x9b is a one-byte CSI), and the Unicode format
# characters that reorder or hide text (bidi overrides and isolates, line and paragraph separators)
_CONTROL = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")
_CONTROL_NL = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u202a-\u202e\u2066-\u2069]")


def _visible(m: re.Match[str]) -> str:
    c = ord(m.group())
    return f"\\x{c:02x}" if c < 0x100 else f"\\u{c:04x}"


def safe(text: object, *, newlines: bool = True) -> str:
    """``str(text)`` with every control character shown as an escape (``\\x1b``, ``\\x07``, ``\\u202e``).

    ``newlines=True`` keeps ``\\n`` (a multi-line message); ``newlines=False`` shows it as ``\\x0a`` too,
    for a line that must stay one line.
    """
    s = str(text)
    return (_CONTROL if newlines else _CONTROL_NL).sub(_visible, s)


def safe_markup(text: object, *, newlines: bool = True) -> str:
    """:func:`safe`, then rich's markup escaped: for a string interpolated into console markup."""
    from rich.markup import escape

    return escape(safe(text, newlines=newlines))
