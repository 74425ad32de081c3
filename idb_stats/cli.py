"""The command line: parse, call the library, print, exit. Nothing else touches click or exits."""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable
from datetime import date
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import urlsplit

import click

from . import __version__, cohort, runner
from .config import Config, load_config
from .errors import ConfigError, ExitCode, IdbStatsError
from .legacy import DUPLICATE_POLICIES, DayOutcome
from .logs import ProgressBar, sd_notify, setup_logging
from .model import DayStats
from .planning import Plan
from .report import build_report
from .stores import open_store

log = logging.getLogger("idb_stats")
F = TypeVar("F", bound=Callable[..., Any])

EXIT_CODES_HELP = """Exit codes: 0 ok, 1 unexpected error, 2 usage, 3 configuration (or an index
with another mapping: run adopt), 4 telemetry database unreachable, 5 store unreachable or write not
acknowledged, 6 too many skipped rows (or duplicate documents under --duplicates refuse), 7 lock
held by another run, 8 status: lagging, 9 catch-up span too long."""


class DateType(click.ParamType):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date like 2020-02-18", param, ctx)


DATE = DateType()


def config_options(func: F) -> F:
    """--config, --store, --store-url: shared by every command that reads the configuration."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        help="TOML configuration file [default: /etc/idb-stats/config.toml if present].",
    )
    @click.option(
        "--store",
        type=click.Choice(["postgres", "elasticsearch", "opensearch"]),
        help="Statistics store kind (overrides IDB_STATS_STORE).",
    )
    @click.option("--store-url", help="Store URL or DSN without credentials (overrides IDB_STATS_STORE_URL).")
    @functools.wraps(func)
    def wrapper(
        *args: Any, config_path: str | None, store: str | None, store_url: str | None, **kwargs: Any
    ) -> Any:
        if store_url and _has_credentials(store_url):
            raise ConfigError(
                [
                    "--store-url: credentials on the command line are visible to every user; "
                    "put them in the config file, a credential file or IDB_STATS_STORE_URL"
                ]
            )
        config = load_config(config_path, {"store.kind": store, "store.url": store_url})
        return func(*args, config=config, **kwargs)

    return wrapper  # type: ignore[return-value]


def _has_credentials(url: str) -> bool:
    return bool(urlsplit(url).password) if "://" in url else "password" in url.lower()


def range_options(func: F) -> F:
    func = click.option("--to", "last", type=DATE, help="Last harvest date (inclusive).")(func)
    return click.option("--from", "first", type=DATE, help="First harvest date (inclusive).")(func)


def output_option(func: F) -> F:
    return click.option(
        "-o", "--output", type=click.File("w"), default="-", help="Write here instead of standard output."
    )(func)


def write_ndjson(docs: Iterable[dict[str, Any]], out: Any) -> int:
    count = 0
    for doc in docs:
        out.write(json.dumps(doc, separators=(",", ":"), ensure_ascii=False) + "\n")
        count += 1
    return count


@click.group(epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="idb-stats")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
def cli(verbose: bool, quiet: bool) -> None:
    """Daily per-recordset usage statistics from search API telemetry."""
    setup_logging(verbose, quiet)


def day_summary(stats: DayStats) -> str:
    return (
        f"{stats.harvest_date}: {stats.rows} rows, {stats.entries} entries, {stats.recordsets} recordsets, "
        f"{stats.skipped} skipped, {stats.seconds:.1f} s"
    )


def day_fields(stats: DayStats) -> dict[str, Any]:
    return {
        "harvest_date": stats.harvest_date.isoformat(),
        "rows": stats.rows,
        "entries": stats.entries,
        "recordsets": stats.recordsets,
        "skipped": stats.skipped,
        "seconds": f"{stats.seconds:.3f}",
        "run_id": stats.run_id,
    }


@cli.command("collect-stats", epilog=EXIT_CODES_HELP)
@config_options
@click.option(
    "-d", "--date", "day", type=DATE, help="Process this one harvest date (events of the day before)."
)
@range_options
@click.option("--all", "all_days", is_flag=True, help="Every harvest date that has telemetry.")
@click.option(
    "--reprocess",
    type=click.Choice(["missing", "all"]),
    help="Redo complete days too (all) or only fill the gaps (missing). "
    "[default: all for --date/--from/--to, missing for --all]",
)
@click.option("--dry-run", is_flag=True, help="Aggregate and print each day's summary; write nothing.")
@click.option("--force-span", is_flag=True, help="Catch up even beyond collect.max_catch_up_days.")
@click.option(
    "--jobs", type=click.IntRange(1, 64), help="Days aggregated in parallel [default: collect.jobs]."
)
@click.option("--lock-timeout", type=click.FloatRange(0), help="Seconds to wait for another run's lock.")
def collect_stats(
    config: Config,
    day: date | None,
    first: date | None,
    last: date | None,
    all_days: bool,
    reprocess: str | None,
    dry_run: bool,
    force_span: bool,
    jobs: int | None,
    lock_timeout: float | None,
) -> None:
    """Aggregate telemetry into daily documents and totals.

    With no date: catch up, from the day after the last complete harvest date through today
    (first run: today only). Harvest date D covers the events of [D-1 00:00, D 00:00).
    Re-running any day replaces it exactly.
    """
    if sum(x for x in (day is not None, first is not None or last is not None, all_days)) > 1:
        raise click.UsageError("use one of --date, --from/--to, --all")
    selection = runner.Selection(day, first, last, all_days, reprocess, force_span)
    bar: ProgressBar | None = None
    rows = [0]

    def on_plan(plan: Plan) -> None:
        nonlocal bar
        bar = ProgressBar(len(plan.days))
        log.info("plan: %s (%d days)%s", plan.reason, len(plan.days), " [dry run]" if dry_run else "")

    def on_day(stats: DayStats, done: int, total: int) -> None:
        rows[0] += stats.rows
        if bar:
            bar.clear()
        log.info(day_summary(stats), extra={"fields": day_fields(stats)})
        if dry_run:
            click.echo(json.dumps(stats.as_dict()))
        sd_notify(f"STATUS={stats.harvest_date}: {done}/{total} days, {_human(rows[0])} rows")
        if bar:
            bar.update(done, str(stats.harvest_date))

    result = runner.collect(
        config,
        selection,
        dry_run=dry_run,
        jobs=jobs,
        lock_timeout=lock_timeout,
        on_plan=on_plan,
        on_day=on_day,
    )
    log.info(
        "run %s finished: %d days, %d rows",
        result.run_id,
        len(result.days),
        rows[0],
        extra={"fields": {"run_id": result.run_id, "days": len(result.days), "rows": rows[0]}},
    )


def _human(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


@cli.command()
@config_options
def init(config: Config) -> None:
    """Create the store's schema, indexes or templates (safe to repeat)."""
    store = open_store(config)
    try:
        store.init()
    finally:
        store.close()
    click.echo(f"{config.store} store ready")


