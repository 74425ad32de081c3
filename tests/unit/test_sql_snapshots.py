"""The SQL the project sends, pinned: every statement built from the model (tests/sql_statements.py),
rendered without a connection (sqltext.render, proven equal to psycopg2's quoting by
tests/test_sql_quoting.py) and compared with tests/unit/snapshots/sql.txt.

A deliberate change to a statement: rewrite the snapshot and review its diff with the change,
    IDB_STATS_UPDATE_SNAPSHOTS=1 .venv/bin/python -m pytest tests/unit/test_sql_snapshots.py
"""

from __future__ import annotations

import difflib
import os
import re
from pathlib import Path

import pytest
from psycopg2 import sql
from sql_statements import SCHEMA, statements

from idb_stats import source
from idb_stats.model import BLOCKS, EVENT_TYPES, PAGE_TYPES, RECORD_TYPES, SKIP_REASONS, UNQUERIED_TYPES
from idb_stats.sqltext import render
from idb_stats.stores import postgres

SNAPSHOT = Path(__file__).parent / "snapshots" / "sql.txt"
HEADER = "-- statement: "


def rendered() -> str:
    return "".join(
        f"{HEADER}{name}\n{render(statement).strip()}\n\n" for name, statement in statements().items()
    )


def test_the_generated_sql_is_the_snapshot() -> None:
    text = rendered()
    if os.environ.get("IDB_STATS_UPDATE_SNAPSHOTS"):
        SNAPSHOT.write_text(text)
    pinned = SNAPSHOT.read_text()
    if text != pinned:
        diff = "".join(
            difflib.unified_diff(
                pinned.splitlines(True), text.splitlines(True), str(SNAPSHOT), "generated", n=2
            )
        )
        pytest.fail(
            "the generated SQL differs from the snapshot; if intended, rerun with "
            f"IDB_STATS_UPDATE_SNAPSHOTS=1 and commit the new snapshot:\n{diff[:6000]}"
        )


def test_every_block_is_coded_and_named_in_the_day_statements() -> None:
    day = source.day_sql(sql.Identifier("stats"), sql.Identifier("queries"), source.ACCEPTED_ROWS["all"])
    for statement in (day.items, day.geocodes, day.queries):
        text = render(statement)
        for code, (rt, ty) in enumerate(BLOCKS):
            assert f"WHEN s.record_type = '{rt}' AND s.type = '{ty}' THEN {code} " in text
        names = re.search(r"\(ARRAY\[(.*?)\]\)\[block \+ 1\] AS record_type, \(ARRAY\[(.*?)\]\)", text)
        assert names is not None
        record_types, types = (re.findall(r"'(\w+)'", group) for group in names.groups())
        assert list(zip(record_types, types, strict=True)) == list(BLOCKS)


def test_every_block_is_a_named_figure_of_the_store() -> None:
    series = render(postgres.series_sql(SCHEMA, postgres.FIGURE_NAMES, False, False))
    read_columns = render(postgres.read_columns_sql(SCHEMA))
    for rt, ty in BLOCKS:
        for figure in ("count", "total"):
            name = f"{rt}.{ty}.{figure}"
            assert f'AS "{name}"' in series
            assert f"(summary->'{rt}'->'{ty}'->>'{figure}')" in read_columns


def test_the_skip_reasons_are_the_models_in_the_rules_order() -> None:
    conditions = source.skip_conditions(sql.SQL("o"), sql.SQL("g"))
    assert tuple(conditions) == SKIP_REASONS
    text = render(source.SKIP_REASON_SQL)
    assert re.findall(r"THEN '(\w+)'", text) == list(SKIP_REASONS)
    # The vocabulary the rules accept, each word once in the CASE's lists.
    for word in (*RECORD_TYPES, *PAGE_TYPES, *EVENT_TYPES):
        assert f"'{word}'" in text


def test_a_view_has_no_query_breakdown_in_the_query_statements() -> None:
    day = source.day_sql(sql.Identifier("stats"), sql.Identifier("queries"), source.ACCEPTED_ROWS["all"])
    rule = render(source.HAS_QUERY_BREAKDOWN)
    assert rule == "s.type NOT IN (" + ", ".join(f"'{t}'" for t in UNQUERIED_TYPES) + ")"
    assert render(day.queries).count(rule) == 2  # the day's query table and each row's query cells
    assert render(day.query_table).count(rule) == 1
    assert rule not in render(day.items) + render(day.geocodes)


def test_series_reads_each_figure_where_the_layout_names_it() -> None:
    layout = tuple(reversed(postgres.FIGURE_NAMES))
    text = render(postgres.series_sql(SCHEMA, layout, False, False))
    found = {
        name: int(position) for position, name in re.findall(r'sum\(counts\[(\d+)\]\) AS "([\w.]+)"', text)
    }
    assert found == {name: len(layout) - i for i, name in enumerate(postgres.FIGURE_NAMES)}


def test_a_migration_moves_figures_by_name_and_computes_a_missing_block_from_the_summary() -> None:
    missing = f"{BLOCKS[0][0]}.{BLOCKS[0][1]}"
    old_layout = [name for name in reversed(postgres.FIGURE_NAMES) if not name.startswith(missing + ".")]
    text = render(postgres.migrate_counts_sql(SCHEMA, old_layout))
    moved = re.search(r"ARRAY\[(.*)\]::numeric\[\]", text)
    assert moved is not None
    expected = [
        f"COALESCE(counts[{old_layout.index(name) + 1}], 0)"
        if name in old_layout
        else "COALESCE((summary->'{}'->'{}'->>'{}')::numeric, 0)".format(*name.split("."))
        for name in postgres.FIGURE_NAMES
    ]
    assert moved.group(1) == ", ".join(expected)
    assert expected[0].startswith("COALESCE((summary->") and "counts[" in expected[2]
