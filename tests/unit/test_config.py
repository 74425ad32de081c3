"""The configuration: one declaration per setting, and everything derived from it."""

from __future__ import annotations

import json
import math
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import run
from hypothesis import given, settings
from hypothesis import strategies as st

from idb_stats.cli import cli
from idb_stats.config import SETTINGS, Config, load_config
from idb_stats.errors import ConfigError
from idb_stats.planning import last_closed_day
from idb_stats.settings_docs import sample_config, settings_table
from idb_stats.stores.transport import RetryingRequests

ROOT = Path(__file__).resolve().parents[2]
# The CLI in-process, with none of this machine's idb-stats settings.
ENV: dict[str, str | None] = {
    k: None for k in os.environ if k.startswith("IDB_STATS_") or k == "CREDENTIALS_DIRECTORY"
}


def test_the_checked_in_sample_and_table_are_generated_from_the_declarations() -> None:
    assert (ROOT / "deploy" / "config.example.toml").read_text() == sample_config(), (
        "run: idb-stats sample-config > deploy/config.example.toml"
    )
    assert (ROOT / "docs" / "configuration.md").read_text() == settings_table(), (
        "run: idb-stats sample-config --markdown > docs/configuration.md"
    )


def test_the_sample_loads_and_gives_the_defaults(tmp_path: Path) -> None:
    sample = tmp_path / "config.toml"
    sample.write_text(sample_config())
    config = load_config(sample, {"source.dsn": "dbname=telemetry"}, environ={})
    for declared in SETTINGS:
        if declared.key != "source.dsn":
            assert getattr(config, declared.attribute) == declared.default, declared.key


def test_every_setting_is_declared_once_and_documented() -> None:
    keys = [s.key for s in SETTINGS]
    assert len(keys) == len(set(keys))
    table = settings_table()
    for declared in SETTINGS:
        assert f"`{declared.key}`" in table and declared.help
    # Every Config field but the bookkeeping ones is a declared setting.
    assert {s.attribute for s in SETTINGS} | {"config_path", "warnings"} == set(Config.__dataclass_fields__)


def test_layers_file_credentials_environment_flags(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "source-dsn").write_text("dbname=from-credential\n")
    (credentials / "store-api-key").write_text("")  # empty: not used
    key_file = tmp_path / "key"
    key_file.write_text("key-from-file\n")
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        '[source]\ndsn = "dbname=from-file"\n'
        f'[store]\nkind = "opensearch"\nurl = "http://file:9200"\napi_key_file = "{key_file}"\n'
        "[collect]\njobs = 3\n"
    )
    environ = {"CREDENTIALS_DIRECTORY": str(credentials), "IDB_STATS_STORE_URL": "http://env:9200"}
    config = load_config(config_file, {"collect.jobs": 2}, environ=environ)
    assert config.source_dsn == "dbname=from-credential"  # credential over file
    assert config.store_url == "http://env:9200"  # environment over file
    assert config.store_api_key == "key-from-file"  # the empty credential file is not used
    assert config.jobs == 2  # flag over file
    assert "key-from-file" not in repr(config) and "from-credential" not in repr(config)
    shown = config.describe()
    assert shown["store"]["api_key"] == "***" and shown["collect"]["jobs"] == 2


def test_every_problem_is_reported_at_once(tmp_path: Path) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(
        '[source]\ntimezone = "Mars/Olympus"\nstats_table = "drop table"\nqueries_file = "x"\n'
        '[store]\nkind = "mongo"\n[collect]\nmax_skipped_share = 3\njobs = "many"\nbreakdown_limit = -1\n'
    )
    with pytest.raises(ConfigError) as raised:
        load_config(config_file, environ={})
    problems = "\n".join(raised.value.problems)
    for needle in (
        "Mars/Olympus",
        "drop table",
        "unknown setting 'source.queries_file'",
        "'mongo' is not one of postgres",
        "collect.max_skipped_share: must be at most 1",
        "collect.jobs: expected int",
        "collect.breakdown_limit: must be 0 or more",
        "source.dsn: no telemetry database",
    ):
        assert needle in problems
    assert len(raised.value.problems) == 8


