"""The reference documents stay true: docs/commands.md is what the commands' help says, and
docs/telemetry.md names exactly the columns the source's SQL reads, in a schema that works."""

from __future__ import annotations

import re
from datetime import date
from pathlib import Path

import psycopg2
from click.testing import CliRunner

from idb_stats import apistats, counter, fingerprint, names, source
from idb_stats.cli import cli, commands_reference
from idb_stats.collect import Selection, collect
from idb_stats.config import BY_KEY, load_config
from idb_stats.stores import open_store

ROOT = Path(__file__).resolve().parent.parent
TELEMETRY = (ROOT / "docs" / "telemetry.md").read_text()


def test_command_reference_is_current() -> None:
    assert (ROOT / "docs" / "commands.md").read_text() == commands_reference(), (
        "run: idb-stats sample-config --commands > docs/commands.md"
    )
    shown = CliRunner().invoke(cli, ["sample-config", "--commands"]).stdout
    assert shown == commands_reference()
    for name in cli.commands:
        assert f"\n## idb-stats {name}\n" in shown


def documented_columns(table: str) -> set[str]:
    section = TELEMETRY.split(f"## `{table}`", 1)[1].split("\n## ", 1)[0]
    return set(re.findall(r"^\| `(\w+)` \|", section, re.MULTILINE))


def test_telemetry_doc_names_exactly_the_columns_the_sql_reads() -> None:
    code = "".join(Path(str(module.__file__)).read_text() for module in (source, fingerprint, counter))
    stats_columns = set(re.findall(r"\bs\.([a-z_]+)\b", code)) - {"xmin"}  # xmin: every table has it
    assert documented_columns("stats") == stats_columns
    query_text = BY_KEY["source.query_text_column"].default  # report's query text (names.py)
    assert documented_columns("queries") == set(re.findall(r"\bq\.([a-z_]+)\b", code)) | {query_text}
    words = set(re.findall(r"\b[a-z_]+\b", re.sub(r"'[^']*'|\{\w+\}", "", apistats.COUNT_SQL.string.lower())))
    keywords = {"select", "text", "count", "filter", "where", "from", "and", "in", "is", "not", "null"}
    assert documented_columns("uuids") == words - keywords - {"group", "by", "order", "false"}


def test_ingest_doc_names_exactly_the_columns_names_reads() -> None:
    section = TELEMETRY.split("## `recordsets` and `publishers`", 1)[1].split("\n## ", 1)[0]
    recordsets, publisher_table = section.split("| column |")[1:3]
    keywords = {"select", "text", "from", "where", "is", "not", "null"}
    for table, sql in ((recordsets, names.RECORDSETS_SQL), (publisher_table, names.PUBLISHERS_SQL)):
        documented = set(re.findall(r"^\| `(\w+)` \|", table, re.MULTILINE))
        assert documented == set(re.findall(r"\b[a-z_]+\b", re.sub(r"\{\w+\}", "", sql))) - keywords


def test_the_smallest_schema_in_the_doc_collects(dsn: str) -> None:
    blocks = re.findall(r"```sql\n(.*?)```", TELEMETRY, re.DOTALL)
    conn = psycopg2.connect(dsn)
    with conn, conn.cursor() as cur:
        for block in blocks[:2]:  # the schema and the example rows (not the GRANT)
            cur.execute(block)
    conn.close()
    config = load_config(overrides={"source.dsn": dsn}, environ={})
    harvest = date(2026, 12, 5)
    assert "collect-stats -d 2026-12-05" in TELEMETRY
    result = collect(config, Selection(day=harvest))
    assert [(s.harvest_date, s.rows, s.skipped) for s in result.days] == [(harvest, 2, 0)]
    with open_store(config) as store:
        (doc,) = list(store.export(harvest, harvest))
    assert doc["recordset_id"] == "00000001-0000-4000-8000-000000000000"
    assert doc["records"]["search"]["total"] == 120 and doc["records"]["view"]["count"] == 1
