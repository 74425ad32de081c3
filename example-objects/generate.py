"""Rebuild the example documents in this folder from a throwaway PostgreSQL and synthetic telemetry."""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import psycopg2

from idb_stats import cohort, embedded, runner, synthetic
from idb_stats.config import load_config
from idb_stats.stores import open_store

HERE = Path(__file__).parent


def main() -> None:
    with embedded.running() as server:
        dsn = server.create_database("examples")
        conn = psycopg2.connect(dsn)
        synthetic.load(conn, synthetic.Spec(first_day=date(2020, 2, 16), days=2, rows_per_day=300, recordsets=5))
        conn.close()
        config = load_config(overrides={"source.dsn": dsn, "collect.breakdown_limit": 3}, environ={})
        runner.collect(config, runner.Selection(first=date(2020, 2, 17), last=date(2020, 2, 18)))
        store = open_store(config)
        daily = next(iter(store.export(date(2020, 2, 18), date(2020, 2, 18))))
        totals = next(iter(store.totals([daily["recordset_id"]])))
        run = store.runs(1)[0]
        # What `idb-stats show RS --from 2020-02-17 --to 2020-02-18 --interval day --format json` prints.
        shown = cohort.query(
            store, [daily["recordset_id"]], date(2020, 2, 17), date(2020, 2, 18), "day", summed=False, top=5
        )
        store.close()
    for name, doc in (("daily", daily), ("totals", totals), ("run", run)):
        (HERE / f"{name}.json").write_text(json.dumps(doc, indent=2) + "\n")
    (HERE / "show.json").write_text(cohort.as_json(shown) + "\n")


if __name__ == "__main__":
    main()