def test_store_specific_settings_are_checked_only_for_their_store() -> None:
    bad_index = {"source.dsn": "dbname=t", "store.daily_index": "Bad Name"}
    assert load_config(overrides=bad_index, environ={}).daily_index == "Bad Name"  # unused by postgres
    with pytest.raises(ConfigError, match=r"store\.daily_index"):
        load_config(
            overrides={**bad_index, "store.kind": "opensearch", "store.url": "http://o:9200"}, environ={}
        )


@pytest.mark.parametrize(
    ("line", "warned"),
    [
        ('[store]\nurl = "postgresql://stats:s3cret@db.example.org/stats"\n', "store.url"),
        ("[store]\nurl = \"host=db dbname=stats password='a b'\"\n", "store.url"),
        ('[store]\nkind = "opensearch"\nurl = "https://search:9200"\napi_key = "abc"\n', "store.api_key"),
        ('[source]\ndsn = "host=db dbname=t user=u password=pw"\n', "source.dsn"),
        ('[store]\nurl = "postgresql://stats@db.example.org/stats"\n', None),
        ('[source]\ndsn = "host=db dbname=t"\n', None),
    ],
)
def test_a_secret_written_into_the_configuration_file_is_warned_about_by_check_config(
    tmp_path: Path, line: str, warned: str | None
) -> None:
    config_file = tmp_path / "config.toml"
    config_file.write_text(line)
    overrides = {} if "[source]" in line else {"source.dsn": "host=db dbname=t"}
    config = load_config(config_file, overrides, environ={})
    if warned is None:
        assert config.warnings == ()
    else:
        (warning,) = config.warnings
        assert warning.startswith(f"{warned} in {config_file} holds a password or key: move it to")
        assert "s3cret" not in warning and "pw" not in warning.split("docs/")[0].split("move")[0]
    env = ENV if "[source]" in line else {**ENV, "IDB_STATS_SOURCE_DSN": "host=db dbname=t"}
    result = CliRunner().invoke(cli, ["check-config", "--config", str(config_file)], env=env)
    assert result.exit_code == 0, result.output
    assert ("warning: " in result.stderr) == (warned is not None)
    assert "s3cret" not in result.output


def test_the_same_secret_from_a_credential_file_or_a_file_setting_is_not_warned_about(tmp_path: Path) -> None:
    secret = tmp_path / "source-dsn"
    secret.write_text("host=db dbname=t password=s3cret\n")
    config_file = tmp_path / "config.toml"
    config_file.write_text(f'[source]\ndsn_file = "{secret}"\n')
    assert load_config(config_file, environ={}).warnings == ()
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    (credentials / "store-url").write_text("postgresql://stats:s3cret@db.example.org/stats\n")
    from_credential = load_config(
        None, {"source.dsn": "dbname=t"}, environ={"CREDENTIALS_DIRECTORY": str(credentials)}
    )
    assert from_credential.store_url == "postgresql://stats:s3cret@db.example.org/stats"
    assert from_credential.warnings == ()


# --- numbers and durations: every value validates to one the code can honour, or is refused ------

NUMERIC = [s for s in SETTINGS if s.kind in (int, float, timedelta)]
NOW = datetime(2026, 12, 6, 8, 0, tzinfo=UTC)


def toml_value(value: object) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "nan"
    if isinstance(value, float) and math.isinf(value):
        return "inf" if value > 0 else "-inf"
    if isinstance(value, str):
        return json.dumps(value)  # printable ASCII: a TOML basic string as well
    return repr(value)


def honoured(config: Config) -> None:
    """Each number used where the code uses it: nothing overflows, nothing waits forever. Settings
    of another store kind are not validated (nor used)."""
    search = config.store == "opensearch"
    for declared in NUMERIC:
        if config.store not in declared.stores:
            continue
        value = getattr(config, declared.attribute)
        number = value.total_seconds() if isinstance(value, timedelta) else value
        assert math.isfinite(number), declared.key
        assert declared.minimum is None or number >= declared.minimum, declared.key
        assert declared.maximum is None or number <= declared.maximum, declared.key
    last_closed_day(NOW, config.zone, config.settle)  # settle = "100000000h" overflowed here
    if not search:
        for seconds in (config.statement_timeout, config.lock_wait_timeout):  # in ms, a 32-bit int
            assert int(seconds * 1000) <= 2**31 - 1
        return
    with socket.socket() as sock:
        sock.settimeout(config.request_timeout)  # as the search clients' sockets take it
    requests = RetryingRequests(None, "opensearch", config.bulk_max_retries, config.bulk_chunk_bytes)  # type: ignore[arg-type]
    waits: list[float] = []
    requests.sleep = waits.append
    requests.backoff(config.bulk_max_retries)  # the longest backoff a run may reach
    assert waits[0] <= 10.0