@cli.command()
@config_options
@range_options
@output_option
def export(config: Config, first: date | None, last: date | None, output: Any) -> None:
    """Daily documents as NDJSON, sorted by harvest_date then recordset_id."""
    if first is None or last is None:
        raise click.UsageError("export needs --from and --to")
    store = open_store(config)
    try:
        write_ndjson(store.export(first, last), output)
    finally:
        store.close()


def duplicates_option(func: F) -> F:
    return click.option(
        "--duplicates",
        type=click.Choice(DUPLICATE_POLICIES),
        default="refuse",
        show_default=True,
        help="Several documents of one recordset and day (the original collector made them): "
        "refuse (list them), keep-last (the last written) or sum.",
    )(func)


def log_outcome(verb: str, outcome: DayOutcome) -> None:
    fields = outcome.as_dict()
    details = [f"{outcome.read} read", f"{outcome.written} written"]
    if outcome.duplicates:
        details.append(f"{len(outcome.duplicates)} recordsets had duplicates")
    if outcome.filled_blocks:
        details.append(f"{outcome.filled_blocks} missing blocks filled with zeros")
    if outcome.rejected:
        details.append("rejected " + ", ".join(f"{r}: {n}" for r, n in outcome.rejected.items()))
    log.info("%s %s: %s", verb, outcome.harvest_date, ", ".join(details), extra={"fields": fields})


@cli.command("import", epilog=EXIT_CODES_HELP)
@config_options
@click.argument("source_file", type=click.File("r"), default="-")
@duplicates_option
def import_(config: Config, source_file: Any, duplicates: str) -> None:
    """Load an NDJSON export into the store; each harvest date in it replaces that day.

    Exports of the original collector are accepted: date-time harvest dates, counts as doubles and
    missing blocks are normalised. Every line is accounted for, per day.
    """
    rejected: list[int] = []

    def on_rejected(line: int, reason: str) -> None:
        rejected.append(line)
        log.warning(
            "line %d not imported: %s", line, reason, extra={"fields": {"line": line, "reason": reason}}
        )

    outcomes = runner.import_documents(config, source_file, duplicates, on_rejected)
    for outcome in outcomes:
        log_outcome("imported", outcome)
    log.info(
        "import: %d days, %d documents written, %d lines rejected",
        len(outcomes),
        sum(o.written for o in outcomes),
        len(rejected),
    )


