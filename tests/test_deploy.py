"""Operating the installed service: failure alerts end to end, manual commands with the
service's credentials (idb-stats-as-service), and what install.sh enables, stages and prints."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from helpers import HARVEST, load_week, run

ROOT = Path(__file__).resolve().parent.parent
WRAPPER = ROOT / "deploy" / "idb-stats-as-service"
INSTALL = ROOT / "deploy" / "install.sh"
CREDENTIALS = ("source-dsn", "store-url", "store-api-key", "store-password", "api-dsn")


# --- failure alerts ---------------------------------------------------------------------------


def test_notify_failure_runs_the_command_with_only_a_notify_section(tmp_path: Path) -> None:
    sent = tmp_path / "sent"
    config = tmp_path / "config.toml"
    # No DSN anywhere and a broken [source]: the alert must still go out.
    config.write_text(
        '[source]\ntimezone = "Mars/Olympus"\n[notify]\n'
        f'command = "echo \\"$IDB_STATS_FAILED_UNIT $IDB_STATS_FAILED_RESULT\\" > {sent}"\n'
    )
    result = run("notify-failure", "idb-stats-collect.service", "--config", str(config))
    assert result.returncode == 0, result.stderr
    unit, _, outcome = sent.read_text().strip().partition(" ")
    assert unit == "idb-stats-collect.service" and outcome  # "unknown" where systemctl cannot tell
    assert "idb-stats-collect.service failed" in result.stderr


def test_notify_failure_passes_the_command_exit_code_on(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    config.write_text('[notify]\ncommand = "exit 4"\n')
    result = run("notify-failure", "x.service", "--config", str(config))
    assert result.returncode == 4 and "notification command exited 4" in result.stderr


def test_notify_unit_loads_the_notify_credential_install_creates(tmp_path: Path) -> None:
    unit = (ROOT / "systemd" / "idb-stats-notify@.service").read_text()
    assert "ExecStart=/opt/idb-stats/venv/bin/idb-stats notify-failure %i" in unit
    assert "LoadCredential=notify:/etc/idb-stats/credentials/notify" in unit
    created = "for name in source-dsn store-url store-api-key store-password api-dsn notify; do"
    assert created in INSTALL.read_text()


# --- idb-stats-as-service --------------------------------------------------------------------

# Where systemd is not PID 1: stands in for systemd-run, doing what its options ask that matters
# here (copy each LoadCredential= file into a fresh $CREDENTIALS_DIRECTORY, run the command, pass
# its exit code back) and recording its own argv.
STAND_IN = """#!{python}
import os, shutil, sys, tempfile
args = sys.argv[1:]
with open({argv_log!r}, "a") as log:
    log.write("\\0".join(args) + "\\n")
options, command = args[: args.index("--")], args[args.index("--") + 1 :]
credentials = tempfile.mkdtemp()
for flag, value in zip(options, options[1:]):
    if flag == "-p" and value.startswith("LoadCredential="):
        name, path = value.removeprefix("LoadCredential=").split(":", 1)
        shutil.copy(path, os.path.join(credentials, name))
os.environ["CREDENTIALS_DIRECTORY"] = credentials
os.execv(command[0], command)
"""


def wrapper_env(tmp_path: Path, source_dsn: str) -> tuple[Path, dict[str, str], Path]:
    """A wrapper for a prefix holding this checkout's idb-stats, credentials in tmp_path."""
    prefix = tmp_path / "opt"
    (prefix / "venv" / "bin").mkdir(parents=True)
    (prefix / "venv" / "bin" / "idb-stats").symlink_to(Path(sys.executable).parent / "idb-stats")
    wrapper = tmp_path / "idb-stats-as-service"
    wrapper.write_text(WRAPPER.read_text().replace("prefix=/opt/idb-stats ", f"prefix={prefix} "))
    wrapper.chmod(0o755)
    credentials = tmp_path / "credentials"
    credentials.mkdir()
    for name in CREDENTIALS:
        (credentials / name).write_text(source_dsn + "\n" if name == "source-dsn" else "")
    argv_log = tmp_path / "argv"
    stand_in = tmp_path / "systemd-run"
    stand_in.write_text(STAND_IN.format(python=sys.executable, argv_log=str(argv_log)))
    stand_in.chmod(0o755)
    env = {
        **{k: v for k, v in os.environ.items() if not k.startswith("IDB_STATS_") and k != "JOURNAL_STREAM"},
        "IDB_STATS_CREDENTIALS": str(credentials),
        "IDB_STATS_SYSTEMD_RUN": str(stand_in),
    }
    return wrapper, env, argv_log


