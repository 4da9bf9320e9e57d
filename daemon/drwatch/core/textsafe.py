"""Text from outside drwatch (file names, object keys, messages that quote them) made safe for a terminal.

A backup file may be named by anyone who can write to production: a name with ``ESC [ 2 J`` would clear the
operator's screen when ``drwatch check`` prints it, one with a newline would forge a row of the table, and
one with U+202E (right-to-left override) would show ``gpj.exe`` as ``exe.jpg``. Every human output
(tables, warnings, the progress line) passes such text through :func:`escape`, which writes the characters
that steer a terminal or a line as escapes:

- C0 controls, DEL and C1 controls: ``\\n``, ``\\r``, ``\\t``, else ``\\xHH`` (ESC is ``\\x1b``);
- Unicode bidirectional controls (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069) and the line and
  paragraph separators (U+2028, U+2029): ``\\uHHHH``;
- lone surrogates (the bytes of a file name that is not valid UTF-8, as Python's ``surrogateescape``
  decodes them): ``\\uDCHH`` rather than a ``UnicodeEncodeError`` when printed.

Everything else, backslashes included, is printed as it is. JSON output carries the exact strings (JSON
escapes control characters itself); only text meant for eyes is escaped.
"""

from __future__ import annotations

import re

_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u061c\u200e\u200f\u2028-\u202e\u2066-\u2069\ud800-\udfff]")
_SHORT = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _replace(match: re.Match[str]) -> str:
    char = match.group()
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def escape(text: object) -> str:
    """``str(text)`` with terminal- and line-steering characters escaped (idempotent: escaping twice changes
    nothing more)."""
    return _UNSAFE.sub(_replace, str(text))
