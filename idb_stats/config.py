"""One configuration pipeline: defaults < TOML file < credential files < environment < flags.

Every setting is declared once, as a field of `Config` carrying a `Setting`: its TOML key, default,
environment variable, credential file, whether it is secret, its bounds and its help text. The
file schema, the validation of single values, the redaction in `check-config`, the sample
configuration (`deploy/config.example.toml`) and the settings table (`docs/configuration.md`) are
all derived from those declarations (settings_docs.py; `idb-stats sample-config` writes the last
two). Rules that tie several settings together are in `_validate_together`. Redaction itself is
secrets.py. The module is long because the declarations are: one block per setting.

Validation collects every problem before failing, so an operator fixes a config in one pass.
Secrets (DSN passwords, API keys) come from the file, credential files or the environment —
never from argv — and are redacted wherever a value is shown.
"""

from __future__ import annotations

import math
import os
import re
import shlex
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import timedelta
from pathlib import Path
from typing import Any, get_type_hints
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError
from .secrets import Secret, dsn_problem, has_password, redact

DEFAULT_CONFIG_PATH = Path("/etc/idb-stats/config.toml")
STORE_KINDS = ("postgres", "elasticsearch", "opensearch")
SEARCH_STORE_KINDS = ("elasticsearch", "opensearch")
# Aggregation engines (collect.engine): stream.py and source.py.
ENGINES = ("stream", "sql")

# A table or schema name: letters, digits and _, not starting with a digit, at most 63 bytes
# (PostgreSQL's limit); tables may be schema-qualified. Names are quoted wherever they are used,
# so case is kept ("Stats" is not stats) and reserved words (user, order) work.
NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
SQL_NAME = re.compile(rf"^({NAME}\.)?{NAME}$")
INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")

# PostgreSQL holds statement_timeout and lock_timeout in milliseconds as a 32-bit integer.
PG_TIMEOUT_MAX_SECONDS = (2**31 - 1) // 1000
# The clients' sockets take a timeout only within the platform's time_t (1e10 s failed); a request
# waiting a day is already one nobody is watching.
REQUEST_TIMEOUT_MAX_SECONDS = 86_400
# Retries back off 0.1 s * 2**attempt (capped at 10 s), so 100 retries already wait over 15 minutes.
MAX_RETRIES = 100
# As --jobs: worker processes on one machine.
MAX_JOBS = 64
# A harvest date is collected `settle` after its window closed: a year is past any sense (and a
# duration past the calendar's years overflowed date arithmetic: settle = "100000000h").
MAX_SETTLE_SECONDS = 366 * 86_400

SECTION_HELP = {
    "source": "The telemetry database (only ever read).",
    "store": "Where statistics are written: PostgreSQL (default), Elasticsearch or OpenSearch.",
    "collect": "How collect-stats runs.",
    "api": "The ingest database read by api-stats.",
    "notify": "Failure alerts (idb-stats-notify@.service).",
    "monitoring": "Metrics for monitors (see docs/operations.md, Monitoring).",
    "reports": "What report and monthly-report show, and where monthly-report's files go.",
}


@dataclass(frozen=True)
class Setting:
    """How one Config field is set, checked, shown and documented."""

    key: str  # "section.name" in the TOML file
    help: str
    env: str | None = None  # environment variable
    credential: str | None = None  # file name in $CREDENTIALS_DIRECTORY (systemd LoadCredential=)
    secret: bool = False  # redacted wherever shown; refused on the command line
    from_file: bool = False  # may also be given as "<key>_file": the path of a file holding it
    choices: tuple[str, ...] = ()
    # Bounds of a number; of a duration, in seconds. Every number must also be finite.
    minimum: float | None = None
    maximum: float | None = None
    pattern: re.Pattern[str] | None = None
    pattern_help: str = ""
    example: str | None = None  # shown, commented out, in the sample when there is no default
    stores: tuple[str, ...] = STORE_KINDS  # the store kinds it applies to (validation, docs)


def _setting(key: str, default: Any = None, **declaration: Any) -> Any:
    return field(default=default, metadata={"setting": Setting(key, **declaration)})


