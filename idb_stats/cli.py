"""The command line: parse, call the library, print, exit. Nothing else touches click or exits.

Long because it is every command's options, help and output in one click group (17 commands);
each command body only parses, calls one use case and prints.
"""

from __future__ import annotations

import functools
import inspect
import json
import logging
import math
import os
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import date
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from . import (
    __version__,
    apistats,
    checks,
    cohort,
    collect,
    forget,
    importing,
    interrupt,
    legacy,
    monitoring,
    monthly,
    ndjson,
)
from . import changes as changes_ledger  # the `changes` command below takes the plain name
from . import publishers as publisher_rollups  # `show --publisher`
from . import status as store_status  # the `status` command below takes the plain name
from .clock import SYSTEM_CLOCK, Clock
from .config import MAX_JOBS, STORE_KINDS, Config, load_config
from .errors import (
    EXIT_CODE_MEANINGS,
    ChecksFailed,
    ConfigError,
    ExitCode,
    IdbStatsError,
    OutputClosed,
    UsageError,
    exit_codes_help,
)
from .interrupt import Interrupted
from .json_text import compact
from .legacy import DUPLICATE_POLICIES, DayOutcome
from .logs import LOG_FORMAT_ENV, LOG_FORMATS, ProgressBar, json_logging, setup_logging, status_sink
from .model import DayStats
from .names import load_names, query_texts
from .planning import Plan
from .progress import Tracker, duration_text
from .report import build_report, prepare_out_dir
from .secrets import has_password
from .stores import open_store
from .terminal import broken_pipe, plural, writing

log = logging.getLogger("idb_stats")
F = TypeVar("F", bound=Callable[..., Any])

# Every command's help ends with this table (set on each command below the last one).
EXIT_CODES_HELP = exit_codes_help()
CONFIG_ENV = "IDB_STATS_CONFIG"


if TYPE_CHECKING:  # generic in the click mypy checks against; pyproject allows an older click that is not
    DateParam = click.ParamType[date]
else:
    DateParam = click.ParamType


class DateType(DateParam):
    name = "YYYY-MM-DD"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> date:
        if isinstance(value, date):
            return value
        try:
            return date.fromisoformat(value)
        except ValueError:
            self.fail(f"{value!r} is not a date like 2020-02-18", param, ctx)


DATE = DateType()


class Seconds(click.FloatRange):
    """A number of seconds, 0 or more and finite: click's FloatRange takes "nan" (it passes every
    comparison with the bound) and "inf", and a run lock waited on for NaN seconds waits forever."""

    name = "seconds"

    def __init__(self) -> None:
        super().__init__(min=0)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> float:
        seconds = float(super().convert(value, param, ctx))
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a finite number of seconds", param, ctx)
        return seconds


SECONDS = Seconds()


def config_options(func: F) -> F:
    """--config, --store, --store-url: shared by every command that reads the configuration."""

    @click.option(
        "--config",
        "config_path",
        type=click.Path(dir_okay=False),
        envvar=CONFIG_ENV,
        show_envvar=True,
        help="TOML configuration file [default: /etc/idb-stats/config.toml if present].",
    )
    @click.option(
        "--store",
        type=click.Choice(STORE_KINDS),
        help="Statistics store kind (overrides IDB_STATS_STORE).",
    )
    @click.option("--store-url", help="Store URL or DSN without credentials (overrides IDB_STATS_STORE_URL).")
    @functools.wraps(func)
    def wrapper(
        *args: Any, config_path: str | None, store: str | None, store_url: str | None, **kwargs: Any
    ) -> Any:
        if store_url and has_password(store_url):
            raise ConfigError(
                [
                    "--store-url: a password on the command line is visible to every user (in any "
                    "spelling: user:password@, ?password=, password=); put it in the store-url "
                    "credential file (/etc/idb-stats/credentials/store-url) or IDB_STATS_STORE_URL"
                ]
            )
        config = load_config(config_path, {"store.kind": store, "store.url": store_url})
        log.debug("configuration (%s): %s", config.config_path or "no file", json.dumps(config.describe()))
        return func(*args, config=config, **kwargs)

    return wrapper  # type: ignore[return-value]


def range_options(func: F, required: bool = False) -> F:
    """--from/--to; a reversed range is refused before anything is opened."""

    @functools.wraps(func)
    def checked(*args: Any, first: date | None, last: date | None, **kwargs: Any) -> Any:
        if first is not None and last is not None and first > last:
            raise UsageError(f"--from {first} is after --to {last}: swap them")
        return func(*args, first=first, last=last, **kwargs)

    to = click.option("--to", "last", type=DATE, required=required, help="Last harvest date (inclusive).")
    since = click.option(
        "--from", "first", type=DATE, required=required, help="First harvest date (inclusive)."
    )
    return since(to(checked))  # type: ignore[return-value]


def required_range_options(func: F) -> F:
    return range_options(func, required=True)


