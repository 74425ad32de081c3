"""verify's comparison of two JSON values, exact (moved from test_verify)."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from idb_stats import verify

JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False).filter(lambda x: str(x) != "-0.0")
    | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=4), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(JSON, JSON)
def test_diff_is_empty_exactly_for_equal_json(a: Any, b: Any) -> None:
    assert list(verify.diff(a, a)) == []
    found = list(verify.diff(a, b))
    # Exact: equal values of different JSON types (1 and 1.0, 0 and false) differ too.
    assert (found == []) == (json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True))
    for _, expected, actual in found:
        assert type(expected) is not type(actual) or expected != actual