def _index_setting(key: str, default: str, help: str) -> Any:
    pattern_help = "a valid index name (lowercase, no spaces)"
    return _setting(
        key, default, help=help, pattern=INDEX_NAME, pattern_help=pattern_help, stores=SEARCH_STORE_KINDS
    )


def _secret_setting(key: str, credential: str, help: str, **declaration: Any) -> Any:
    """A secret read from a credential file, a `<key>_file` or the configuration, never argv."""
    example = f'"/etc/idb-stats/{credential}"'
    return _setting(
        key, help=help, credential=credential, secret=True, from_file=True, example=example, **declaration
    )


def _table_setting(key: str, default: str, help: str) -> Any:
    pattern_help = "a plain SQL name (letters, digits, _; schema.name)"
    return _setting(key, default, help=help, pattern=SQL_NAME, pattern_help=pattern_help)


@dataclass(frozen=True, kw_only=True)
class Config:
    source_dsn: str = _secret_setting(
        "source.dsn", "source-dsn", "libpq DSN or URL of the telemetry database.", env="IDB_STATS_SOURCE_DSN"
    )
    stats_table: str = _table_setting(
        "source.stats_table", "stats", "Telemetry events table (schema.name allowed)."
    )
    queries_table: str = _table_setting(
        "source.queries_table", "queries", "Search queries table, joined for query hashes."
    )
    query_text_column: str = _setting(
        "source.query_text_column",
        "query",
        help="Column of the queries table holding the query behind each hash (shown by report).",
        pattern=re.compile(rf"^{NAME}$"),
        pattern_help="a column name (letters, digits, _)",
    )
    timezone: str = _setting(
        "source.timezone", "UTC", help="Time zone the `date` column is read in; days start at its midnight."
    )
    store: str = _setting(
        "store.kind", "postgres", help="Statistics store.", env="IDB_STATS_STORE", choices=STORE_KINDS
    )
    store_url: str | None = _setting(
        "store.url",
        help="PostgreSQL: a DSN (default: the telemetry database); Elasticsearch/OpenSearch: a URL.",
        env="IDB_STATS_STORE_URL",
        credential="store-url",
        secret=True,
        example='"https://search.example.org:9200"',
    )
    store_schema: str = _setting(
        "store.schema",
        "idb_stats",
        help="The schema holding the statistics tables.",
        pattern=re.compile(rf"^{NAME}$"),
        pattern_help="a schema name (letters, digits, _; no dot)",
        stores=("postgres",),
    )
    daily_index: str = _index_setting("store.daily_index", "stats", "Daily documents index.")
    totals_index: str = _index_setting("store.totals_index", "stats-totals", "Totals documents index.")
    runs_index: str = _index_setting("store.runs_index", "stats-runs", "Run ledger and day markers index.")
    api_index: str = _index_setting(
        "store.api_index", "stats-api", "Recordset size snapshots index (api-stats)."
    )
    publishers_index: str = _index_setting(
        "store.publishers_index",
        "stats-publishers",
        "Publisher page views index (one document per publisher and day).",
    )
    store_username: str | None = _setting(
        "store.username",
        help="User for basic authentication, with store.password.",
        example='"idb-stats"',
        stores=SEARCH_STORE_KINDS,
    )
    store_password: str | None = _secret_setting(
        "store.password", "store-password", "Password for store.username.", stores=SEARCH_STORE_KINDS
    )
    store_api_key: str | None = _secret_setting(
        "store.api_key",
        "store-api-key",
        "API key (instead of username and password).",
        stores=SEARCH_STORE_KINDS,
    )
    ca_bundle: str | None = _setting(
        "store.ca_bundle",
        help="CA certificates to verify the store's TLS certificate.",
        example='"/etc/ssl/certs/search-ca.pem"',
        stores=SEARCH_STORE_KINDS,
    )
    verify_certs: bool = _setting(
        "store.verify_certs", True, help="Verify TLS certificates.", stores=SEARCH_STORE_KINDS
    )
    request_timeout: float = _setting(
        "store.request_timeout",
        60.0,
        help="Seconds one store request may take.",
        minimum=0,
        maximum=REQUEST_TIMEOUT_MAX_SECONDS,
        stores=SEARCH_STORE_KINDS,
    )
    bulk_max_retries: int = _setting(
        "store.bulk_max_retries",
        6,
        help="Retries of a bulk request on 429/502/503/504 or a dropped connection.",
        minimum=0,
        maximum=MAX_RETRIES,
        stores=SEARCH_STORE_KINDS,
    )
    bulk_chunk_bytes: int = _setting(
        "store.bulk_chunk_bytes",
        8_000_000,
        help="Largest bulk request body.",
        minimum=1,
        stores=SEARCH_STORE_KINDS,
    )
    lock_lease: float = _setting(
        "store.lock_lease",
        60.0,
        help="Seconds the run lock's document stays valid unless its run renews it (every third of "
        "that): a run that died frees the lock when its lease expires.",
        minimum=3,
        maximum=86400,
        stores=SEARCH_STORE_KINDS,
    )
    statement_timeout: float = _setting(
        "store.statement_timeout",
        3600.0,
        help="Seconds one store statement may run before the run fails (exit 5); 0: no limit.",
        minimum=0,
        maximum=PG_TIMEOUT_MAX_SECONDS,
        stores=("postgres",),
    )
    lock_wait_timeout: float = _setting(
        "store.lock_wait_timeout",
        300.0,
        help="Seconds a store statement may wait for a lock before the run fails (exit 5); 0: no limit.",
        minimum=0,
        maximum=PG_TIMEOUT_MAX_SECONDS,
        stores=("postgres",),
    )
    max_skipped_share: float = _setting(
        "collect.max_skipped_share",
        0.01,
        help="Largest share of a day's rows that may break the rules before the day is refused (exit 6).",
        minimum=0,
        maximum=1,
    )
    breakdown_limit: int = _setting(
        "collect.breakdown_limit",
        0,
        help="Keep the top N of each breakdown list plus one __other__ entry; 0: unlimited.",
        minimum=0,
    )
    max_catch_up_days: int = _setting(
        "collect.max_catch_up_days",
        31,
        help="Longest span the catch-up runs without --force-span (exit 9).",
        minimum=1,
    )
    lock_timeout: float = _setting(
        "collect.lock_timeout", 0.0, help="Seconds a second run waits for the run lock (exit 7).", minimum=0
    )
    jobs: int = _setting(
        "collect.jobs", 1, help="Days aggregated at once (worker processes).", minimum=1, maximum=MAX_JOBS
    )
    engine: str = _setting(
        "collect.engine",
        "stream",
        help=(
            'How a day is aggregated. "stream": its rows read once (one COPY) into DuckDB in this '
            "process, bounded by the day's cells and spilling to the temporary directory beyond "
            '160 MB; "sql": three aggregations in the telemetry database, which then does most of '
            "the work (docs/performance.md). Both give the same documents."
        ),
        choices=ENGINES,
    )
    recheck_days: int = _setting(
        "collect.recheck_days",
        7,
        help="Published days the catch-up re-checks for late, purged or changed rows (0: none).",
        minimum=0,
    )
    settle: timedelta = _setting(  # noqa: RUF009 - _setting returns the field, not a shared default
        "collect.settle",
        timedelta(0),
        help='How long after its window closes a harvest date may be collected ("30min", "2h", "1d").',
        maximum=MAX_SETTLE_SECONDS,
    )
    api_dsn: str | None = _secret_setting(
        "api.dsn",
        "api-dsn",
        "libpq DSN of the ingest database (api-stats; names and publishers for show, report and "
        "monthly-report).",
        env="IDB_STATS_API_DSN",
    )
    uuids_table: str = _table_setting("api.uuids_table", "uuids", "The ingest database's uuids table.")
    recordsets_table: str = _table_setting(
        "api.recordsets_table",
        "recordsets",
        "The ingest database's recordsets table (uuid, name, publisher_uuid): names and publishers.",
    )
    publishers_table: str = _table_setting(
        "api.publishers_table", "publishers", "The ingest database's publishers table (uuid, name)."
    )
    notify_command: str | None = _setting(
        "notify.command",
        help="Shell command run when a unit fails (IDB_STATS_FAILED_UNIT, IDB_STATS_FAILED_RESULT set).",
        example="'logger -t idb-stats-alert \"$IDB_STATS_FAILED_UNIT failed: $IDB_STATS_FAILED_RESULT\"'",
    )
    metrics_textfile: str | None = _setting(
        "monitoring.textfile",
        help="After every collect-stats, api-stats, import, forget-day, adopt and verify, however it "
        "ends, write `status --format prometheus` to this file atomically, for node_exporter's "
        "textfile collector (a *.prom path in its --collector.textfile.directory).",
        env="IDB_STATS_METRICS_TEXTFILE",
        pattern=re.compile(r"^/.*[^/]\.prom$"),
        pattern_help="an absolute path ending in .prom (the textfile collector reads only those)",
        example='"/var/lib/prometheus/node-exporter/idb_stats.prom"',
    )
    query_text: bool = _setting(
        "reports.query_text",
        True,
        help="Show the query text behind each hash in report's top queries; false: hashes only "
        "(where query text may be private).",
    )
    query_text_length: int = _setting(
        "reports.query_text_length",
        200,
        help="Characters of a query's text shown before it is cut (with …).",
        minimum=20,
        maximum=10_000,
    )
    reports_command: str | None = _setting(
        "reports.command",
        help="Run for each file monthly-report writes, split into words like a shell would but run "
        "without one: {file}, {publisher_id} and {publisher_name} are replaced in each word "
        '(publisher "portal" for the whole portal\'s files).',
        example="'/usr/local/bin/send-report {publisher_id} {file}'",
    )
    config_path: str | None = None  # where the file layer came from (not a setting)
    # Valid but unwise, said by check-config: a secret written into the configuration file itself.
    warnings: tuple[str, ...] = ()

    @property
    def store_dsn(self) -> str:
        """For the PostgreSQL store: its DSN, by default the source database."""
        return self.store_url or self.source_dsn

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> dict[str, dict[str, Any]]:
        """The effective settings by TOML section and key, every secret redacted, for check-config."""
        shown: dict[str, dict[str, Any]] = {}
        for declared in SETTINGS:
            value = getattr(self, declared.attribute)
            if declared.secret and value:
                value = redact(value) if declared.key.endswith((".dsn", ".url")) else "***"
            elif isinstance(value, timedelta):
                value = format_duration(value)
            section, name = declared.key.split(".")
            shown.setdefault(section, {})[name] = value
        return shown


