"""Names in what people read: fallback to ids, CSV that keeps any name, publisher spans."""

from __future__ import annotations

import csv
import io
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from idb_stats import cohort, publishers
from idb_stats.names import Names, cut

NAME = st.text(st.characters(codec="utf-8"), max_size=20)


@given(st.dictionaries(st.sampled_from(["a", "b", "c"]), NAME))
def test_show_csv_keeps_every_name_and_falls_back_to_the_id(names: dict[str, str]) -> None:
    series = [
        {"period": date(2026, 1, 1), "recordset_id": rs, **dict.fromkeys(cohort.FIELDS, 1)} for rs in "abc"
    ]
    shown = cohort.Cohort(["a", "b", "c"], None, None, "month", False, series, {}, [], names)
    rows = list(csv.DictReader(io.StringIO(cohort.as_csv(shown), newline="")))
    assert [r["recordset_name"] for r in rows] == [names.get(rs, rs) for rs in "abc"]


def test_names_fall_back_to_ids_and_list_members() -> None:
    names = Names({"r1": "One"}, {"p1": "Pub"}, {"r1": "p1", "r2": "p1", "r3": "p2"}, read=True)
    assert (names.recordset("r1"), names.recordset("r9")) == ("One", "r9")
    assert (names.publisher("p1"), names.publisher("p2")) == ("Pub", "p2")
    assert names.recordsets_of("p1") == ["r1", "r2"] and names.publisher_ids() == ["p1", "p2"]


@given(st.text(max_size=50), st.integers(20, 40))
def test_query_text_is_cut_with_an_ellipsis(text: str, length: int) -> None:
    shown = cut(text, length)
    assert len(shown) <= length
    assert shown == text or (shown.endswith("…") and text.startswith(shown[:-1]))


@given(st.dates(date(2001, 1, 1), date(2099, 12, 31)), st.integers(0, 400))
def test_previous_period_is_as_long_and_just_before(last: date, days: int) -> None:
    first = date.fromordinal(max(last.toordinal() - days, date(2000, 1, 1).toordinal()))
    previous, ytd = publishers.spans(first, last)
    assert (previous.last - previous.first).days == (last - first).days
    assert previous.last.toordinal() == first.toordinal() - 1
    assert (ytd.first, ytd.last) == (date(last.year, 1, 1), last)
    assert publishers.change(150, 100) == "+50%" and publishers.change(0, 0) == "-"
    assert publishers.change(5, 0) == "new"
