"""Run the real service (``lrface serve``) as a child process on loopback: benchmarks and tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class ServerProcess:
    url: str
    proc: subprocess.Popen[bytes]
    log: Path | None = None  # the server's stdout/stderr (a file: a pipe nobody reads would block it)

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log and self.log.exists() else ""

    @property
    def pid(self) -> int:
        return self.proc.pid

    def kill(self) -> None:
        """SIGKILL: no shutdown code runs (a crash)."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.kill()
        self.proc.wait()
        if self.log is not None:
            self.log.unlink(missing_ok=True)


def start_server(
    env: dict[str, str],
    command: list[str] | None = None,
    timeout: float = 60,
    port: int | None = None,
    quiet: bool = False,
) -> ServerProcess:
    """Start the service on 127.0.0.1 and wait until ``/readyz`` answers 200."""
    port = port or free_port()
    full_env = {**os.environ, "LRFACE_HOST": "127.0.0.1", "LRFACE_PORT": str(port), "LRFACE_THREADS": "1", **env}
    cmd = command or [sys.executable, "-m", "lrface_cli", "serve"]
    log = None
    if not quiet:
        handle, name = tempfile.mkstemp(prefix=f"lrface-server-{port}-", suffix=".log")
        os.close(handle)
        log = Path(name)
    with open(log or os.devnull, "wb") as output:
        proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=output, stderr=subprocess.STDOUT)
    server = ServerProcess(f"http://127.0.0.1:{port}", proc, log)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}:\n{server.output()[-3000:]}")
        try:
            if httpx.get(server.url + "/readyz", timeout=1).status_code == 200:
                return server
        except httpx.HTTPError:
            pass
        if time.monotonic() > deadline:
            server.kill()
            raise RuntimeError("server did not become ready in time")
        time.sleep(0.2)


@contextmanager
def running_server(env: dict[str, str], command: list[str] | None = None, timeout: float = 60) -> Iterator[str]:
    server = start_server(env, command, timeout)
    try:
        yield server.url
    finally:
        server.stop()


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process and its descendants (Linux ``/proc``), those that have
    exited and been waited for included (their parent's cutime and cstime): a worker that ends
    between two readings is not lost from the difference."""
    ticks = os.sysconf("SC_CLK_TCK")
    stats: dict[int, tuple[int, float]] = {}  # pid -> (parent, cpu seconds)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            # fields[1]: the parent; 11-14: utime, stime, cutime, cstime (stat's fields 14-17)
            stats[int(entry.name)] = (int(fields[1]), sum(int(v) for v in fields[11:15]) / ticks)
    family, grew = {pid}, True
    while grew:
        before = len(family)
        family |= {p for p, (parent, _) in stats.items() if parent in family}
        grew = len(family) > before
    return sum(stats[p][1] for p in family if p in stats)


@contextmanager
def fresh_server() -> Iterator[ServerProcess]:
    """The service on loopback over an empty gallery in a temporary folder, without API keys (what the
    benchmarks start when no ``--url`` is given); stopped, and its folder removed, on exit."""
    with tempfile.TemporaryDirectory() as tmp:
        server = start_server({"LRFACE_GALLERY_DIR": tmp, "LRFACE_API_KEYS": ""}, timeout=600, quiet=True)
        try:
            yield server
        finally:
            server.stop()