@dataclass(frozen=True)
class DeclaredSetting(Setting):
    attribute: str = ""
    kind: type = str
    default: Any = None
    optional: bool = False


def _declarations() -> tuple[DeclaredSetting, ...]:
    hints = get_type_hints(Config)
    declared = []
    for f in fields(Config):
        if "setting" not in f.metadata:
            continue
        hint = hints[f.name]
        optional = type(None) in getattr(hint, "__args__", ())
        kind = next(a for a in getattr(hint, "__args__", (hint,)) if a is not type(None))
        base: Setting = f.metadata["setting"]
        declared.append(
            DeclaredSetting(
                **{g.name: getattr(base, g.name) for g in fields(Setting)},
                attribute=f.name,
                kind=kind,
                default=f.default,
                optional=optional,
            )
        )
    return tuple(declared)


SETTINGS = _declarations()
BY_KEY = {s.key: s for s in SETTINGS}


def _flatten(data: Mapping[str, Any], problems: list[str], origin: str) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for section, values in data.items():
        if not isinstance(values, Mapping):
            problems.append(f"{origin}: [{section}] must be a table")
            continue
        for key, value in values.items():
            flat[f"{section}.{key}"] = value
    return flat


def _read_file(path: Path, problems: list[str]) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return _flatten(tomllib.load(fh), problems, str(path))
    except OSError as exc:
        problems.append(f"cannot read config file {path}: {exc.strerror}")
    except tomllib.TOMLDecodeError as exc:
        problems.append(f"{path}: not valid TOML: {exc}")
    return {}


