"""The configuration: one declaration per setting, and everything derived from it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from idb_stats.cli import cli
from idb_stats.config import SETTINGS, Config, load_config
from idb_stats.errors import ConfigError
from idb_stats.settings_docs import sample_config, settings_table

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