def format_option(*formats: str, default: str | None = None, help_text: str = "") -> Callable[[F], F]:
    """--format FORMAT, the one spelling of machine output on every command that prints data, and
    --json, kept as its alias: the command receives `fmt`."""

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def chosen(*args: Any, fmt: str | None, as_json: bool, **kwargs: Any) -> Any:
            if as_json and fmt not in (None, "json"):
                raise click.UsageError(f"--json is --format json; it cannot go with --format {fmt}")
            return func(*args, fmt="json" if as_json else fmt or formats[0], **kwargs)

        with_json = click.option("--json", "as_json", is_flag=True, help="The same as --format json.")(chosen)
        return click.option(  # type: ignore[return-value]
            "--format",
            "fmt",
            type=click.Choice(formats),
            default=default,
            help=(help_text + " " if help_text else "") + f"[default: {default or formats[0]}]",
        )(with_json)

    return decorate


def clock() -> Clock:
    """The clock every command plans with, built once by `run` (a fixed one in tests)."""
    obj = click.get_current_context().find_root().obj
    return obj if obj is not None else SYSTEM_CLOCK


def output_option(func: F) -> F:
    return click.option(
        "-o", "--output", type=click.File("w"), default="-", help="Write here instead of standard output."
    )(func)


def write_ndjson(docs: Iterable[dict[str, Any]], out: Any) -> int:
    count = 0
    for doc in docs:
        out.write(compact(doc) + "\n")
        count += 1
    return count