def _read_secret_file(path: str, setting: str, problems: list[str]) -> str | None:
    try:
        return Path(path).read_text().strip()
    except OSError as exc:
        problems.append(f"{setting}: cannot read {path}: {exc.strerror}")
        return None


def _coerce(declared: DeclaredSetting, value: Any, problems: list[str]) -> Any:
    kind = declared.kind
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        # ASCII digits only: str.isdigit() also takes "²", which int() refuses.
        if isinstance(value, str) and INTEGER.match(value):
            return int(value)
    elif kind is float:
        number = _float(value)
        if number is not None and math.isfinite(number):
            return number
        if number is not None:  # NaN passes every comparison with a bound; infinity is no number of seconds
            problems.append(f"{declared.key}: must be a finite number, got {value!r:.60}")
            return declared.default
    elif kind is timedelta:
        if isinstance(value, timedelta):
            return value
        seconds = duration_seconds(value)
        if seconds is not None and seconds > min(declared.maximum or math.inf, LONGEST_DURATION):
            # Refused here, before a timedelta of it overflows (settle = "1000000000d").
            shown = format_duration(timedelta(seconds=min(declared.maximum or math.inf, LONGEST_DURATION)))
            problems.append(f"{declared.key}: must be at most {shown}, got {value!r:.60}")
            return declared.default
        if seconds is not None:
            return timedelta(seconds=seconds)
        problems.append(f'{declared.key}: {value!r:.60} is not a duration like "30min", "2h", "90s" or "1d"')
        return declared.default
    elif isinstance(value, str):
        return Secret(value) if declared.secret else value
    problems.append(f"{declared.key}: expected {kind.__name__}, got {value!r:.60}")
    return declared.default


