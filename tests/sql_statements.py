"""Every SQL statement the project builds, by name, with fixed table names: what
tests/unit/test_sql_snapshots.py pins and tests/test_sql_quoting.py renders both ways."""

from __future__ import annotations

import dataclasses

from psycopg2 import sql

from idb_stats import apistats, counter, fingerprint, source
from idb_stats.stores import postgres

STATS, QUERIES = sql.Identifier("stats"), sql.Identifier("queries")
SCHEMA = sql.Identifier("idb_stats")


def statements() -> dict[str, sql.Composable]:
    out: dict[str, sql.Composable] = {
        "source.skip_reason": source.SKIP_REASON_SQL,
        "source.skips": source.skips_sql(STATS, source.SKIPPED_IDS_CAP),
        "source.skips_work_mem": source.SKIPS_WORK_MEM,
        "source.harvest_dates": source.harvest_dates_sql(STATS),
        "source.rows_around": source.rows_around_sql(STATS),
        "source.rows_at": source.rows_at_sql(STATS, QUERIES),
        "source.holding_the_snapshot": source.HOLDING_THE_SNAPSHOT,
        "source.stream_settings": source.STREAM_SETTINGS,
    }
    out.update(
        {f"source.accepted_rows.{kind}": condition for kind, condition in source.ACCEPTED_ROWS.items()}
    )
    # The day's statements differ only in the accepted rows' condition, pinned above.
    day = source.day_sql(STATS, QUERIES, source.ACCEPTED_ROWS["but-skipped-ids"])
    out.update({f"source.day.{field.name}": getattr(day, field.name) for field in dataclasses.fields(day)})
    for name, row_hash in (("xmin", fingerprint.ROW_HASH), ("columns", fingerprint.COLUMNS_HASH)):
        out[f"fingerprint.day.{name}"] = fingerprint.day_sql(STATS, row_hash)
        out[f"fingerprint.days.{name}"] = fingerprint.days_sql(STATS, row_hash)
    out["fingerprint.settings"] = fingerprint.SETTINGS
    out["counter.figures"] = counter.counter_sql(STATS, source.ACCEPTED_ROWS["but-skipped-ids"])
    out["counter.has_ip"] = counter.HAS_IP_SQL
    out["apistats.count"] = apistats.COUNT_SQL.format(uuids=sql.Identifier("uuids"))
    out["store.schema"] = sql.SQL(postgres.SCHEMA_SQL).format(s=SCHEMA)
    out["store.read_columns"] = postgres.read_columns_sql(SCHEMA)
    out["store.migrate_counts.version_1"] = postgres.migrate_counts_sql(SCHEMA, postgres.VERSION_1_FIGURES)
    out["store.counts_check"] = postgres.counts_check_sql(SCHEMA)
    for named in (False, True):
        for by_recordset in (False, True):
            variant = f"{'named' if named else 'all'}.{'by_recordset' if by_recordset else 'together'}"
            out[f"store.series.{variant}"] = postgres.series_sql(
                SCHEMA, postgres.FIGURE_NAMES, named, by_recordset
            )
            out[f"store.top_countries.{variant}"] = postgres.top_countries_sql(SCHEMA, named, by_recordset)
    out["store.top_terms"] = postgres.top_terms_sql(SCHEMA)
    return out