class Commands(click.Group):
    """The command group; an EPIPE from standard output (its reader went away) becomes
    OutputClosed here, before click's own handling would exit 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except BrokenPipeError as exc:
            closed = broken_pipe(exc)
            if closed is None:
                raise
            raise closed from None


LOG_FORMAT_HELP = (
    "Log lines on standard error as text, or json (one object per line with the fields journald "
    "gets) [default: journald under systemd, else text]."
)


@click.group(cls=Commands, epilog=EXIT_CODES_HELP)
@click.version_option(__version__, prog_name="idb-stats")
@click.option("-v", "--verbose", is_flag=True, help="Log debug details.")
@click.option("-q", "--quiet", is_flag=True, help="Log warnings and errors only.")
@click.option(
    "--log-format",
    type=click.Choice(LOG_FORMATS),
    envvar=LOG_FORMAT_ENV,
    show_envvar=True,
    help=LOG_FORMAT_HELP,
)
@click.pass_context
def cli(ctx: click.Context, verbose: bool, quiet: bool, log_format: str | None) -> None:
    """Daily per-recordset usage statistics from search API telemetry."""
    ctx.meta["logging"] = {"verbose": verbose, "quiet": quiet, "log_format": log_format}
    setup_logging(verbose, quiet, log_format)


def _set_logging(ctx: click.Context, param: click.Parameter, value: Any) -> None:
    # -v/-q/--log-format given after the command name: they replace the group's setting.
    if not value:
        return
    chosen = ctx.meta.setdefault("logging", {"verbose": False, "quiet": False, "log_format": None})
    if param.name in ("verbose", "quiet"):
        chosen.update(verbose=param.name == "verbose", quiet=param.name == "quiet")
    else:
        chosen["log_format"] = value
    setup_logging(**chosen)


def logging_options(command: click.Command) -> None:
    """-v/-q/--log-format are accepted after the command name too (`idb-stats status -v`)."""
    for name, flag, help_text in (
        ("verbose", "-v", "Log debug details."),
        ("quiet", "-q", "Log warnings and errors only."),
    ):
        command.params.append(
            click.Option(
                [flag, f"--{name}", name],
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_set_logging,
                help=help_text,
            )
        )
    command.params.append(
        click.Option(
            ["--log-format", "log_format"],
            type=click.Choice(LOG_FORMATS),
            expose_value=False,
            is_eager=True,
            callback=_set_logging,
            help=LOG_FORMAT_HELP,
        )
    )


def publishes_metrics(func: F) -> F:
    """After a command that records its run, however it ends: monitoring.textfile rewritten (when
    set) from the store's status, so Prometheus sees the run's outcome."""

    @functools.wraps(func)
    def wrapper(*args: Any, config: Config, **kwargs: Any) -> Any:
        ran = True
        try:
            return func(*args, config=config, **kwargs)
        except (UsageError, click.UsageError):
            ran = False  # a mistake refused before anything ran: nothing to report, nothing written
            raise
        finally:
            if ran and config.metrics_textfile:
                _write_metrics(config, Path(config.metrics_textfile))

    return wrapper  # type: ignore[return-value]


def _write_metrics(config: Config, path: Path) -> None:
    try:
        text = monitoring.prometheus_text(store_status.status(config, clock()))
    except IdbStatsError as exc:
        log.warning("monitoring.textfile: cannot read the status (%s); %s says the store is down", exc, path)
        text = monitoring.prometheus_down(config.store)
    try:
        monitoring.write_atomically(path, text)
    except OSError as exc:
        log.warning("monitoring.textfile: cannot write %s: %s", path, exc.strerror or exc)


@cli.command("collect-stats")
@config_options
@publishes_metrics
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
@click.option(
    "--dry-run", is_flag=True, help="Aggregate and print each day's summary as JSON; write nothing."
)
@format_option(
    "text", "json", help_text="json: also print each day's summary on standard output, one JSON line."
)
@click.option("--force-span", is_flag=True, help="Catch up even beyond collect.max_catch_up_days.")
@click.option(
    "--jobs", type=click.IntRange(1, MAX_JOBS), help="Days aggregated in parallel [default: collect.jobs]."
)
@click.option("--lock-timeout", type=SECONDS, help="Seconds to wait for another run's lock.")
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Publish a day whose source rows are gone even though the store holds its documents "
    "(empties it), or a day without rows the source cannot vouch for (no rows after it, or "
    "before it); refused otherwise, exit 10.",
)
def collect_stats(
    config: Config,
    day: date | None,
    first: date | None,
    last: date | None,
    all_days: bool,
    reprocess: str | None,
    dry_run: bool,
    fmt: str,
    force_span: bool,
    jobs: int | None,
    lock_timeout: float | None,
    allow_empty: bool,
) -> None:
    """Aggregate telemetry into daily documents and totals.

    With no date: catch up, every missing harvest date from the first complete one through the
    last closed one (first run: that day only), stopping at the last harvest date whose window
    closed collect.settle ago. Harvest date D covers the events of [D-1 00:00, D 00:00) and closes
    at D 00:00: a date not over yet is refused, or skipped in a range. The catch-up also re-checks
    the last collect.recheck_days published days and republishes those whose source rows changed
    (reason late_rows). SIGTERM/SIGINT stop the run and record it as interrupted (exit 143/130).
    Re-running any day replaces it exactly.
    """
    if sum(x for x in (day is not None, first is not None or last is not None, all_days)) > 1:
        raise click.UsageError("use one of --date, --from/--to, --all")
    selection = collect.Selection(day, first, last, all_days, reprocess, force_span)
    bar = ProgressBar("days")
    rows = [0]
    tracker = Tracker(sinks=[bar, status_sink("days", lambda: [f"{_human(rows[0])} rows"])])

    def on_plan(plan: Plan) -> None:
        tracker.total = len(plan.days)
        log.info(
            "plan: %s (%s)%s", plan.reason, plural(len(plan.days), "day"), " [dry run]" if dry_run else ""
        )
        log.debug("days planned: %s", ", ".join(str(d) for d in plan.days) or "none")
        if plan.not_closed:
            log.warning(
                "skipped %s whose window is still open: %s",
                plural(len(plan.not_closed), "harvest date"),
                ", ".join(str(d) for d in plan.not_closed),
            )

    def on_day(stats: DayStats, done: int, total: int) -> None:
        rows[0] += stats.rows
        bar.clear()
        log.info(collect.day_summary(stats), extra={"fields": collect.day_fields(stats)})
        if dry_run or fmt == "json":
            click.echo(json.dumps(stats.as_dict()))
        tracker.update(done, str(stats.harvest_date), total)

    result = collect.collect(
        config,
        selection,
        clock=clock(),
        dry_run=dry_run,
        jobs=jobs,
        lock_timeout=lock_timeout,
        on_plan=on_plan,
        on_day=on_day,
        allow_empty=allow_empty,
    )
    seconds = tracker.elapsed()
    log.info(
        "run %s finished: %s, %s in %s",
        result.run_id,
        plural(len(result.days), "day"),
        plural(rows[0], "row"),
        duration_text(seconds),
        extra={
            "fields": {
                "run_id": result.run_id,
                "days": len(result.days),
                "rows": rows[0],
                "seconds": f"{seconds:.3f}",
            }
        },
    )


def _human(n: int) -> str:
    return f"{n / 1e6:.1f}M" if n >= 1e6 else f"{n / 1e3:.1f}k" if n >= 1e3 else str(n)


@cli.command()
@config_options
def init(config: Config) -> None:
    """Create the store's schema, indexes or templates (safe to repeat)."""
    with open_store(config) as store:
        store.init()
    click.echo(f"{config.store} store ready")


@cli.command()
@config_options
@required_range_options
@output_option
def export(config: Config, first: date | None, last: date | None, output: Any) -> None:
    """Daily documents as NDJSON, sorted by harvest_date then recordset_id, between an opening
    line and a closing line that counts the documents of each day (import checks them, so a file
    cut short is refused)."""
    assert first is not None and last is not None  # required options
    log.debug("exporting %s to %s", first, last)
    with open_store(config) as store, writing(output):
        output.writelines(ndjson.export_lines(store.export(first, last), first, last))


def duplicates_option(func: F) -> F:
    return click.option(
        "--duplicates",
        type=click.Choice(DUPLICATE_POLICIES),
        default="refuse",
        show_default=True,
        help="Several documents of one recordset and day (the original collector made them): "
        "refuse (list them), keep-last (the last written) or sum.",
    )(func)


