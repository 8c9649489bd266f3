"""A throwaway PostgreSQL cluster for tests: installed from Debian's packages if missing, run
from a temporary folder on a free loopback port, always stopped afterwards."""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class PostgresUnavailable(Exception):
    """PostgreSQL cannot be installed or started here; the message says why."""


def _bin_dir() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), key=lambda p: int(p.split("/")[4]))
    return Path(found[-1]).parent if found else None


def ensure_installed() -> Path:
    """The server's bin folder, installing Debian's ``postgresql`` package if needed (as root)."""
    bin_dir = _bin_dir()
    if bin_dir:
        return bin_dir
    if os.geteuid() != 0 or not shutil.which("apt-get"):
        raise PostgresUnavailable("PostgreSQL is not installed and apt-get as root is not available")
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    install = ["apt-get", "install", "-y", "-q", "--no-install-recommends", "postgresql"]
    if subprocess.run(install, env=env, capture_output=True).returncode != 0:
        subprocess.run(["apt-get", "update", "-q"], env=env, capture_output=True)
        result = subprocess.run(install, env=env, capture_output=True, text=True)
        if result.returncode != 0:
            raise PostgresUnavailable(f"apt-get install postgresql failed: {result.stderr.strip()[-300:]}")
    bin_dir = _bin_dir()
    if not bin_dir:
        raise PostgresUnavailable("postgresql was installed but initdb is not under /usr/lib/postgresql")
    return bin_dir


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Cluster:
    """A running throwaway cluster: its URL, and what a test does to the server (restart, stop)."""

    def __init__(self, bin_dir: Path, as_postgres: list[str], root: Path, port: int, database: str) -> None:
        self.bin_dir, self.as_postgres, self.root, self.port = bin_dir, as_postgres, root, port
        self.data, self.log = root / "data", root / "log"
        self.url = f"postgresql+psycopg2://postgres@127.0.0.1:{port}/{database}"
        self.running = False

    def run(self, *cmd: str) -> None:
        result = subprocess.run([*self.as_postgres, *cmd], capture_output=True, text=True, timeout=120)
        if result.returncode != 0:
            raise PostgresUnavailable(f"{Path(cmd[0]).name} failed: {(result.stderr or result.stdout).strip()[-400:]}")

    def start(self) -> None:
        self.run(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-l", str(self.log), "-w", "-o",
                 f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200",
                 "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        """Stop the server (``fast``: clients are disconnected, as in a restart)."""
        if self.running:
            subprocess.run([*self.as_postgres, str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", mode, "-w",
                            "stop"], capture_output=True, timeout=60)
            self.running = False

    def restart(self) -> None:
        self.stop()
        self.start()


@contextmanager
def cluster(database: str = "hessian_lr") -> Iterator[Cluster]:
    """A fresh cluster on a free loopback port, always stopped and removed afterwards."""
    bin_dir = ensure_installed()
    as_postgres: list[str] = []
    if os.geteuid() == 0:  # the server refuses to run as root
        as_postgres = ["runuser", "-u", "postgres", "--"]
    root = Path(tempfile.mkdtemp(prefix="hessian-lr-pg-"))
    if as_postgres:
        shutil.chown(root, "postgres")
    server = Cluster(bin_dir, as_postgres, root, _free_port(), database)
    try:
        server.run(str(bin_dir / "initdb"), "-D", str(server.data), "-U", "postgres", "-A", "trust", "--no-sync")
        server.start()
        server.run(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(server.port), "-U", "postgres", database)
        yield server
    finally:
        server.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextmanager
def temporary_cluster(database: str = "hessian_lr") -> Iterator[str]:
    """Yield ``postgresql+psycopg2://postgres@127.0.0.1:PORT/DATABASE`` of a fresh cluster."""
    with cluster(database) as server:
        yield server.url
