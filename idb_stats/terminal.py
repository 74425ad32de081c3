"""Text from the internet made safe for a terminal: ids shown in human output (pure).

Recordset ids, record ids, query terms and geocodes hold whatever a client sent (anything but NUL).
Printed raw, an ESC sequence recolours or rewrites the operator's screen, a newline or U+2028 forges
an output line, a bidi override reverses what follows. Human output shows such characters escaped
(as Python writes them in a string literal); JSON, CSV and HTML output keep ids exact, escaped by
their own syntax.
"""

from __future__ import annotations

import unicodedata

# Control and format characters (bidi overrides, zero-width marks), line and paragraph
# separators, surrogates (not even encodable), unassigned code points.
_UNSAFE_CATEGORIES = frozenset({"Cc", "Cf", "Zl", "Zp", "Cs", "Cn"})
_SHORT = {"\t": "\\t", "\n": "\\n", "\r": "\\r", "\\": "\\\\"}


def _escaped(char: str) -> str:
    if char in _SHORT:
        return _SHORT[char]
    code = ord(char)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}" if code < 0x10000 else f"\\U{code:08x}"


def printable(text: str) -> str:
    """text with every unsafe character (and the backslash, so an escape is never ambiguous)
    written as its escape: \\x1b, \\n, \\u202e; anything else as it is."""
    if text.isprintable() and "\\" not in text:  # the common case, at C speed
        return text
    return "".join(
        _escaped(c) if c == "\\" or unicodedata.category(c) in _UNSAFE_CATEGORIES else c for c in text
    )