@cli.command("import")
@config_options
@publishes_metrics
@click.argument("source_file", type=click.File("rb"), default="-")
@duplicates_option
@click.option("--lock-timeout", type=SECONDS, help="Seconds to wait for another run's lock.")
def import_(config: Config, source_file: Any, duplicates: str, lock_timeout: float | None) -> None:
    """Load an NDJSON export into the store; each harvest date in it replaces that day.

    The file is read once and checked whole first (a line that is not a daily document, holds
    anything collect-stats never writes, or whose numbers contradict the rules or exceed what the
    store holds, is named by its number), so a malformed file writes nothing; nor does an export
    cut short (its closing line, which counts each day's documents, missing or disagreeing).
    What is written is what was checked, from a private copy of the documents. A file without
    export's opening line (an older export) is imported with a warning that its completeness
    cannot be checked.
    Exports of the original collector are accepted: date-time harvest dates, counts as doubles
    and missing blocks are normalised; every line is accounted for, per day.
    """
    bar = ProgressBar("documents")
    tracker = Tracker(sinks=[bar, status_sink("documents")])  # from the start: the check is part of the run
    name = importing.stream_name(source_file)

    def on_checked(checked: ndjson.CheckedExport) -> None:
        tracker.total = checked.documents
        log.info(
            "%s checked: %s in %s",
            name,
            plural(checked.documents, "document"),
            duration_text(tracker.elapsed()),
        )

    read = [0]

    def on_day(outcome: DayOutcome, stats: DayStats) -> None:
        read[0] += outcome.read
        bar.clear()
        legacy.log_outcome("imported", outcome, stats.seconds)
        tracker.update(read[0], str(outcome.harvest_date))

    closed = collect.last_closed(config, clock())
    outcomes = importing.import_file(
        config, source_file, name, duplicates, closed, on_checked, on_day, lock_timeout
    )
    seconds = tracker.elapsed()
    log.info(
        "import: %d days, %d documents written in %s",
        len(outcomes),
        sum(o.written for o in outcomes),
        duration_text(seconds),
        extra={"fields": {"days": len(outcomes), "seconds": f"{seconds:.3f}"}},
    )


@cli.command()
@config_options
@publishes_metrics
@click.option("--index", "legacy_index", help="The original collector's index [default: store.daily_index].")
@click.option(
    "--target", help="Elasticsearch/OpenSearch: the new index to create [default: <store.daily_index>-v2]."
)
@click.option(
    "--from-store",
    type=click.Choice(["elasticsearch", "opensearch"]),
    hidden=True,
    help="Accepted for older scripts; the cluster at --from-url says what it is.",
)
@click.option(
    "--from-url",
    help="The original's cluster (Elasticsearch 2.x-9.x or OpenSearch), when it is not store.url; "
    "no credentials in it.",
)
@duplicates_option
@click.option("--dry-run", is_flag=True, help="Print the plan and the counts; write nothing.")
@click.option("--lock-timeout", type=SECONDS, help="Seconds to wait for another run's lock.")
def adopt(
    config: Config,
    legacy_index: str | None,
    target: str | None,
    from_store: str | None,
    from_url: str | None,
    duplicates: str,
    dry_run: bool,
    lock_timeout: float | None,
) -> None:
    """Take over the original collector's index: copy it into this version's shape and ids.

    Every document is read whatever its id, normalised, and its day published with totals and a
    day marker; its record-count documents become snapshots. On Elasticsearch/OpenSearch the copy
    goes to a new index, then one atomic request makes the original's name an alias of the copy
    and the record-count index, so the portal keeps reading it. Re-run to finish an interrupted
    adoption. See docs/migrating.md.
    """
    from . import adopt as adoption

    where = adoption.sources(config, legacy_index, target, from_url)
    bar = ProgressBar("days")
    tracker = Tracker(sinks=[bar, status_sink("days")])
    done = [0]

    def on_total(total: int) -> None:
        tracker.total = total

    def on_day(outcome: DayOutcome) -> None:
        done[0] += 1
        bar.clear()
        legacy.log_outcome("would adopt" if dry_run else "adopted", outcome)
        tracker.update(done[0], str(outcome.harvest_date))

    report = adoption.adopt(
        config,
        where.legacy,
        where.target_index,
        duplicates,
        dry_run,
        on_day,
        on_total,
        lock_timeout,
    )
    click.echo(json.dumps(report.as_dict(), indent=2, default=str))
    seconds = tracker.elapsed()
    log.info(
        "adopt%s: %s in %s",
        " (dry run)" if dry_run else "",
        plural(len(report.days), "day"),
        duration_text(seconds),
        extra={"fields": {"days": len(report.days), "seconds": f"{seconds:.3f}"}},
    )


@cli.command()
@config_options
@click.argument("recordsets", nargs=-1)
@output_option
def totals(config: Config, recordsets: tuple[str, ...], output: Any) -> None:
    """Totals documents as NDJSON (all recordsets, or those named).

    Named recordsets without statistics are listed on standard error; none known at all exits 2.
    """
    with open_store(config) as store, writing(output):
        written = {doc["recordset_id"] for doc in _written(store.totals(recordsets), output)}
    cohort.report_unknown(recordsets, [r for r in recordsets if r not in written])


