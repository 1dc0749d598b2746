"""Executing one CNI plugin (spec section 2): environment, configuration on stdin, result or error on stdout.

Each plugin runs in a session of its own, so a plugin that outlives its timeout is killed with
everything it started (its delegated IPAM plugin, a `sleep`): the whole process group.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import time
from dataclasses import dataclass
from typing import Any

from pycrio.errors import DeadlineExceeded, FailedPrecondition, NotFound, PycrioError, Unavailable

logger = logging.getLogger("pycrio.network.cni")

IFNAME = "eth0"
# Error codes (spec section 5) that say the configuration is wrong, not that a retry may help.
CONFIG_ERROR_CODES = {1, 2, 4, 6, 7}
CONTAINER_UNKNOWN = 3


@dataclass
class Invocation:
    """The attachment parameters of one operation (the same for every plugin of the chain)."""

    command: str  # ADD, DEL, CHECK, STATUS, GC, VERSION
    container_id: str = ""
    netns: str = ""
    ifname: str = IFNAME
    args: str = ""  # CNI_ARGS, "K=V;K=V"
    path: str = ""  # CNI_PATH


class CniPluginError(PycrioError):
    """Mixin carrying what the plugin said; raised as one of the domain errors (see plugin_error)."""

    plugin: str = ""
    code: int | None = None
    msg: str = ""
    details: str = ""


def plugin_error(plugin: str, command: str, code: int | None, msg: str, details: str = "") -> PycrioError:
    """The domain error for a failed plugin: a configuration problem is FailedPrecondition, a
    container the plugin does not know NotFound, anything else (I/O, "try again", code 50/51,
    plugin-specific codes) Unavailable."""
    text = f"network: CNI plugin {plugin} {command} failed"
    if code is not None:
        text += f" (code {code})"
    text += f": {msg}" if msg else ""
    if details and details != msg:
        text += f": {details}"
    kind: type[PycrioError]
    if code in CONFIG_ERROR_CODES:
        kind = FailedPrecondition
    elif code == CONTAINER_UNKNOWN:
        kind = NotFound
    else:
        kind = Unavailable
    error_type = type(f"Cni{kind.__name__}", (CniPluginError, kind), {})
    error = error_type(text)
    error.plugin, error.code, error.msg, error.details = plugin, code, msg, details
    return error


def environment(inv: Invocation) -> dict[str, str]:
    env = dict(os.environ)
    for key in ("CNI_COMMAND", "CNI_CONTAINERID", "CNI_NETNS", "CNI_IFNAME", "CNI_ARGS", "CNI_PATH"):
        env.pop(key, None)
    env["CNI_COMMAND"] = inv.command
    if inv.command in ("ADD", "DEL", "CHECK"):
        env["CNI_CONTAINERID"] = inv.container_id
        env["CNI_IFNAME"] = inv.ifname
        if inv.netns:
            env["CNI_NETNS"] = inv.netns
        if inv.args:
            env["CNI_ARGS"] = inv.args
    env["CNI_PATH"] = inv.path
    return env


def run_plugin(
    binary: str, kind: str, inv: Invocation, request: dict[str, Any], timeout: float
) -> dict[str, Any] | None:
    """Run binary (plugin type kind) for inv with request on stdin; its parsed stdout (None when empty).

    Raises DeadlineExceeded when it runs longer than timeout (it and its children are killed),
    plugin_error() when it exits non-zero, Unavailable when an ADD prints no JSON result.
    """
    started = time.monotonic()
    try:
        proc = subprocess.Popen(
            [binary],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=environment(inv),
            cwd="/",
            start_new_session=True,
            close_fds=True,
        )
    except OSError as e:
        raise plugin_error(kind, inv.command, None, f"cannot execute {binary}: {e.strerror}") from e
    try:
        out, err = proc.communicate(json.dumps(request).encode(), timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        raise DeadlineExceeded(
            f"network: CNI plugin {kind} ({binary}) {inv.command} did not finish in {timeout:g} s; killed"
        ) from None
    except BaseException:
        _kill_group(proc)
        raise
    elapsed = (time.monotonic() - started) * 1000
    stderr = err.decode(errors="replace").strip()
    if stderr:
        logger.debug("CNI %s %s stderr: %s", kind, inv.command, stderr[:2000])
    if proc.returncode != 0:
        data = _json(out)
        if isinstance(data, dict) and ("code" in data or "msg" in data):
            code = data.get("code")
            raise plugin_error(
                kind,
                inv.command,
                code if isinstance(code, int) else None,
                str(data.get("msg") or ""),
                str(data.get("details") or ""),
            )
        text = stderr or out.decode(errors="replace").strip() or f"exit status {proc.returncode}"
        raise plugin_error(kind, inv.command, None, text[:2000])
    logger.debug("CNI %s %s for %s: %.1f ms", kind, inv.command, inv.container_id[:12] or "-", elapsed)
    if not out.strip():
        return None
    data = _json(out)
    if not isinstance(data, dict):
        if inv.command == "ADD":
            raise plugin_error(kind, inv.command, None, f"printed no JSON result: {out[:200]!r}")
        return None
    return data


def _json(data: bytes) -> Any:
    try:
        return json.loads(data)
    except ValueError:
        return None


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate()