# An integer as text (environment variables, flags): at most 18 digits, so int() never meets
# Python's 4,300-digit limit and the value fits the 64-bit integers TOML has.
INTEGER = re.compile(r"^\s*-?[0-9]{1,18}\s*$")


def _float(value: Any) -> float | None:
    """A number from TOML or text ("nan" and "inf" included: the caller refuses them), or None."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        try:
            return float(value)
        except OverflowError:  # an int beyond any float
            return None
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


DURATION_UNITS = {"s": 1, "sec": 1, "min": 60, "h": 3600, "d": 86400}
DURATION = re.compile(r"^\s*([0-9]{1,30}(?:\.[0-9]{1,30})?)\s*(s|sec|min|h|d)\s*$")
# A timedelta holds less than a billion days; durations are refused well before (a year for settle).
LONGEST_DURATION = 999_999 * 86_400


def duration_seconds(text: Any) -> float | None:
    """'30min', '2h', '90s', '1d' in seconds; None when the text is not a duration."""
    match = DURATION.match(text) if isinstance(text, str) else None
    if match is None:
        return None
    return float(match[1]) * DURATION_UNITS[match[2]]


def format_duration(duration: timedelta) -> str:
    seconds = duration.total_seconds()
    for unit in ("d", "h", "min"):
        if seconds and seconds % DURATION_UNITS[unit] == 0:
            return f"{seconds / DURATION_UNITS[unit]:g}{unit}"
    return f"{seconds:g}s"


def _file_layer(path: Path, problems: list[str], warnings: list[str]) -> dict[str, Any]:
    """Settings from the TOML file; `<key>_file` entries are read into their setting."""
    raw: dict[str, Any] = {}
    for key, value in _read_file(path, problems).items():
        declared = BY_KEY.get(key.removesuffix("_file"))
        if declared is None or (key.endswith("_file") and not declared.from_file):
            problems.append(f"{path}: unknown setting {key!r}")
        elif key.endswith("_file"):
            if not isinstance(value, str):
                problems.append(f"{key}: expected a file path, got {value!r}")
            elif (secret := _read_secret_file(value, key, problems)) is not None:
                raw[declared.key] = secret
        else:
            raw[key] = value
            if declared.secret and isinstance(value, str) and _holds_secret(declared, value):
                warnings.append(_secret_in_file(path, declared))
    return raw


def _holds_secret(declared: Setting, value: str) -> bool:
    """A DSN or URL holds one only with a password in it; a key or password setting always does."""
    return has_password(value) if declared.key.endswith((".dsn", ".url")) else bool(value)


def _secret_in_file(path: Path, declared: Setting) -> str:
    """The configuration file is readable by the service group and goes into backups and
    bug reports; credential files are root's and reach only the service."""
    where = f"the {declared.credential} credential file" if declared.credential else "a credential file"
    spelled = f" or {declared.key.split('.')[1]}_file" if declared.from_file else ""
    return (
        f"{declared.key} in {path} holds a password or key: move it to {where} "
        f"(/etc/idb-stats/credentials/{declared.credential or '...'}){spelled}, see docs/operations.md"
    )


