"""`idb-stats demo`: the whole pipeline on a throwaway PostgreSQL, in one command."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import date, timedelta

from . import embedded, synthetic
from .collect import Selection, collect
from .config import load_config
from .interrupt import Interrupted
from .stores import open_store

COLUMNS = [
    ("records", "search"),
    ("records", "seen"),
    ("records", "view"),
    ("records", "download"),
    ("mediarecords", "view"),
]


def run(days: int, rows_per_day: int, keep_running: bool, echo: Callable[[str], None]) -> None:
    echo("starting a throwaway PostgreSQL server ...")
    with embedded.running() as server:
        dsn = server.create_database("idb_stats_demo")
        import psycopg2

        first_day = date.today() - timedelta(days=days)
        conn = psycopg2.connect(dsn)
        try:
            rows = synthetic.load(
                conn, synthetic.Spec(first_day=first_day, days=days, rows_per_day=rows_per_day, recordsets=50)
            )
        finally:
            conn.close()
        echo(f"loaded {rows} telemetry rows for {first_day} .. {first_day + timedelta(days=days - 1)}")
        config = load_config(overrides={"source.dsn": dsn}, environ={})
        first, last = first_day + timedelta(days=1), first_day + timedelta(days=days)
        started = time.monotonic()
        result = collect(config, Selection(first=first, last=last))
        echo(
            f"collect-stats --from {first} --to {last}: {len(result.days)} days in "
            f"{time.monotonic() - started:.1f} s"
        )
        for stats in result.days:
            echo(
                f"  {stats.harvest_date}: {stats.rows} rows, {stats.entries} entries, "
                f"{stats.recordsets} recordsets, {stats.skipped} skipped"
            )
        with open_store(config) as store:
            echo("")
            header = f"{'recordset':<38}{'days':>5}" + "".join(
                f"{rt[:5] + '.' + ty:>16}" for rt, ty in COLUMNS
            )
            echo("totals per recordset (total hits):")
            echo(header)
            for doc in store.totals():
                echo(
                    f"{doc['recordset_id']:<38}{doc['days']:>5}"
                    + "".join(f"{doc[rt][ty]['total']:>16}" for rt, ty in COLUMNS)
                )
        if keep_running:
            echo(f"\nPostgreSQL stays up: IDB_STATS_SOURCE_DSN='{dsn}' (Ctrl-C to stop)")
            try:
                while True:
                    time.sleep(3600)
            except (KeyboardInterrupt, Interrupted):
                pass
