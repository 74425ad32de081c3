"""One configuration pipeline: defaults < TOML file < environment < flags, then one validation.

Validation collects every problem before failing, so an operator fixes a config in one pass.
Secrets (DSN passwords, API keys) come from the file, credential files or the environment —
never from argv — and are redacted wherever a value is shown.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from .errors import ConfigError

DEFAULT_CONFIG_PATH = Path("/etc/idb-stats/config.toml")
STORE_KINDS = ("postgres", "elasticsearch", "opensearch")

ENVIRONMENT = {
    "IDB_STATS_SOURCE_DSN": "source.dsn",
    "IDB_STATS_STORE": "store.kind",
    "IDB_STATS_STORE_URL": "store.url",
    "IDB_STATS_API_DSN": "api.dsn",
}

# Files looked up in $CREDENTIALS_DIRECTORY (systemd LoadCredential=), by setting they fill.
CREDENTIALS = {
    "source-dsn": "source.dsn",
    "store-url": "store.url",
    "store-api-key": "store.api_key",
    "store-password": "store.password",
    "api-dsn": "api.dsn",
}

# setting -> (type, default); the schema of the TOML file, section.key.
SCHEMA: dict[str, tuple[type, Any]] = {
    "source.dsn": (str, None),
    "source.dsn_file": (str, None),
    "source.stats_table": (str, "stats"),
    "source.queries_table": (str, "queries"),
    "source.timezone": (str, "UTC"),
    "store.kind": (str, "postgres"),
    "store.url": (str, None),
    "store.schema": (str, "idb_stats"),
    "store.daily_index": (str, "stats"),
    "store.totals_index": (str, "stats-totals"),
    "store.runs_index": (str, "stats-runs"),
    "store.api_index": (str, "stats-api"),
    "store.username": (str, None),
    "store.password": (str, None),
    "store.password_file": (str, None),
    "store.api_key": (str, None),
    "store.api_key_file": (str, None),
    "store.ca_bundle": (str, None),
    "store.verify_certs": (bool, True),
    "store.request_timeout": (float, 60.0),
    "store.bulk_max_retries": (int, 6),
    "store.bulk_chunk_bytes": (int, 8_000_000),
    "collect.max_skipped_share": (float, 0.01),
    "collect.breakdown_limit": (int, 0),
    "collect.max_catch_up_days": (int, 31),
    "collect.lock_timeout": (float, 0.0),
    "collect.jobs": (int, 1),
    "api.dsn": (str, None),
    "api.dsn_file": (str, None),
    "api.uuids_table": (str, "uuids"),
    "notify.command": (str, None),
}

SECRET_SETTINGS = {"source.dsn", "store.url", "store.password", "store.api_key", "api.dsn"}
# A table or schema name: letters, digits and _, not starting with a digit; tables may be
# schema-qualified. Names are quoted wherever they are used, so case is kept ("Stats" is not
# stats) and reserved words (user, order) work.
_NAME = r"[A-Za-z_][A-Za-z0-9_]{0,62}"
_IDENTIFIER = re.compile(rf"^{_NAME}$")
_TABLE_NAME = re.compile(rf"^({_NAME}\.)?{_NAME}$")
_INDEX_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]*$")


class Secret(str):
    """A string that never shows itself in repr, logs or tracebacks."""

    def __repr__(self) -> str:
        return "Secret('***')"


def redact(value: str | None) -> str:
    """A DSN or URL with any password replaced by ***."""
    if not value:
        return ""
    value = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", value)
    return re.sub(r"(password\s*=\s*)('[^']*'|\S+)", r"\1***", value, flags=re.IGNORECASE)


@dataclass(frozen=True)
class Config:
    source_dsn: str
    stats_table: str
    queries_table: str
    timezone: str
    store: str
    store_url: str | None
    store_schema: str
    daily_index: str
    totals_index: str
    runs_index: str
    api_index: str
    store_username: str | None
    store_password: str | None
    store_api_key: str | None
    ca_bundle: str | None
    verify_certs: bool
    request_timeout: float
    bulk_max_retries: int
    bulk_chunk_bytes: int
    max_skipped_share: float
    breakdown_limit: int
    max_catch_up_days: int
    lock_timeout: float
    jobs: int
    api_dsn: str | None
    uuids_table: str
    notify_command: str | None
    config_path: str | None = None

    @property
    def store_dsn(self) -> str:
        """For the PostgreSQL store: its DSN, by default the source database."""
        return self.store_url or self.source_dsn

    @property
    def zone(self) -> ZoneInfo:
        return ZoneInfo(self.timezone)

    def describe(self) -> dict[str, Any]:
        """The effective settings with every secret redacted, for check-config."""
        shown: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in ("store_password", "store_api_key"):
                value = "***" if value else None
            elif f.name in ("source_dsn", "store_url", "api_dsn"):
                value = redact(value)
            shown[f.name] = value
        return shown


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


def _coerce(setting: str, value: Any, problems: list[str]) -> Any:
    kind, _ = SCHEMA[setting]
    if value is None:
        return None
    if kind is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0", "yes", "no"):
            return value.lower() in ("true", "1", "yes")
    elif kind is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return int(value)
    elif kind is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):
            try:
                return float(value)
            except ValueError:
                pass
    elif isinstance(value, str):
        return value
    problems.append(f"{setting}: expected {kind.__name__}, got {value!r}")
    return None


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Mapping[str, Any] | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Build the configuration from every layer and validate it, reporting all problems at once."""
    environ = os.environ if environ is None else environ
    problems: list[str] = []
    raw: dict[str, Any] = {}

    config_path: Path | None = Path(path) if path else None
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    if config_path is not None:
        from_file = _read_file(config_path, problems)
        for setting in from_file:
            if setting not in SCHEMA:
                problems.append(f"{config_path}: unknown setting {setting!r}")
        raw.update({k: v for k, v in from_file.items() if k in SCHEMA})

    # Credential files (systemd LoadCredential=) rank with the file: the environment still wins.
    credentials_dir = environ.get("CREDENTIALS_DIRECTORY")
    if credentials_dir:
        for name, setting in CREDENTIALS.items():
            candidate = Path(credentials_dir) / name
            # install.sh creates every credential file; an empty one means "not used".
            if candidate.is_file() and (secret := _read_secret_file(str(candidate), setting, problems)):
                raw[setting] = secret
    for file_setting in ("source.dsn_file", "store.password_file", "store.api_key_file", "api.dsn_file"):
        if raw.get(file_setting):
            raw[file_setting.removesuffix("_file")] = _read_secret_file(
                raw[file_setting], file_setting, problems
            )

    for variable, setting in ENVIRONMENT.items():
        if environ.get(variable):
            raw[setting] = environ[variable]
    for setting, value in (overrides or {}).items():
        if value is not None:
            raw[setting] = value

    values = {s: _coerce(s, raw[s], problems) if s in raw else default for s, (_, default) in SCHEMA.items()}
    values = {s: Secret(v) if s in SECRET_SETTINGS and isinstance(v, str) else v for s, v in values.items()}
    _validate(values, problems)
    if problems:
        raise ConfigError(problems)
    return Config(
        source_dsn=values["source.dsn"],
        stats_table=values["source.stats_table"],
        queries_table=values["source.queries_table"],
        timezone=values["source.timezone"],
        store=values["store.kind"],
        store_url=values["store.url"],
        store_schema=values["store.schema"],
        daily_index=values["store.daily_index"],
        totals_index=values["store.totals_index"],
        runs_index=values["store.runs_index"],
        api_index=values["store.api_index"],
        store_username=values["store.username"],
        store_password=values["store.password"],
        store_api_key=values["store.api_key"],
        ca_bundle=values["store.ca_bundle"],
        verify_certs=values["store.verify_certs"],
        request_timeout=values["store.request_timeout"],
        bulk_max_retries=values["store.bulk_max_retries"],
        bulk_chunk_bytes=values["store.bulk_chunk_bytes"],
        max_skipped_share=values["collect.max_skipped_share"],
        breakdown_limit=values["collect.breakdown_limit"],
        max_catch_up_days=values["collect.max_catch_up_days"],
        lock_timeout=values["collect.lock_timeout"],
        jobs=values["collect.jobs"],
        api_dsn=values["api.dsn"],
        uuids_table=values["api.uuids_table"],
        notify_command=values["notify.command"],
        config_path=str(config_path) if config_path else None,
    )