NUMBERS = st.one_of(
    st.floats(allow_nan=True, allow_infinity=True),
    st.integers(-(2**70), 2**70),
    st.sampled_from(["nan", "inf", "-inf", "1e400", "NaN", "²", "7", " 12 ", "0x10", "1_000"]),
)
DURATIONS = st.one_of(
    st.from_regex(r"[0-9]{1,25}(\.[0-9]{1,12})?\s?(s|sec|min|h|d)", fullmatch=True),
    st.sampled_from(["100000000h", "1000000000d", "366d", "367d", "31622400s", "nan d", "1e9d", "-1d"]),
    st.text(st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=12),
)


@settings(max_examples=300, deadline=None)
@given(st.data())
def test_any_number_or_duration_is_honoured_or_refused(
    tmp_path_factory: pytest.TempPathFactory, data: st.DataObject
) -> None:
    chosen = data.draw(st.lists(st.sampled_from(NUMERIC), min_size=1, max_size=4, unique=True))
    values = {s.key: data.draw(DURATIONS if s.kind is timedelta else NUMBERS, label=s.key) for s in chosen}
    sections: dict[str, list[str]] = {}
    for key, value in values.items():
        section, name = key.split(".")
        sections.setdefault(section, []).append(f"{name} = {toml_value(value)}")
    path = tmp_path_factory.mktemp("config") / "config.toml"
    path.write_text("".join(f"[{s}]\n" + "\n".join(lines) + "\n" for s, lines in sections.items()))
    store = {"store.kind": "opensearch", "store.url": "http://o:9200"} if data.draw(st.booleans()) else {}
    try:
        config = load_config(path, {"source.dsn": "dbname=t", **store}, environ={})
    except ConfigError as exc:
        assert exc.exit_code == 3
        for problem in exc.problems:
            assert "\n" not in problem and problem.split(":")[0] in values, problem
        return
    honoured(config)


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        ("[collect]\nmax_skipped_share = nan", "collect.max_skipped_share: must be a finite number, got nan"),
        ("[collect]\nlock_timeout = nan", "collect.lock_timeout: must be a finite number, got nan"),
        ("[collect]\nlock_timeout = inf", "collect.lock_timeout: must be a finite number, got inf"),
        ('[collect]\nsettle = "100000000h"', "collect.settle: must be at most 366d, got '100000000h'"),
        ("[collect]\njobs = 1000", "collect.jobs: must be at most 64, got 1000"),
        (
            '[store]\nkind = "opensearch"\nurl = "http://o:9200"\nbulk_max_retries = 5000',
            "store.bulk_max_retries: must be at most 100, got 5000",
        ),
        (
            "[store]\nstatement_timeout = 1e10",
            "store.statement_timeout: must be at most 2147483, got 10000000000.0",
        ),
    ],
)
def test_check_config_refuses_what_it_cannot_honour_in_one_line(
    tmp_path: Path, line: str, problem: str
) -> None:
    config = tmp_path / "config.toml"
    config.write_text(line + "\n")
    result = run("check-config", "--config", str(config), env={"IDB_STATS_SOURCE_DSN": "dbname=t"})
    assert result.returncode == 3, result.stderr
    assert problem in result.stderr and "Traceback" not in result.stderr
    assert sum(1 for shown in result.stderr.splitlines() if shown.strip().startswith("- ")) == 1


def test_a_lock_timeout_flag_must_be_a_finite_number() -> None:
    for value in ("nan", "inf", "-1"):
        result = run("import", "--lock-timeout", value, os.devnull)
        assert result.returncode == 2 and "--lock-timeout" in result.stderr, result.stderr