def _written(docs: Iterable[dict[str, Any]], out: Any) -> Iterable[dict[str, Any]]:
    for doc in docs:
        write_ndjson([doc], out)
        yield doc


@cli.command()
@config_options
@click.argument("recordsets", nargs=-1)
@click.option(
    "--recordsets-file",
    type=click.File("r"),
    help="More recordset ids, one per line (# starts a comment; - reads standard input).",
)
@range_options
@click.option(
    "--interval",
    type=click.Choice(cohort.INTERVALS),
    default="month",
    show_default=True,
    help="One row of counts per day, week (starting Monday), month or year of harvest dates.",
)
@format_option(*cohort.FORMATTERS, help_text="csv holds the series only; json holds everything.")
@click.option("--sum", "summed", is_flag=True, help="One row per interval for the whole cohort.")
@click.option("--top", type=click.IntRange(0), default=10, show_default=True, help="Countries listed.")
@click.option(
    "--publisher",
    help="Instead of recordsets: the sum of a publisher's recordsets (its id, or its exact name) as "
    "the ingest database lists them today, with the previous period and the year to date; "
    "the range defaults to the year of the last complete day.",
)
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
    publisher: str | None,
    output: Any,
) -> None:
    """Time series, totals and top countries of a cohort of recordsets, or of a publisher.

    Per interval: count (events) and total (records involved) of every record type x event
    type, per recordset or summed with --sum. The grouping runs in the store. The csv format
    holds the series only; json holds everything. Recordset names come from the ingest database
    (api.dsn) when it is configured; otherwise ids are shown.
    """
    if publisher is not None:
        if recordsets or recordsets_file:
            raise click.UsageError("--publisher sums its own recordsets: name no recordsets with it")
        names = load_names(config, required=True)
        with open_store(config) as store:
            first, last = publisher_rollups.default_range(store, first, last)
            rolled = publisher_rollups.rollup(store, names, publisher, first, last, interval, top)
        with writing(output):
            output.write(publisher_rollups.FORMATTERS[fmt](rolled))
        return
    ids = cohort.read_recordsets(recordsets, recordsets_file.readlines() if recordsets_file else [])
    if not ids:
        raise click.UsageError("name at least one recordset, as an argument or in --recordsets-file")
    names = load_names(config)
    with open_store(config) as store:
        unknown = cohort.unknown_recordsets(store, ids)
        if len(unknown) == len(ids):
            cohort.report_unknown(ids, unknown)
        result = cohort.query(store, ids, first, last, interval, summed, top, names.recordsets)
    with writing(output):
        output.write(cohort.FORMATTERS[fmt](result))
    cohort.report_unknown(ids, unknown)


@cli.command()
@config_options
@required_range_options
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
    """A static HTML report of the range (--from and --to required): opens from disk, needs no network.

    index.html has portal-wide charts per event type, a sortable table of recordsets and the
    countries; recordsets/ has one page per recordset with its charts, top records, queries and
    countries.
    """
    assert first is not None and last is not None  # required options
    tracker = Tracker(sinks=[ProgressBar("recordset pages"), status_sink("recordset pages")])

    def progress(done: int, total: int) -> None:
        tracker.update(done, "", total)

    prepare_out_dir(out_dir)  # a mistaken --out is said before the names are read
    result = build_report(
        lambda: open_store(config),
        config.store,
        first,
        last,
        out_dir,
        interval,
        progress,
        names=load_names(config),
        query_texts=lambda hashes: query_texts(config, hashes),
    )
    click.echo(
        f"{plural(result.pages, 'page')}, {result.bytes / 1e6:.1f} MB in {result.out_dir} "
        f"({result.seconds:.1f} s); "
        f"open {result.out_dir / 'index.html'}"
    )


@cli.command("monthly-report")
@config_options
@click.option("--month", help="The month to report, YYYY-MM [default: the last complete month].")
@click.option(
    "--out",
    "out_dir",
    type=click.Path(file_okay=False, path_type=Path),
    required=True,
    help="Directory to write (new, empty, or an earlier monthly report, which is replaced); "
    "{month} in it is replaced by the month, YYYY-MM.",
)
def monthly_report(config: Config, month: str | None, out_dir: Path) -> None:
    """Per publisher, the year so far month by month: a CSV, a small HTML page and the COUNTER
    Dataset report (TSV, JSON), plus the whole portal's Dataset report and an index.

    Publishers and their recordsets come from the ingest database (api.dsn) as it is now. Each
    file is then handed to [reports] command when one is set (exit 12 when it fails for any).
    """
    now = clock().now()
    chosen = monthly.parse_month(month) if month else monthly.previous_month(now.date())
    out_dir = monthly.out_dir_of(out_dir, chosen)
    result = monthly.monthly_report(
        config, lambda: open_store(config), lambda: load_names(config, required=True), chosen, out_dir, now
    )
    delivered = f", {result.delivered} delivered" if config.reports_command else ""
    click.echo(
        f"{chosen:%Y-%m}: {plural(result.publishers, 'publisher')}, {plural(len(result.files), 'file')} "
        f"in {result.out_dir} ({result.seconds:.1f} s){delivered}; open {result.out_dir / 'index.html'}"
    )