def _validate(v: dict[str, Any], problems: list[str]) -> None:
    if not v["source.dsn"]:
        problems.append(
            "source.dsn: no telemetry database given (set [source] dsn or dsn_file, IDB_STATS_SOURCE_DSN, "
            "or a source-dsn credential)"
        )
    for setting in ("source.stats_table", "source.queries_table", "api.uuids_table"):
        if v[setting] is not None and not _TABLE_NAME.match(v[setting]):
            problems.append(
                f"{setting}: {v[setting]!r} is not a table name (letters, digits, _; optionally schema.name)"
            )
    if v["store.schema"] is not None and not _IDENTIFIER.match(v["store.schema"]):
        problems.append(
            f"store.schema: {v['store.schema']!r} is not a schema name (letters, digits, _; no dot)"
        )
    if v["source.timezone"] is not None:
        try:
            ZoneInfo(v["source.timezone"])
        except (ZoneInfoNotFoundError, ValueError):
            problems.append(f"source.timezone: unknown time zone {v['source.timezone']!r}")
    kind = v["store.kind"]
    if kind is not None and kind not in STORE_KINDS:
        problems.append(f"store.kind: {kind!r} is not one of {', '.join(STORE_KINDS)}")
    if kind in ("elasticsearch", "opensearch"):
        url = v["store.url"] or ""
        if not re.match(r"^https?://", url):
            problems.append(f"store.url: the {kind} store needs an http(s):// URL, got {redact(url)!r}")
        for setting in ("daily_index", "totals_index", "runs_index", "api_index"):
            name = v[f"store.{setting}"]
            if name is not None and not _INDEX_NAME.match(name):
                problems.append(f"store.{setting}: {name!r} is not a valid index name (lowercase, no spaces)")
        if v["store.password"] and not v["store.username"]:
            problems.append("store.password: a password needs store.username")
        if v["store.ca_bundle"] and not Path(v["store.ca_bundle"]).is_file():
            problems.append(f"store.ca_bundle: no such file {v['store.ca_bundle']}")
    share = v["collect.max_skipped_share"]
    if share is not None and not 0 <= share <= 1:
        problems.append(f"collect.max_skipped_share: must be between 0 and 1, got {share}")
    for setting in ("collect.breakdown_limit", "store.bulk_max_retries"):
        if v[setting] is not None and v[setting] < 0:
            problems.append(f"{setting}: must be 0 or more, got {v[setting]}")
    for setting in ("collect.max_catch_up_days", "collect.jobs", "store.bulk_chunk_bytes"):
        if v[setting] is not None and v[setting] < 1:
            problems.append(f"{setting}: must be 1 or more, got {v[setting]}")
    for setting in ("collect.lock_timeout", "store.request_timeout"):
        if v[setting] is not None and v[setting] < 0:
            problems.append(f"{setting}: must be 0 or more, got {v[setting]}")
