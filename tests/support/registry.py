"""Run Debian's docker-registry (distribution 2.8) on 127.0.0.1 for tests, anonymous or with htpasswd auth."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass

REGISTRY_BIN = "/usr/bin/docker-registry"
START_TIMEOUT = 15.0


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def closed_port() -> str:
    """host:port of a registry that is down (nothing listens there)."""
    return f"127.0.0.1:{free_port()}"


def htpasswd_line(username: str, password: str) -> str:
    """An htpasswd entry with a bcrypt hash (the only kind distribution accepts); cost 4 keeps requests fast."""
    import bcrypt

    return f"{username}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=4)).decode()}"


@dataclass
class RegistryServer:
    """A running docker-registry; host is "127.0.0.1:<port>"."""

    host: str
    base: str
    proc: subprocess.Popen
    username: str = ""
    password: str = ""

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def log(self) -> str:
        with open(os.path.join(self.base, "registry.log"), errors="replace") as f:
            return f.read()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _config(base: str, port: int, htpasswd: str | None) -> str:
    auth = ""
    if htpasswd:
        auth = f"auth:\n  htpasswd:\n    realm: pycrio-test\n    path: {htpasswd}\n"
    return (
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {os.path.join(base, 'data')}\n"
        "  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: 127.0.0.1:{port}\n"
        f"{auth}"
    )


def start_registry(base: str, username: str = "", password: str = "") -> RegistryServer:
    """Start docker-registry with its storage and config under base; with username, htpasswd auth is on."""
    if not os.access(REGISTRY_BIN, os.X_OK):
        raise RuntimeError(f"{REGISTRY_BIN} is missing (Debian package docker-registry)")
    os.makedirs(base, exist_ok=True)
    htpasswd = None
    if username:
        htpasswd = os.path.join(base, "htpasswd")
        with open(htpasswd, "w") as f:
            f.write(htpasswd_line(username, password) + "\n")
    last_error = ""
    for _ in range(3):  # the free port may be taken between choosing and binding it
        port = free_port()
        config = os.path.join(base, "config.yml")
        with open(config, "w") as f:
            f.write(_config(base, port, htpasswd))
        with open(os.path.join(base, "registry.log"), "ab") as log:
            proc = subprocess.Popen(
                [REGISTRY_BIN, "serve", config], stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        server = RegistryServer(f"127.0.0.1:{port}", base, proc, username, password)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline and proc.poll() is None:
            try:
                with urllib.request.urlopen(f"{server.url}/v2/", timeout=1) as resp:
                    if resp.status == 200:
                        return server
            except urllib.error.HTTPError as e:
                if e.code == 401:
                    return server
            except OSError:
                pass
            time.sleep(0.02)
        server.stop()
        last_error = server.log()
    raise RuntimeError(f"docker-registry did not start:\n{last_error}")


def remove(base: str) -> None:
    shutil.rmtree(base, ignore_errors=True)