@cli.command()
@config_options
@click.option(
    "--max-lag",
    type=click.IntRange(0),
    help="Exit 8 when the last complete harvest date is more than N days old, or any day is damaged.",
)
@format_option(
    "text",
    "json",
    "nagios",
    "prometheus",
    help_text="nagios: one plugin line with performance data, exit 0/1/2/3 for OK/WARNING/CRITICAL/UNKNOWN; "
    "prometheus: the text exposition format (node_exporter's textfile collector).",
)
@click.option(
    "--warn-lag",
    type=click.IntRange(0),
    default=monitoring.DEFAULT_WARN_LAG,
    show_default=True,
    help="--format nagios: WARNING when the lag is more than N days.",
)
@click.option(
    "--crit-lag",
    type=click.IntRange(0),
    default=monitoring.DEFAULT_CRIT_LAG,
    show_default=True,
    help="--format nagios: CRITICAL when the lag is more than N days.",
)
def status(config: Config, max_lag: int | None, fmt: str, warn_lag: int, crit_lag: int) -> None:
    """Last complete day, lag, missing and damaged days, each command's last run and the last size
    snapshot.

    --format nagios is a Nagios/Icinga/Zabbix check: CRITICAL for damaged days, a failed or
    abandoned last run, or a lag over --crit-lag; WARNING for a lag over --warn-lag or an
    interrupted last run; UNKNOWN (exit 3) when the store cannot be read.
    """
    if warn_lag > crit_lag:
        mistake = f"--warn-lag {warn_lag} is above --crit-lag {crit_lag}: swap them"
        if fmt == "nagios":  # a check's own usage mistake is UNKNOWN to Nagios, not CRITICAL (2)
            click.echo(monitoring.nagios_unknown(mistake).line())
            sys.exit(monitoring.NagiosState.UNKNOWN)
        raise UsageError(mistake)
    if fmt == "nagios":
        _nagios(config, warn_lag, crit_lag)
        return
    try:
        info = store_status.status(config, clock())
    except IdbStatsError:
        if fmt == "prometheus":  # still a parsable file, which says the store is down
            click.echo(monitoring.prometheus_down(config.store), nl=False)
        raise
    if fmt == "json":
        click.echo(json.dumps(info.as_dict(), indent=2, default=str))
    elif fmt == "prometheus":
        click.echo(monitoring.prometheus_text(info), nl=False)
    else:
        click.echo(store_status.as_text(info))
    if max_lag is not None and (lagging := store_status.lag_error(info, max_lag)) is not None:
        raise lagging


def _nagios(config: Config, warn_lag: int, crit_lag: int) -> None:
    try:
        check = monitoring.nagios_check(store_status.status(config, clock()), warn_lag, crit_lag)
    except IdbStatsError as exc:
        check = monitoring.nagios_unknown(str(exc))
    click.echo(check.line())
    sys.exit(check.state)


@cli.command()
@config_options
@click.option("--since", type=DATE, help="Changes made on or after this (UTC) date.")
@click.option("--recordset", "recordset_id", help="Changes of this recordset only.")
@format_option("text", "json", help_text="json: one JSON record per line, every block.")
def changes(config: Config, since: date | None, recordset_id: str | None, fmt: str) -> None:
    """Every change to published numbers: when a published day was republished with different
    counts or totals, the old and new figures per block, the reason and the run."""
    with open_store(config) as store:
        records = store.changes(since, recordset_id)
    if fmt == "json":
        with writing(sys.stdout):
            write_ndjson(records, sys.stdout)
        return
    for record in records:
        click.echo(changes_ledger.as_text(record))


