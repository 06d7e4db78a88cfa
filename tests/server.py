"""Start the real service (``lrface serve``, the command the image runs) in a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
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


def start_server(
    env: dict[str, str], command: list[str] | None = None, timeout: float = 60, port: int | None = None
) -> ServerProcess:
    """Start the service and wait until ``/readyz`` answers 200."""
    port = port or free_port()
    full_env = {**os.environ, "LRFACE_HOST": "127.0.0.1", "LRFACE_PORT": str(port), "LRFACE_THREADS": "1", **env}
    cmd = command or [sys.executable, "-m", "lrface.cli", "serve"]
    proc = subprocess.Popen(cmd, env=full_env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    server = ServerProcess(f"http://127.0.0.1:{port}", proc)
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            out = proc.stdout.read().decode(errors="replace") if proc.stdout else ""
            raise RuntimeError(f"server exited with {proc.returncode}:\n{out[-3000:]}")
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