def _credentials_layer(directory: str, problems: list[str]) -> dict[str, Any]:
    raw: dict[str, Any] = {}
    for declared in SETTINGS:
        if declared.credential is None:
            continue
        candidate = Path(directory) / declared.credential
        # install.sh creates every credential file; an empty one means "not used".
        if candidate.is_file() and (secret := _read_secret_file(str(candidate), declared.key, problems)):
            raw[declared.key] = secret
    return raw


def load_notify_command(path: str | os.PathLike[str] | None = None) -> str | None:
    """Only [notify] command, from the file alone: an alert about a failed unit must go out even
    when the rest of the configuration is what is broken (or has no DSN yet)."""
    config_path: Path | None = Path(path) if path else None
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    if config_path is None:
        return None
    problems: list[str] = []
    command = _read_file(config_path, problems).get("notify.command")
    if command is not None and not isinstance(command, str):
        problems.append(f"{config_path}: notify.command must be a string")
    if problems:
        raise ConfigError(problems)
    return command


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration from every layer and validate it, reporting all problems at once."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    warnings: list[str] = []
    raw: dict[str, Any] = {}

    config_path: Path | None = Path(path) if path else None
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    if config_path is not None:
        raw.update(_file_layer(config_path, problems, warnings))
    # Credential files (systemd LoadCredential=) rank above the file: the environment still wins.
    credentials_dir = environ.get("CREDENTIALS_DIRECTORY")
    if credentials_dir and not os.access(credentials_dir, os.R_OK | os.X_OK):
        problems.append(
            f"$CREDENTIALS_DIRECTORY {credentials_dir}: not readable by this user (uid {os.getuid()}); "
            "run manual commands through idb-stats-as-service (in /opt/idb-stats/bin) or as root"
        )
    elif credentials_dir:
        raw.update(_credentials_layer(credentials_dir, problems))
    raw.update({s.key: environ[s.env] for s in SETTINGS if s.env and environ.get(s.env)})
    raw.update({key: value for key, value in (overrides or {}).items() if value is not None})

    values = {}
    for declared in SETTINGS:
        value = _coerce(declared, raw[declared.key], problems) if declared.key in raw else declared.default
        _check_value(declared, value, raw.get("store.kind", "postgres"), problems)
        values[declared.attribute] = value
    _validate_together(values, problems)
    _check_dsns(values, problems)
    if problems:
        raise ConfigError(problems)
    return Config(**values, config_path=str(config_path) if config_path else None, warnings=tuple(warnings))


def _check_value(declared: DeclaredSetting, value: Any, store_kind: str, problems: list[str]) -> None:
    """The rules of one setting, from its declaration."""
    if value is None or (store_kind in STORE_KINDS and store_kind not in declared.stores):
        return
    shown = (
        redact(value)
        if declared.secret
        else format_duration(value)
        if isinstance(value, timedelta)
        else value
    )
    if declared.choices and value not in declared.choices:
        problems.append(f"{declared.key}: {shown!r} is not one of {', '.join(declared.choices)}")
    if declared.pattern and not declared.pattern.match(value):
        problems.append(f"{declared.key}: {shown!r} is not {declared.pattern_help}")
    number = value.total_seconds() if isinstance(value, timedelta) else value
    if isinstance(number, float) and not math.isfinite(number):  # a float given as such by a caller
        problems.append(f"{declared.key}: must be a finite number, got {value}")
    elif declared.minimum is not None and number < declared.minimum:
        problems.append(f"{declared.key}: must be {_bound(declared, declared.minimum)} or more, got {shown}")
    elif declared.maximum is not None and number > declared.maximum:
        problems.append(f"{declared.key}: must be at most {_bound(declared, declared.maximum)}, got {shown}")