@cli.command("verify")
@config_options
@publishes_metrics
@range_options
@click.option("--sample", type=click.IntRange(1), help="Check this many days of the range, picked at random.")
@click.option(
    "--repair", is_flag=True, help="Republish differing days, rebuild divergent totals, then verify again."
)
@format_option("text", "json", help_text="json: every difference as a JSON line, then the summary.")
@click.option("--lock-timeout", type=SECONDS, help="Seconds to wait for another run's lock (--repair).")
@click.option(
    "--include-adopted",
    "include_adopted",
    type=DATE,
    multiple=True,
    help="--repair: also republish this adopted day (the original's history; repeatable).",
)
def verify_command(
    config: Config,
    first: date | None,
    last: date | None,
    sample: int | None,
    repair: bool,
    fmt: str,
    lock_timeout: float | None,
    include_adopted: tuple[date, ...],
) -> None:
    """Recompute published days from the telemetry and compare them with the store.

    Every document field by field, totals against the sum of the daily documents, and the
    ledger against the documents. Days whose source rows are gone are unverifiable and never
    touched. Adopted days that differ only by the events at exactly midnight (which the original
    counted for no day) are listed as midnight_only, not as differences; --repair leaves adopted
    days alone unless named with --include-adopted. Exit 0 when all agree, 11 on any difference,
    10 when only unverifiable days remain.
    """
    if include_adopted and not repair:
        raise click.UsageError("--include-adopted names adopted days for --repair; add --repair")
    from . import verify

    as_json = fmt == "json"
    bar = ProgressBar("days")
    tracker = Tracker(sinks=[bar, status_sink("days")])

    def on_difference(difference: verify.Difference, after_repair: bool) -> None:
        if as_json:
            click.echo(json.dumps({**difference.as_dict(), "after_repair": after_repair}, default=str))

    def on_day(result: verify.DayResult, done: int, total: int, after_repair: bool) -> None:
        bar.clear()
        log.info(
            "%s%s: %s, %s documents%s",
            "after repair: " if after_repair else "",
            result.harvest_date,
            result.outcome,
            result.documents,
            f", {plural(result.differences, 'difference')}" if result.differences else "",
            extra={
                "fields": {
                    "harvest_date": result.harvest_date.isoformat(),
                    "outcome": result.outcome,
                    "differences": result.differences,
                }
            },
        )
        tracker.update(done, str(result.harvest_date), total)

    outcome = verify.verify(
        config, first, last, sample, repair, on_difference, lock_timeout, on_day, frozenset(include_adopted)
    )
    checked = len(outcome.report.days) + (len(outcome.after_repair.days) if outcome.after_repair else 0)
    log.info(
        "verify: %s checked in %s",
        plural(checked, "day"),
        duration_text(tracker.elapsed()),
        extra={"fields": {"days": checked, "seconds": f"{tracker.elapsed():.3f}"}},
    )
    if as_json:
        click.echo(json.dumps(outcome.summary()))
    else:
        for line in outcome.text_lines():
            click.echo(line)
    if (error := outcome.error()) is not None:
        raise error


@cli.command("forget-day")
@config_options
@publishes_metrics
@click.argument("harvest_date", type=DATE)
@click.option("--lock-timeout", type=SECONDS, help="Seconds to wait for another run's lock.")
def forget_day(config: Config, harvest_date: date, lock_timeout: float | None) -> None:
    """Remove a harvest date from the store: its documents, its share of the totals and its
    completion mark (recorded in the run ledger). The day is missing again: the next catch-up
    redoes it once its window has closed. Also undoes a day published before it was over.
    A day the store does not hold (never published, or already forgotten) is left alone and
    said so, exit 0: forgetting is safe to repeat.
    """
    removed = forget.forget_day(config, harvest_date, lock_timeout)
    if removed is None:
        click.echo(
            f"{harvest_date} is not published (no documents, no completion mark): nothing to forget "
            "(`idb-stats status` shows the complete days)"
        )
    else:
        click.echo(f"forgot {harvest_date}: {plural(removed, 'document')} removed, totals adjusted")


@cli.command("check-config")
@config_options
@click.option(
    "--connect",
    is_flag=True,
    help="Also connect to every configured endpoint and check its tables and privileges.",
)
@format_option("json", "text", help_text="How the configuration is printed (text: one setting a line).")
def check_config(config: Config, connect: bool, fmt: str) -> None:
    """Validate the configuration (every problem at once) and print it with secrets redacted.

    With --connect: reach the telemetry database, the store and the ingest database (when
    api.dsn is set), check the tables the commands read and the privileges they need, and list
    every failure, one line each (exit 3).
    """
    described = config.describe()
    if fmt == "json":
        click.echo(json.dumps(described, indent=2))
    else:
        for section, values in described.items():
            for name, value in values.items():
                click.echo(f"{section}.{name} = {json.dumps(value)}")
    for warning in config.warnings:
        click.echo(f"warning: {warning}", err=True)
    if connect:
        results = checks.run_all(config)
        for result in results:
            click.echo(f"{'ok  ' if result.ok else 'FAIL'} {result.endpoint}: {result.detail}")
        failed = [r for r in results if not r.ok]
        if failed:
            raise ChecksFailed(
                f"check-config --connect: {plural(len(failed), 'check')} failed (FAIL above)"
            )


