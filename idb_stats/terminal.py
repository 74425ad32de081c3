"""The terminal's side of output: ids from the internet made safe to show (pure), and writing a
command's output so a full disk or a closed pipe is an error with its exit code.

Recordset ids, record ids, query terms and geocodes hold whatever a client sent (anything but NUL).
Printed raw, an ESC sequence recolours or rewrites the operator's screen, a newline or U+2028 forges
an output line, a bidi override reverses what follows. Human output shows such characters escaped
(as Python writes them in a string literal); JSON, CSV and HTML output keep ids exact, escaped by
their own syntax.
"""

from __future__ import annotations

import contextlib
import errno
import select
import sys
import unicodedata
from collections.abc import Iterable, Iterator
from datetime import date
from typing import IO, Any

from .errors import OutputClosed, OutputUnwritable

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


def stdout_closed() -> bool:
    """Standard output is a pipe with no reader left (Linux reports POLLERR on its write end)."""
    try:
        poller = select.poll()
        poller.register(sys.__stdout__.fileno() if sys.__stdout__ else 1, select.POLLOUT)
        return any(event & select.POLLERR for _, event in poller.poll(0))
    except (OSError, ValueError):
        return False


def broken_pipe(exc: BaseException) -> OutputClosed | None:
    """An EPIPE from writing standard output as OutputClosed; None for any other error (a socket
    the store closed raises EPIPE too, and that is not a reader going away)."""
    if isinstance(exc, OSError) and exc.errno == errno.EPIPE and stdout_closed():
        return OutputClosed("standard output closed by its reader")
    return None


@contextlib.contextmanager
def writing(output: IO[Any]) -> Iterator[IO[Any]]:
    """Write to a command's output and flush it, so a full disk (or another write error) is one
    OutputUnwritable naming the output, not a traceback when the file is closed."""
    try:
        yield output
        output.flush()
    except OSError as exc:
        if exc.errno == errno.EPIPE:
            raise
        name = getattr(output, "name", "the output")
        raise OutputUnwritable(
            f"cannot write {'standard output' if name in ('<stdout>', '-') else name}: "
            f"{exc.strerror or exc}; free space or write elsewhere (-o FILE)"
        ) from None


def plural(count: int, noun: str) -> str:
    """"1 day", "2,000 days": a count with its noun, as every command's text output says it."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def dates_text(days: Iterable[date]) -> str:
    return ", ".join(d.isoformat() for d in days)
