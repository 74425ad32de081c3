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

# The demo's table: a few columns of the totals, under headers that fit.
COLUMNS = [
    ("search", "records", "search"),
    ("seen", "records", "seen"),
    ("view", "records", "view"),
    ("download", "records", "download"),
    ("media view", "mediarecords", "view"),
]
TOP = 10


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
            totals = sorted(store.totals(), key=lambda d: -d["records"]["search"]["total"])
        echo("")
        echo(
            f"the {min(TOP, len(totals))} most searched of {len(totals)} recordsets "
            f"(total hits over the {days} days):"
        )
        echo(f"{'recordset':<38}{'days':>5}" + "".join(f"{label:>12}" for label, _, _ in COLUMNS))
        for doc in totals[:TOP]:
            echo(
                f"{doc['recordset_id']:<38}{doc['days']:>5}"
                + "".join(f"{doc[rt][ty]['total']:>12,}" for _, rt, ty in COLUMNS)
            )
        example = totals[0]["recordset_id"] if totals else "RECORDSET"
        echo("")
        echo("what to try next:")
        if not keep_running:
            echo("  idb-stats demo --keep-running        keep this PostgreSQL up, then in another shell:")
        for line in (
            f"  export IDB_STATS_SOURCE_DSN='{dsn if keep_running else '<the DSN it prints>'}'",
            "  idb-stats status                     last complete day, lag, each command's last run",
            f"  idb-stats show {example} --interval day",
            f"  idb-stats report --from {first} --to {last} --out demo-report",
            "  your own telemetry database: README.md, Quick start; every command: docs/commands.md",
        ):
            echo(line)
        if keep_running:
            echo("\nPostgreSQL stays up until Ctrl-C.")
            try:
                while True:
                    time.sleep(3600)
            except (KeyboardInterrupt, Interrupted):
                pass
