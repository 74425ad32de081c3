"""The stream engine builds its lists a range of recordsets at a time (stream.recordset_ranges)."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from idb_stats.stream import recordset_ranges


@given(
    sizes=st.dictionaries(st.text(max_size=3), st.integers(1, 50), max_size=30).map(
        lambda d: sorted(d.items())
    ),
    cells=st.integers(1, 120),
)
def test_ranges_cover_every_recordset_once_in_order_within_the_bound(
    sizes: list[tuple[str, int]], cells: int
) -> None:
    ranges = list(recordset_ranges(sizes, cells))
    names = [rs for rs, _ in sizes]
    covered = []
    for first, last in ranges:
        inside = [(rs, n) for rs, n in sizes if first <= rs <= last]
        covered += [rs for rs, _ in inside]
        # a range holds at most `cells` cells, unless it is one recordset of more
        assert sum(n for _, n in inside) <= cells or len(inside) == 1
    assert covered == names
