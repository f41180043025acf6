"""Real servers for the test suite: a throwaway Redis-protocol server (the embedded broker's
bundled binary, or valkey-server/redis-server on PATH) and, for Postgres tests, a throwaway
PostgreSQL cluster (initdb + pg_ctl). ``DOMAINJOBS_TEST_REDIS_URL`` /
``DOMAINJOBS_TEST_POSTGRES_URL`` point the suite at servers you run yourself instead."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_server_binary() -> str | None:
    """The bundled binary of the embedded extra if installed, else one on PATH."""
    try:
        from domainjobs.brokers.embedded import find_server_binary  # type: ignore[attr-defined]

        found = find_server_binary()
        if found:
            return str(found)
    except ImportError:
        pass
    return shutil.which("valkey-server") or shutil.which("redis-server")


def wait_for(predicate, timeout: float = 15.0, interval: float = 0.02, what: str = "condition"):
    """Poll ``predicate`` until it returns a truthy value or ``timeout`` passes."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(interval)


def _ping(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def redis_server() -> Iterator[str]:
    """Start a fresh, non-persistent Redis-protocol server on a free port; yield its URL."""
    binary = redis_server_binary()
    if binary is None:
        raise RuntimeError(
            "no Redis-protocol server found: install domainjobs[embedded], or redis-server, "
            "or set DOMAINJOBS_TEST_REDIS_URL"
        )
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="dj-redis-")
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            workdir,
            "--daemonize",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(lambda: _ping(port) or process.poll() is not None, what="redis server")
        if process.poll() is not None:
            raise RuntimeError(f"{binary} exited with {process.returncode}")
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
        shutil.rmtree(workdir, ignore_errors=True)


def postgres_binaries() -> Path | None:
    """The bin directory of a PostgreSQL server installation (Debian's layout or PATH)."""
    for candidate in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (candidate / "initdb").exists():
            return candidate
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


@contextmanager
def postgres_server() -> Iterator[str]:
    """A throwaway PostgreSQL cluster on a free port; yield a postgresql:// URL."""
    bindir = postgres_binaries()
    if bindir is None:
        raise RuntimeError("no PostgreSQL server found: apt-get install postgresql")
    workdir = Path(tempfile.mkdtemp(prefix="dj-pg-"))
    data = workdir / "data"
    run_as: list[str] = []
    env = dict(os.environ)
    if os.geteuid() == 0:  # initdb refuses root: run the cluster as 'nobody'
        shutil.chown(workdir, "nobody")
        run_as = ["runuser", "-u", "nobody", "--"]
    port = free_port()
    subprocess.run(
        [
            *run_as,
            str(bindir / "initdb"),
            "-D",
            str(data),
            "-U",
            "postgres",
            "-A",
            "trust",
            "--no-sync",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    subprocess.run(
        [
            *run_as,
            str(bindir / "pg_ctl"),
            "-D",
            str(data),
            "-w",
            "-l",
            str(workdir / "log"),
            "-o",
            f"-p {port} -k {workdir} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ],
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        yield f"postgresql://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run(
            [*run_as, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
            check=False,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        shutil.rmtree(workdir, ignore_errors=True)
