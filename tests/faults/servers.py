"""Private Redis and PostgreSQL servers for the fault tests, and checks on the workers that use them.

Each server listens on a free 127.0.0.1 port with its data inside a temporary directory, and can be
stopped, started, killed or restarted with a chosen downtime on the same port and data. Every wait has
a deadline. `missing()` says why a server cannot run here (the conftest turns it into a skip).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TypeVar

import redis
import sqlalchemy as sa

from retrainer.demo.processes import CeleryProcess
from tests.support import need

PG_BIN = Path("/usr/lib/postgresql/15/bin")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, timeout: float, what: str, interval: float = 0.05) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise TimeoutError(f"timed out after {timeout}s waiting for {what}")


def tail(path: Path, chars: int = 3000) -> str:
    return path.read_text(errors="replace")[-chars:] if path.exists() else f"({path} does not exist)"


class RedisServer:
    """`redis-server` with AOF persistence as in production (appendfsync everysec). A graceful stop
    (SIGTERM: Redis shuts down and fsyncs the AOF) keeps every write. So does `kill()` in practice: Redis
    writes the AOF before it replies, so only a machine crash (not simulated) loses the last second."""

    service = "redis-server"

    def __init__(self, root: Path):
        self.root = root
        self.dir = root / "redis"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.log = self.dir / "redis.log"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def missing() -> str | None:
        return None if shutil.which("redis-server") else "no redis-server on PATH"

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(host="127.0.0.1", port=self.port, db=db, socket_timeout=2, socket_connect_timeout=2)

    def ping(self) -> bool:
        client = self.client()
        try:
            return bool(client.ping())
        except redis.RedisError:  # refused, or still loading the AOF
            return False
        finally:
            client.close()

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self, timeout: float = 15) -> None:
        assert not self.alive(), "redis-server is already running"
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.dir),
             "--appendonly", "yes", "--appendfsync", "everysec", "--logfile", str(self.log)],
            stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        _wait(lambda: self.ping() or not self.alive(), timeout, f"redis-server on port {self.port}")
        if not self.alive():
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}:\n{tail(self.log)}")

    def stop(self, timeout: float = 15) -> None:
        """Graceful: SIGTERM makes Redis flush the AOF and exit; SIGKILL only if it hangs."""
        self._signal(signal.SIGTERM, timeout)

    def kill(self) -> None:
        """SIGKILL, as a crashed process: no shutdown, the next start replays the AOF."""
        self._signal(signal.SIGKILL, 10)

    def close(self) -> None:
        self.stop()

    def restart(self, down_seconds: float = 1.0, kill: bool = False) -> None:
        """Stop (or kill), stay down `down_seconds`, start on the same port and data, wait for PING."""
        self.kill() if kill else self.stop()
        time.sleep(down_seconds)
        self.start()

    def _signal(self, sig: signal.Signals, timeout: float) -> None:
        if not self.alive():
            return
        assert self.proc is not None
        self.proc.send_signal(sig)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)


class PostgresServer:
    """A PostgreSQL 15 cluster of its own (trust auth, fsync on). initdb and pg_ctl refuse to run as
    root, so as root they run as the `postgres` user on a directory it owns."""

    service = "PostgreSQL 15"

    def __init__(self, root: Path):
        self.root = root
        self.data = root / "data"
        self.sockets = root / "sockets"
        self.log = root / "postgres.log"
        self.port = free_port()

    @staticmethod
    def missing() -> str | None:
        if not (PG_BIN / "initdb").exists():
            return f"no PostgreSQL 15 binaries in {PG_BIN}"
        if os.geteuid() == 0 and not shutil.which("runuser"):
            return "running as root and no runuser to run initdb/pg_ctl as postgres"
        return None

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def init(self) -> None:
        self.sockets.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
            shutil.chown(self.sockets, "postgres", "postgres")
        # --no-sync: only the initial files skip fsync; the running server keeps fsync on.
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "-A", "trust", "--no-sync", "-E", "UTF8",
                  timeout=120)
        with (self.data / "postgresql.conf").open("a") as conf:
            conf.write(f"\nport = {self.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{self.sockets}'\nshared_buffers = 32MB\n")

    def start(self) -> None:
        if not (self.data / "PG_VERSION").exists():
            self.init()
        self._run("pg_ctl", "start", "-w", "-t", "60", "-D", str(self.data), "-l", str(self.log), timeout=90)

    def stop(self, mode: str = "fast") -> None:
        """`fast`: sessions are rolled back and closed, then a clean shutdown; `immediate`: like a crash
        (the next start replays the WAL)."""
        assert mode in ("smart", "fast", "immediate"), mode
        self._run("pg_ctl", "stop", "-w", "-t", "60", "-m", mode, "-D", str(self.data), timeout=90)

    def restart(self, down_seconds: float = 10.0, mode: str = "fast") -> None:
        self.stop(mode)
        time.sleep(down_seconds)
        self.start()

    def close(self) -> None:
        if self.running():
            self.stop("immediate")  # nothing in it is worth a checkpoint

    def running(self) -> bool:
        return self._run("pg_ctl", "status", "-D", str(self.data), check=False).returncode == 0

    def execute(self, sql: str) -> None:
        """One statement outside a transaction (CREATE/DROP DATABASE) on the `postgres` database."""
        engine = sa.create_engine(self.url(), isolation_level="AUTOCOMMIT", poolclass=sa.pool.NullPool,
                                  connect_args={"connect_timeout": 5})
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql(sql)
        finally:
            engine.dispose()

    def _run(self, tool: str, *args: str, timeout: float = 30, check: bool = True) -> subprocess.CompletedProcess[str]:
        command = [str(PG_BIN / tool), *args]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        done = subprocess.run(command, cwd=self.root, capture_output=True, text=True, timeout=timeout, check=False)
        if check and done.returncode != 0:
            raise RuntimeError(f"{tool} {' '.join(args)} exited with {done.returncode}:\n{done.stdout}{done.stderr}"
                               f"\n--- server log ---\n{tail(self.log)}")
        return done


Server = TypeVar("Server", RedisServer, PostgresServer)


@contextmanager
def private(kind: type[Server]) -> Iterator[Server]:
    """A started server of this kind in a temporary directory; stopped and removed afterwards, whatever
    happened. Absent binaries skip the test (fail it with RETRAINER_REQUIRE_SERVICES=1)."""
    if problem := kind.missing():
        need(kind.service, problem)
    root = Path(tempfile.mkdtemp(prefix=f"rt-faults-{kind.__name__.lower()}-"))
    server = kind(root)
    try:
        server.start()
        yield server
    finally:
        server.close()
        shutil.rmtree(root, ignore_errors=True)


def unhealthy(*workers: CeleryProcess) -> list[str]:
    """What is wrong with these workers: dead, or "Unrecoverable error" in the log; each with an excerpt
    (from that line on, or the log's tail)."""
    problems = []
    for worker in workers:
        output, dead = worker.output(), not worker.alive()
        fatal = output.find("Unrecoverable error")
        if dead or fatal >= 0:
            state = f"exited with {worker.proc.returncode}" if dead else "is alive but logged an unrecoverable error"
            excerpt = output[fatal:fatal + 3000] if fatal >= 0 else output[-3000:]
            problems.append(f"worker {worker.log} {state}:\n{excerpt}")
    return problems


def log_lines(workers: list[CeleryProcess], needles: list[str], limit: int = 40) -> list[str]:
    """The first `limit` lines of the workers' logs naming any of `needles` (task ids, say)."""
    lines = (line for w in workers for line in w.output().splitlines() if any(n in line for n in needles))
    return [line[:300] for _, line in zip(range(limit), lines, strict=False)]