def test_wrapper_prints_the_systemd_run_command_line() -> None:
    shown = subprocess.run(
        ["bash", str(WRAPPER), "--print", "status", "--max-lag", "2"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    argv = shlex.split(shown)
    assert argv[:5] == ["systemd-run", "--pipe", "--wait", "--quiet", "--collect"]
    assert argv[argv.index("User=idb-stats") - 1 : argv.index("User=idb-stats") + 1] == [
        "-p",
        "User=idb-stats",
    ]
    for name in CREDENTIALS:
        assert f"LoadCredential={name}:/etc/idb-stats/credentials/{name}" in argv
    assert argv[argv.index("--") :] == ["--", "/opt/idb-stats/venv/bin/idb-stats", "status", "--max-lag", "2"]


def test_wrapper_runs_with_the_service_credentials_and_keeps_them_out_of_argv(
    dsn: str, tmp_path: Path
) -> None:
    load_week(dsn)
    assert run("collect-stats", "-d", str(HARVEST[0]), env={"IDB_STATS_SOURCE_DSN": dsn}).returncode == 0
    wrapper, env, argv_log = wrapper_env(tmp_path, dsn)
    ok = subprocess.run(
        [str(wrapper), "status", "--max-lag", "100000"], capture_output=True, text=True, env=env
    )
    assert ok.returncode == 0, ok.stderr
    assert f"last complete day:     {HARVEST[0]}" in ok.stdout
    lagging = subprocess.run(
        [str(wrapper), "status", "--max-lag", "1"], capture_output=True, text=True, env=env
    )
    assert lagging.returncode == 8  # the command's exit code comes back through the wrapper
    recorded = argv_log.read_text()
    assert recorded and dsn not in recorded and "dbname=" not in recorded


def test_wrapper_without_systemd_says_what_to_do() -> None:
    if Path("/run/systemd/system").is_dir():
        pytest.skip("systemd runs here: the wrapper would start a real unit")
    result = subprocess.run(["bash", str(WRAPPER), "status"], capture_output=True, text=True)
    assert result.returncode == 3
    assert "systemd is not running here" in result.stderr and "CREDENTIALS_DIRECTORY=" in result.stderr


# --- install.sh ------------------------------------------------------------------------------


def test_dry_run_is_honest(tmp_path: Path) -> None:
    prefix = tmp_path / "never"
    result = subprocess.run(
        ["bash", str(INSTALL), "--dry-run", "--prefix", str(prefix)],
        capture_output=True,
        text=True,
        check=True,
    )
    out = result.stdout
    assert not prefix.exists()
    assert "installed idb-stats" not in out and out.rstrip().endswith("(nothing was changed)")
    assert "chgrp root" not in out and "chgrp idb-stats" in out
    assert "would run: mkdir -p" in out
    assert not [line for line in out.splitlines() if line.startswith("+ ")]  # nothing was run


def stage(tmp_path: Path, *extra: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(INSTALL), "--root", str(tmp_path / "stage"), "--prefix", "/srv/idb", *extra],
        capture_output=True,
        text=True,
        check=True,
    )


def test_staging_tree_names_the_prefix_not_the_staging_path(tmp_path: Path) -> None:
    first = stage(tmp_path)
    venv = tmp_path / "stage/srv/idb/venv"
    assert (venv / "bin/idb-stats").read_text().splitlines()[0].startswith("#!/srv/idb/venv/bin/python")
    for script in (venv / "bin").iterdir():
        if script.is_file() and not script.is_symlink() and script.stat().st_size < 1_000_000:
            assert str(tmp_path) not in script.read_text(errors="replace"), script
    # The staged interpreter still runs the staged package.
    subprocess.run(
        [str(venv / "bin/python"), str(venv / "bin/idb-stats"), "--help"], check=True, capture_output=True
    )
    wrapper = (tmp_path / "stage/srv/idb/bin/idb-stats-as-service").read_text()
    assert "\nprefix=/srv/idb " in wrapper
    assert (tmp_path / "stage/etc/idb-stats/credentials/notify").exists()
    # No ingest DSN yet: only the collect timer is proposed.
    assert "systemctl enable --now idb-stats-collect.timer idb-stats-verify.timer\n" in first.stdout
    assert "check-config --connect &&" in first.stdout
    (tmp_path / "stage/etc/idb-stats/credentials/api-dsn").write_text("host=ingest dbname=idb\n")
    again = stage(tmp_path)
    assert (
        "systemctl enable --now idb-stats-collect.timer idb-stats-verify.timer idb-stats-api.timer "
        "idb-stats-monthly.timer\n" in again.stdout
    )


# --- the units ---------------------------------------------------------------------------------

STORE_UNITS = ("collect", "api", "verify", "backfill@", "monthly")


@pytest.mark.parametrize("name", STORE_UNITS)
def test_every_unit_that_reaches_the_store_loads_each_credential_the_wrapper_passes(name: str) -> None:
    unit = (ROOT / "systemd" / f"idb-stats-{name}.service").read_text()
    for credential in CREDENTIALS:
        if credential == "api-dsn" and name not in ("api", "monthly"):
            continue  # only api-stats and monthly-report read the ingest database
        assert f"LoadCredential={credential}:/etc/idb-stats/credentials/{credential}\n" in unit


@pytest.mark.parametrize(("name", "command"), [("collect", "collect-stats"), ("api", "api-stats")])
def test_the_timer_started_runs_wait_for_each_other_within_the_start_timeout(name: str, command: str) -> None:
    """collect (00:30) and api (01:00) each have up to 15 min of random delay: a long catch-up
    would fail the snapshot with exit 7 at once, and that day's snapshot cannot be taken later."""
    unit = (ROOT / "systemd" / f"idb-stats-{name}.service").read_text()
    (exec_start,) = [line for line in unit.splitlines() if line.startswith("ExecStart=")]
    argv = shlex.split(exec_start.removeprefix("ExecStart="))
    assert argv[1] == command and "--lock-timeout" in argv
    waited = float(argv[argv.index("--lock-timeout") + 1])
    (timeout,) = [line for line in unit.splitlines() if line.startswith("TimeoutStartSec=")]
    assert 1800 <= waited < float(timeout.removeprefix("TimeoutStartSec=").removesuffix("h")) * 3600


# --- packaging ---------------------------------------------------------------------------------


def test_the_wheel_builds_without_deprecation_warnings_and_carries_its_licence(tmp_path: Path) -> None:
    """setuptools' warnings about the package metadata turn into errors on a date it names (the
    licence table form: 2027-02-18); the build must not be living on borrowed time."""
    built = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-v", "--no-deps", "-w", str(tmp_path), str(ROOT)],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stdout[-2000:] + built.stderr[-2000:]
    output = (built.stdout + built.stderr).lower()
    assert "deprecat" not in output and "!!" not in output  # setuptools frames its warnings in !!
    (wheel,) = tmp_path.glob("idb_stats-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    assert "License-Expression: MIT" in metadata and "Classifier: " in metadata
