"""Ids sent by clients reach the operator's terminal escaped: `show`'s table and `changes`."""

from __future__ import annotations

import ast
import unicodedata
from datetime import date

from hypothesis import given
from hypothesis import strategies as st

from idb_stats import changes, cohort
from idb_stats.model import COUNT_FIELDS
from idb_stats.terminal import printable

# Characters a terminal acts on or a reader is fooled by, mixed into ordinary text.
HOSTILE = ["\x1b[2J", "\x1b]0;owned\x07", "\r", "\n", "\t", "\x00", "\x7f", "\x9b", "\u2028", "\u2029"]
HOSTILE += ["\u202e", "\u2066", "\u200b", "\ufeff", "\ud800", "\\x1b", "\\"]
ids = st.lists(
    st.one_of(st.sampled_from(HOSTILE), st.text(min_size=1, max_size=5)), min_size=1, max_size=6
).map("".join)


def raw_unsafe(text: str) -> list[str]:
    """Characters of the output a terminal would act on: controls except the line ends we
    print ourselves, format characters, separators, surrogates, unassigned code points."""
    return [c for c in text if c != "\n" and unicodedata.category(c) in ("Cc", "Cf", "Zl", "Zp", "Cs", "Cn")]


@given(st.text())
def test_printable_is_a_string_literal_of_the_text(text: str) -> None:
    shown = printable(text)
    assert not raw_unsafe(shown.replace("\n", "\x00"))  # no raw newline either
    assert ast.literal_eval('"' + shown.replace('"', '\\"') + '"') == text  # exact and unambiguous


@given(st.lists(ids, min_size=1, max_size=4, unique=True), st.lists(ids, max_size=3, unique=True))
def test_show_table_has_one_line_per_row_and_no_raw_control_character(
    recordsets: list[str], countries: list[str]
) -> None:
    series = [
        {"period": date(2021, 6, 1), "recordset_id": rs} | {f"{rt}.{ty}.{f}": 1 for rt, ty, f in COUNT_FIELDS}
        for rs in recordsets
    ]
    table = cohort.as_table(
        cohort.Cohort(
            recordsets,
            None,
            None,
            "day",
            False,
            series,
            {name: len(recordsets) for name in cohort.FIELDS},
            [{"country": c, "hits": 1} for c in countries],
        )
    )
    # header, a row per recordset, total; then a blank line, header and a row per country
    assert table.count("\n") == len(recordsets) + 2 + (len(countries) + 2 if countries else 0)
    assert not raw_unsafe(table)
    for rs in recordsets:
        assert printable(rs) in table


@given(ids, st.sampled_from(["rerun", "late_rows", "import"]))
def test_a_change_is_one_line_without_raw_control_characters(recordset_id: str, reason: str) -> None:
    record = {
        "changed_at": "2021-06-03T10:00:00+00:00",
        "harvest_date": "2021-06-02",
        "recordset_id": recordset_id,
        "reason": reason,
        "run_id": "r1",
        "blocks": {"records.view": {"old": {"count": 1, "total": 1}, "new": {"count": 2, "total": 2}}},
    }
    line = changes.as_text(record)
    assert "\n" not in line and not raw_unsafe(line)
    assert f"2021-06-02 {printable(recordset_id)} {reason} run r1: records.view count 1->2 total 1->2" in line