@cli.command("sample-config")
@click.option("--markdown", is_flag=True, help="The settings table of docs/configuration.md instead.")
@click.option(
    "--commands",
    is_flag=True,
    help="The command reference docs/commands.md instead (from every command's help).",
)
def sample_config(markdown: bool, commands: bool) -> None:
    """Print a configuration file listing every setting with its default and help (the source of
    deploy/config.example.toml), with --markdown the settings table of docs/configuration.md, or
    with --commands the command reference docs/commands.md."""
    from .settings_docs import sample_config as sample
    from .settings_docs import settings_table

    if markdown and commands:
        raise click.UsageError("--markdown or --commands, not both")
    click.echo(commands_reference() if commands else settings_table() if markdown else sample(), nl=False)


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def commands_reference() -> str:
    """docs/commands.md: every command's usage, help and options, as `--help` shows them."""
    root = click.Context(cli, info_name="idb-stats")
    lines = [
        "# Commands",
        "",
        "Generated by `idb-stats sample-config --commands` from the commands' own help (a test keeps",
        "it current); `idb-stats COMMAND --help` shows the same. Options that every command takes:",
        "",
        "| option | what |",
        "|---|---|",
    ]
    for param in cli.get_params(root):
        if (record := param.get_help_record(root)) is not None:
            lines.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
    lines += ["", "Environment: `IDB_STATS_CONFIG` (the configuration file), `IDB_STATS_LOG_FORMAT`; the"]
    lines += ["settings' own variables are in [configuration.md](configuration.md)."]
    for name in cli.list_commands(root):
        command = cli.commands[name]
        context = click.Context(command, info_name=name, parent=root)
        lines += ["", f"## idb-stats {name}", "", "```", command.get_usage(context), "```", ""]
        lines += [inspect.cleandoc(command.help or ""), "", "| option | what |", "|---|---|"]
        for param in command.get_params(context):
            if param.name in ("verbose", "quiet", "log_format") or "--help" in getattr(param, "opts", ()):
                continue  # in the table above
            if (record := param.get_help_record(context)) is not None:
                lines.append(f"| `{_cell(record[0])}` | {_cell(record[1])} |")
    lines += ["", "## Exit codes", "", "| code | meaning |", "|---|---|"]
    lines += [f"| {int(code)} | {_cell(meaning)} |" for code, meaning in sorted(EXIT_CODE_MEANINGS.items())]
    return "\n".join(lines) + "\n"


@cli.command()
@click.option("--days", type=click.IntRange(1, 60), default=7, show_default=True, help="Days of telemetry.")
@click.option(
    "--rows-per-day",
    type=click.IntRange(1),
    default=3000,
    show_default=True,
    help="Synthetic telemetry rows (search, view, download events) per day.",
)
@click.option("--keep-running", is_flag=True, help="Leave the server up and print its DSN until Ctrl-C.")
def demo(days: int, rows_per_day: int, keep_running: bool) -> None:
    """Start a throwaway PostgreSQL, load a week of synthetic telemetry, collect it, print totals."""
    from . import demo as demo_module

    demo_module.run(days, rows_per_day, keep_running, click.echo)


@cli.command("api-stats")
@config_options
@publishes_metrics
@click.option("--lock-timeout", type=SECONDS, help="Seconds to wait for another run's lock.")
def api_stats(config: Config, lock_timeout: float | None) -> None:
    """Snapshot how many records and media records each recordset holds now (run daily).

    Counts the ingest database's uuids table (not deleted, by parent); a second run on the same
    UTC day replaces that day's snapshot.
    """
    summary = apistats.api_stats(config, lock_timeout, clock())
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
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False),
    envvar=CONFIG_ENV,
    show_envvar=True,
    help="TOML configuration file [default: /etc/idb-stats/config.toml if present]; only [notify] is read.",
)
def notify_failure(unit: str, config_path: str | None) -> None:
    """Log a failed unit's result and run the [notify] command (used by idb-stats-notify@.service).

    Exits with the command's exit code (3 when the config file cannot be read).
    """
    from .notify import notify

    code = notify(unit, config_path)
    if code:
        sys.exit(code)


# Every command defined above gets -v/-q/--log-format after its name and the exit-code table in
# its help: keep this after the last command.
for _command in cli.commands.values():
    logging_options(_command)
    _command.epilog = EXIT_CODES_HELP


def _show(exc: click.ClickException, exit_code: int) -> None:
    """click's own message, or under --log-format json a log line like every other error."""
    if json_logging():
        log.error("%s", exc.format_message(), extra={"fields": {"exit_code": int(exit_code)}})
    else:
        exc.show()


def run(args: Sequence[str] | None = None, at: Clock = SYSTEM_CLOCK) -> int:
    """Run one command line, planning with this clock; its exit code (errors logged, as documented)."""
    try:
        cli.main(args, standalone_mode=False, obj=at)
    except click.exceptions.Abort:
        click.echo("aborted", err=True)
        return ExitCode.UNEXPECTED
    except click.FileError as exc:  # an -o or input path that cannot be opened: a usage mistake
        _show(exc, ExitCode.USAGE)
        return ExitCode.USAGE
    except click.ClickException as exc:
        _show(exc, exc.exit_code)
        return exc.exit_code
    except OutputClosed:
        # Quiet, and nothing left to flush into the closed pipe at exit.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitCode.OUTPUT_CLOSED
    except IdbStatsError as exc:
        log.debug("where it was raised", exc_info=True)
        log.error("%s", exc, extra={"fields": {"exit_code": int(exc.exit_code)}})
        if not logging.getLogger("idb_stats").handlers:
            click.echo(f"error: {exc}", err=True)
        return exc.exit_code
    except Interrupted as exc:
        log.error(
            "%s: stopped (a run in progress is recorded as interrupted)",
            exc,
            extra={"fields": {"exit_code": exc.exit_code}},
        )
        if not logging.getLogger("idb_stats").handlers:
            click.echo(f"error: {exc}: stopped", err=True)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except Exception:
        log.exception("unexpected error")
        return ExitCode.UNEXPECTED
    return 0


def main() -> None:
    interrupt.install()
    code = run()
    if code:
        sys.exit(code)


if __name__ == "__main__":  # pragma: no cover
    main()