@cli.command(epilog=EXIT_CODES_HELP)
@config_options
@click.option("--index", "legacy_index", help="The original collector's index [default: store.daily_index].")
@click.option(
    "--target", help="Elasticsearch/OpenSearch: the new index to create [default: <store.daily_index>-v2]."
)
@click.option(
    "--from-store",
    type=click.Choice(["elasticsearch", "opensearch"]),
    help="Adopting into PostgreSQL: the kind of cluster holding the original index.",
)
@click.option("--from-url", help="Adopting into PostgreSQL: that cluster's URL (no credentials in it).")
@duplicates_option
@click.option("--dry-run", is_flag=True, help="Print the plan and the counts; write nothing.")
def adopt(
    config: Config,
    legacy_index: str | None,
    target: str | None,
    from_store: str | None,
    from_url: str | None,
    duplicates: str,
    dry_run: bool,
) -> None:
    """Take over the original collector's index: copy it into this version's shape and ids.

    Every document is read whatever its id, normalised, and its day published with totals and a
    day marker. On Elasticsearch/OpenSearch the copy goes to a new index, then one atomic request
    deletes the original index and gives its name to the copy as an alias, so the portal keeps
    reading it. Re-run to finish an interrupted adoption. See docs/migrating.md.
    """
    from dataclasses import replace

    from .adopt import adopt as run_adopt

    search_store = config.store in ("elasticsearch", "opensearch")
    if search_store and (from_store or from_url):
        raise click.UsageError(
            "--from-store/--from-url are for adopting into PostgreSQL; the index is read from store.url"
        )
    if not search_store and not (from_store and from_url):
        raise click.UsageError(
            "adopting into PostgreSQL needs --from-store and --from-url (the original's cluster)"
        )
    if from_url and (_has_credentials(from_url) or not from_url.startswith(("http://", "https://"))):
        raise click.UsageError(
            "--from-url: an http(s):// URL without credentials (put them in the configuration)"
        )
    legacy_name = legacy_index or config.daily_index
    if search_store:
        legacy_config = replace(config, daily_index=legacy_name)
    else:
        assert from_store is not None
        legacy_config = replace(config, store=from_store, store_url=from_url, daily_index=legacy_name)
    report = run_adopt(
        config,
        legacy_config,
        (target or f"{config.daily_index}-v2") if search_store else None,
        duplicates,
        dry_run,
        lambda outcome: log_outcome("would adopt" if dry_run else "adopted", outcome),
    )
    click.echo(json.dumps(report.as_dict(), indent=2, default=str))


@cli.command()
@config_options
@click.argument("recordsets", nargs=-1)
@output_option
def totals(config: Config, recordsets: tuple[str, ...], output: Any) -> None:
    """Totals documents as NDJSON (all recordsets, or those named)."""
    store = open_store(config)
    try:
        write_ndjson(store.totals(recordsets), output)
    finally:
        store.close()


@cli.command()
@config_options
@click.argument("recordsets", nargs=-1)
@click.option(
    "--recordsets-file",
    type=click.File("r"),
    help="More recordset ids, one per line (# starts a comment; - reads standard input).",
)
@range_options
@click.option("--interval", type=click.Choice(cohort.INTERVALS), default="month", show_default=True)
@click.option(
    "--format", "fmt", type=click.Choice(list(cohort.FORMATTERS)), default="table", show_default=True
)
@click.option("--sum", "summed", is_flag=True, help="One row per interval for the whole cohort.")
@click.option("--top", type=click.IntRange(0), default=10, show_default=True, help="Countries listed.")
@output_option
def show(
    config: Config,
    recordsets: tuple[str, ...],
    recordsets_file: Any,
    first: date | None,
    last: date | None,
    interval: str,
    fmt: str,
    summed: bool,
    top: int,
    output: Any,
) -> None:
    """Time series, totals and top countries of a cohort of recordsets.

    Per interval: count (events) and total (records involved) of every record type x event
    type, per recordset or summed with --sum. The grouping runs in the store. The csv format
    holds the series only; json holds everything.
    """
    ids = cohort.read_recordsets(recordsets, recordsets_file.readlines() if recordsets_file else [])
    if not ids:
        raise click.UsageError("name at least one recordset, as an argument or in --recordsets-file")
    store = open_store(config)
    try:
        result = cohort.query(store, ids, first, last, interval, summed, top)
    finally:
        store.close()
    output.write(cohort.FORMATTERS[fmt](result))


@cli.command()
@config_options
@range_options
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write.",
)
@click.option(
    "--interval",
    type=click.Choice(cohort.INTERVALS),
    help="Chart points [default: day up to 400 days, then week, then month].",
)
def report(
    config: Config, first: date | None, last: date | None, out_dir: Path, interval: str | None
) -> None:
    """A static HTML report of the range: opens from disk, needs no network.

    index.html has portal-wide charts per event type, a sortable table of recordsets and the
    countries; recordsets/ has one page per recordset with its charts, top records, queries and
    countries.
    """
    if first is None or last is None:
        raise click.UsageError("report needs --from and --to")
    if first > last:
        raise click.UsageError("--from is after --to")
    bar = ProgressBar(0, unit="recordset pages")
    result = build_report(
        lambda: open_store(config),
        config.store,
        first,
        last,
        out_dir,
        interval,
        lambda done, total: bar.update(done, "", total),
    )
    click.echo(
        f"{result.pages} pages, {result.bytes / 1e6:.1f} MB in {result.out_dir} ({result.seconds:.1f} s); "
        f"open {result.out_dir / 'index.html'}"
    )


