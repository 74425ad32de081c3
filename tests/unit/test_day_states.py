"""The store's own state says which days are complete: the pure classification of days from what
a store holds, the catch-up that redoes damaged days first, the lag they cause, and the totals
rules that refuse to trust totals which disagree with the documents."""

from __future__ import annotations

from datetime import date, timedelta

import pytest
from hypothesis import given
from hypothesis import strategies as st

from idb_stats import planning
from idb_stats.errors import SpanTooLong
from idb_stats.model import BLOCKS, HeldDays
from idb_stats.totals import Summary, Totals, listed_days, rebuilt, replace_day, with_day

START = date(2026, 11, 1)


def day(n: int) -> date:
    return START + timedelta(days=n)


def mark(recordsets: int) -> dict[str, object]:
    return {"recordsets": recordsets, "run_id": "r"}


def summary(count: int) -> Summary:
    return Summary(counts={block: (count, count) for block in BLOCKS}, countries={})


def test_documents_without_a_mark_are_damaged_not_missing() -> None:
    # The case: a search store's publish of the earliest day killed part-way.
    marks = {day(n): mark(3) for n in range(1, 5)}
    held = HeldDays(
        documents={day(n): 3 for n in range(0, 5)},
        listed={day(0): 1, **{day(n): 3 for n in range(1, 5)}},
        unfinished={day(0): "a publish by run x"},
    )
    states = planning.assess_days(marks, held)
    assert states.complete == {day(n) for n in range(1, 5)}
    assert states.damaged_days == [day(0)]
    reasons = states.damaged[0].reasons
    assert "a publish by run x did not finish" in reasons
    assert "the totals of 1 recordsets list it but it holds 3 documents" in reasons


@pytest.mark.parametrize(
    ("marked", "documents", "listed", "unfinished", "expected"),
    [
        (3, 3, 3, False, "complete"),
        (0, 0, 0, False, "complete"),  # a day emptied on purpose (--allow-empty)
        (None, 0, 0, False, "missing"),
        (None, 0, 0, True, "missing"),  # began, wrote nothing: missing, as if never begun
        (None, 3, 3, False, "no completion mark"),
        (3, 2, 3, False, "marked complete with 3 recordsets but holds 2 documents"),
        (3, 3, 2, False, "the totals of 2 recordsets list it but it holds 3 documents"),
        (None, 0, 2, False, "the totals of 2 recordsets count it but it holds no documents"),
        (None, 3, 0, True, "did not finish"),
    ],
)
def test_each_kind_of_disagreement_is_named(
    marked: int | None, documents: int, listed: int, unfinished: bool, expected: str
) -> None:
    held = HeldDays(
        {day(0): documents} if documents else {},
        {day(0): listed} if listed else {},
        {day(0): "a forget-day"} if unfinished else {},
    )
    states = planning.assess_days({day(0): mark(marked)} if marked is not None else {}, held)
    if expected == "complete":
        assert states.complete == {day(0)} and not states.damaged
    elif expected == "missing":
        assert not states.complete and not states.damaged
    else:
        assert not states.complete
        assert any(expected in reason for reason in states.damaged[0].reasons), states.damaged


@given(
    st.dictionaries(
        st.integers(0, 20),
        st.tuples(
            st.one_of(st.none(), st.integers(0, 4)),
            st.integers(0, 4),
            st.integers(0, 4),
            st.booleans(),
        ),
    )
)
def test_a_day_is_complete_exactly_when_mark_documents_and_totals_agree(
    days: dict[int, tuple[int | None, int, int, bool]],
) -> None:
    marks = {day(n): mark(m) for n, (m, _, _, _) in days.items() if m is not None}
    held = HeldDays(
        {day(n): d for n, (_, d, _, _) in days.items() if d},
        {day(n): listed for n, (_, _, listed, _) in days.items() if listed},
        # An unfinished mark replaces the completion mark (search stores keep one per day).
        {day(n): "a publish by run x" for n, (m, _, _, u) in days.items() if u and m is None},
    )
    states = planning.assess_days(marks, held)
    for n, (marked, documents, listed, unfinished) in days.items():
        agrees = marked == documents == listed and not (unfinished and marked is None)
        holds_nothing = marked is None and documents == 0 and listed == 0
        assert (day(n) in states.complete) == agrees
        assert (day(n) in states.damaged_days) == (not agrees and not holds_nothing)


def test_catch_up_redoes_damaged_days_first_even_before_the_first_complete_day() -> None:
    complete = {day(n) for n in range(1, 4)} | {day(6)}
    plan = planning.catch_up(complete, day(7), 31, damaged=[day(0), day(2)])
    assert plan.days == [day(0), day(2), day(4), day(5), day(7)]
    assert "2 damaged days" in plan.reason


def test_catch_up_after_a_first_run_that_died_part_way() -> None:
    # No complete day yet: the damaged day anchors the catch-up instead of "first run".
    plan = planning.catch_up(set(), day(3), 31, damaged=[day(1)])
    assert plan.days == [day(1), day(2), day(3)]
    assert planning.catch_up(set(), day(3), 31).days == [day(3)]


def test_damaged_days_count_in_the_span_limit() -> None:
    with pytest.raises(SpanTooLong, match="verify --repair"):
        planning.catch_up({day(10)}, day(11), 2, damaged=[day(0), day(5)])


def test_a_damaged_day_makes_the_store_lag_from_it() -> None:
    complete = {day(n) for n in range(1, 8)}
    assert planning.complete_through(complete, day(7)) == day(7)
    assert planning.complete_through(complete, day(7), [day(0)]) == day(-1)
    assert planning.complete_through(complete, day(7), [day(4)]) == day(3)


@given(st.lists(st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5)), max_size=4), max_size=8))
def test_listed_days_counts_each_day_as_a_plain_expansion_does(
    listings: list[list[tuple[int, int]]],
) -> None:
    ranges = [[(day(a), day(a + length)) for a, length in listing] for listing in listings]
    expected: dict[date, int] = {}
    for listing in ranges:
        for first, last in listing:
            for n in range((last - first).days + 1):
                expected[first + timedelta(days=n)] = expected.get(first + timedelta(days=n), 0) + 1
    assert listed_days(ranges) == expected


def test_totals_that_disagree_with_the_documents_are_not_trusted() -> None:
    listing_day_zero = with_day(with_day(Totals("rs"), day(0), summary(2)), day(1), summary(5))
    # The day's document is gone while the totals list it: what they counted for it is unknown.
    assert replace_day(listing_day_zero, day(0), None, summary(3)) is None
    # A document the totals hold without listing it (a tampered or lost listing).
    only_day_one = with_day(Totals("rs"), day(1), summary(5))
    assert replace_day(only_day_one, day(0), summary(2), summary(3)) is None
    # ...unless an interrupted publish took it out already: then it is not counted.
    swapped = replace_day(only_day_one, day(0), summary(2), summary(3), old_uncounted=True)
    assert swapped == rebuilt("rs", [(day(1), summary(5)), (day(0), summary(3))])
    # The trusted case is the exact swap.
    assert replace_day(listing_day_zero, day(0), summary(2), summary(3)) == rebuilt(
        "rs", [(day(0), summary(3)), (day(1), summary(5))]
    )
