"""Compact JSON text of documents, fast.

orjson writes a wide day's 1,600 documents (169 MB) in 0.28 s where json.dumps takes 1.7 s, the
same text byte for byte (issue 18). It refuses integers beyond 64 bits, which exact hit sums can
reach, and anything else it does not know; those values go through json, as they always did.
"""

from __future__ import annotations

import json
from typing import Any

import orjson


def compact(value: Any) -> str:
    """JSON text without spaces, non-ASCII characters as they are (json.dumps with
    separators=(",", ":") and ensure_ascii=False)."""
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # orjson.JSONEncodeError: an int beyond 64 bits, a lone surrogate, ...
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False)