@cli.command(epilog=EXIT_CODES_HELP)
@config_options
@click.option(
    "--max-lag",
    type=click.IntRange(0),
    help="Exit 8 when the last complete harvest date is more than N days old.",
)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(config: Config, max_lag: int | None, as_json: bool) -> None:
    """Last complete day, lag, missing days, the last run and the last size snapshot."""
    info = runner.status(config)
    if as_json:
        click.echo(json.dumps(info, indent=2, default=str))
    else:
        run = info["last_run"] or {}
        lines = [
            f"store:                 {info['store']}",
            f"last complete day:     {info['last_complete_harvest_date'] or 'none'}",
            f"lag:                   {info['lag_days'] if info['lag_days'] is not None else '-'} days",
            f"complete days:         {info['complete_days']}",
            f"missing days:          {', '.join(info['missing_days']) or 'none'}",
            f"last run:              {run.get('run_id', 'none')} {run.get('outcome', '')} "
            f"{run.get('started_at', '')} {run.get('error') or ''}".rstrip(),
            f"last size snapshot:    {info['last_snapshot'] or 'none'}"
            + (" (none today)" if info["snapshot_missing_today"] else ""),
        ]
        click.echo("\n".join(lines))
    lag = info["lag_days"]
    if max_lag is not None and (lag is None or lag > max_lag):
        raise Lagging(
            f"last complete harvest date is {info['last_complete_harvest_date'] or 'missing'}, "
            f"lag {lag} days exceeds --max-lag {max_lag}"
        )


class Lagging(IdbStatsError):
    exit_code = ExitCode.LAGGING


@cli.command("check-config")
@config_options
@click.option("--connect", is_flag=True, help="Also check that the telemetry database and store answer.")
def check_config(config: Config, connect: bool) -> None:
    """Validate the configuration (every problem at once) and print it with secrets redacted."""
    click.echo(json.dumps(config.describe(), indent=2))
    if connect:
        runner.source_reachable(config)
        store = open_store(config)
        store.close()
        click.echo("telemetry database and store reachable")


@cli.command()
@click.option("--days", type=click.IntRange(1, 60), default=7, show_default=True, help="Days of telemetry.")
@click.option("--rows-per-day", type=click.IntRange(1), default=3000, show_default=True)
@click.option("--keep-running", is_flag=True, help="Leave the server up and print its DSN until Ctrl-C.")
def demo(days: int, rows_per_day: int, keep_running: bool) -> None:
    """Start a throwaway PostgreSQL, load a week of synthetic telemetry, collect it, print totals."""
    from . import demo as demo_module

    demo_module.run(days, rows_per_day, keep_running, click.echo)


@cli.command("api-stats", epilog=EXIT_CODES_HELP)
@config_options
@click.option("--lock-timeout", type=click.FloatRange(0), help="Seconds to wait for another run's lock.")
def api_stats(config: Config, lock_timeout: float | None) -> None:
    """Snapshot how many records and media records each recordset holds now (run daily).

    Counts the ingest database's uuids table (not deleted, by parent); a second run on the same
    UTC day replaces that day's snapshot.
    """
    summary = runner.api_stats(config, lock_timeout)
    log.info(
        "size snapshot %s: %d recordsets, %.1f s",
        summary["snapshot_date"],
        summary["recordsets"],
        summary["seconds"],
        extra={
            "fields": {
                "harvest_date": summary["snapshot_date"],
                "recordsets": summary["recordsets"],
                "seconds": summary["seconds"],
                "run_id": summary["run_id"],
            }
        },
    )


@cli.command("notify-failure")
@click.argument("unit")
def notify_failure(unit: str) -> None:
    """Log a failed unit's result and run the [notify] command (used by idb-stats-notify@.service)."""
    from .notify import notify

    code = notify(unit)
    if code:
        sys.exit(code)


def main() -> None:
    try:
        cli.main(standalone_mode=False)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        sys.exit(ExitCode.UNEXPECTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except IdbStatsError as exc:
        log.error("%s", exc, extra={"fields": {"exit_code": int(exc.exit_code)}})
        if not logging.getLogger("idb_stats").handlers:
            click.echo(f"error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception:
        log.exception("unexpected error")
        sys.exit(ExitCode.UNEXPECTED)


if __name__ == "__main__":  # pragma: no cover
    main()