def _bound(declared: DeclaredSetting, bound: float) -> str:
    return format_duration(timedelta(seconds=bound)) if declared.kind is timedelta else f"{bound:.10g}"


def _validate_together(v: dict[str, Any], problems: list[str]) -> None:
    """Rules that involve more than one setting, or the world outside the file."""
    if v["reports_command"] is not None and (problem := command_problem(v["reports_command"])):
        problems.append(f"reports.command: {problem}")
    textfile = v["metrics_textfile"]
    if textfile and not Path(textfile).parent.is_dir():
        problems.append(f"monitoring.textfile: no such directory {Path(textfile).parent}")
    if not v["source_dsn"]:
        problems.append(
            "source.dsn: no telemetry database given (set [source] dsn or dsn_file, IDB_STATS_SOURCE_DSN, "
            "or a source-dsn credential)"
        )
    try:
        ZoneInfo(v["timezone"])
    except (ZoneInfoNotFoundError, ValueError):
        problems.append(f"source.timezone: unknown time zone {v['timezone']!r}")
    if v["store"] in SEARCH_STORE_KINDS:
        url = v["store_url"] or ""
        if not re.match(r"^https?://", url):
            problems.append(f"store.url: the {v['store']} store needs an http(s):// URL, got {redact(url)!r}")
        # Each role needs an index of its own: their templates would overwrite one another's mapping.
        roles: dict[str, list[str]] = {}
        for attribute in ("daily_index", "totals_index", "runs_index", "api_index", "publishers_index"):
            roles.setdefault(v[attribute], []).append(f"store.{attribute}")
        for name, settings in roles.items():
            if len(settings) > 1:
                problems.append(f"{' and '.join(settings)}: share index {name!r}; give each its own index")
        if v["store_password"] and not v["store_username"]:
            problems.append("store.password: a password needs store.username")
        if v["ca_bundle"] and not Path(v["ca_bundle"]).is_file():
            problems.append(f"store.ca_bundle: no such file {v['ca_bundle']}")


# What reports.command may name in its words (monthly.deliver fills them in).
COMMAND_PLACEHOLDERS = ("file", "publisher_id", "publisher_name")


def command_words(command: str) -> list[str]:
    """reports.command as the argv it runs (shell quoting rules, but no shell: no expansion)."""
    return shlex.split(command)


def command_problem(command: str) -> str | None:
    """Why a reports.command cannot run: quoting, an empty command, or an unknown {placeholder}."""
    try:
        words = command_words(command)
    except ValueError as exc:
        return f"cannot split it into words ({exc}); check its quotes"
    if not words:
        return "empty; leave it out to write the files only"
    for word in words:
        try:
            word.format(**dict.fromkeys(COMMAND_PLACEHOLDERS, ""))
        except (KeyError, IndexError, ValueError) as exc:
            named = ", ".join("{" + p + "}" for p in COMMAND_PLACEHOLDERS)
            return f"{word!r}: {exc!r} is not a placeholder; use {named} (double braces for a literal brace)"
    return None


def _check_dsns(v: dict[str, Any], problems: list[str]) -> None:
    """PostgreSQL DSNs libpq cannot parse (an unquoted space in a password, most often)."""
    dsns = {"source.dsn": v["source_dsn"], "api.dsn": v["api_dsn"]}
    if v["store"] == "postgres" and not re.match(r"^https?://", v["store_url"] or ""):
        dsns["store.url"] = v["store_url"]
    for key, dsn in dsns.items():
        if dsn and (problem := dsn_problem(key, dsn)):
            problems.append(problem)
