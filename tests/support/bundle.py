"""OCI bundles for tests that run real containers: a busybox rootfs and a config.json from `runc spec`."""

from __future__ import annotations

import atexit
import contextlib
import copy
import functools
import json
import os
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from typing import Any

RUNC = shutil.which("runc") or "/usr/sbin/runc"
BUSYBOX = "/bin/busybox"  # Debian's busybox-static
APPLETS = ("sh", "echo", "sleep", "cat", "true", "false", "printf", "head", "tr", "dd", "stty", "kill", "ls")
CGROUP_PARENT = "pycrio-test"


@functools.cache
def spec_template() -> dict[str, Any]:
    """`runc spec` output (root, not rootless): namespaces pid/network/ipc/uts/mount, /proc, /dev."""
    with tempfile.TemporaryDirectory(prefix="pycrio-spec-") as d:
        subprocess.run([RUNC, "spec"], cwd=d, check=True)
        with open(os.path.join(d, "config.json")) as f:
            return json.load(f)


@dataclass
class Bundle:
    """A bundle dir (rootfs/ + config.json) and a private runc --root for one container."""

    path: str
    runc_root: str
    container_id: str

    @property
    def rootfs(self) -> str:
        return os.path.join(self.path, "rootfs")

    @property
    def config_path(self) -> str:
        return os.path.join(self.path, "config.json")

    def runc(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run([RUNC, "--root", self.runc_root, *args], capture_output=True, text=True, check=check)

    def state(self) -> dict[str, Any] | None:
        """`runc state` of the container, or None when runc does not know it."""
        out = self.runc("state", self.container_id, check=False)
        return json.loads(out.stdout) if out.returncode == 0 else None

    def cgroup_dir(self, controller: str = "memory") -> str:
        """The container's v1 cgroup directory for controller (config cgroupsPath)."""
        return f"/sys/fs/cgroup/{controller}/{CGROUP_PARENT}/{self.container_id}"

    def cgroup2_dir(self) -> str:
        """The container's cgroup v2 directory on a unified host."""
        return f"/sys/fs/cgroup/{CGROUP_PARENT}/{self.container_id}"

    def delete(self) -> None:
        """runc delete --force, and rmdir the cgroups that runc may leave behind."""
        self.runc("delete", "--force", self.container_id, check=False)
        for ctrl in [".", *os.listdir("/sys/fs/cgroup")]:
            with contextlib.suppress(OSError):
                os.rmdir(f"/sys/fs/cgroup/{ctrl}/{CGROUP_PARENT}/{self.container_id}")
            with contextlib.suppress(OSError):  # busy while another container uses it
                os.rmdir(f"/sys/fs/cgroup/{ctrl}/{CGROUP_PARENT}")


def make_rootfs(path: str) -> None:
    """rootfs/ with bin/busybox (hard link when possible) and applet symlinks, plus tmp/."""
    os.makedirs(os.path.join(path, "bin"))
    os.makedirs(os.path.join(path, "tmp"))
    target = os.path.join(path, "bin", "busybox")
    try:
        os.link(_busybox_copy(), target)
    except OSError:
        shutil.copy2(BUSYBOX, target)
    for applet in APPLETS:
        os.symlink("busybox", os.path.join(path, "bin", applet))


@functools.cache
def _busybox_copy() -> str:
    """One copy of busybox in the temp dir, for hard links (same filesystem as the bundles)."""
    d = tempfile.mkdtemp(prefix="pycrio-busybox-")
    atexit.register(shutil.rmtree, d, True)
    dest = os.path.join(d, "busybox")
    shutil.copy2(BUSYBOX, dest)
    return dest


def make_bundle(
    base: str,
    container_id: str,
    args: list[str],
    *,
    terminal: bool = False,
    memory_limit: int | None = None,
    edit: Any = None,
) -> Bundle:
    """A bundle in base/bundle with a busybox rootfs running args; cgroupsPath /pycrio-test/<id>."""
    bundle = Bundle(os.path.join(base, "bundle"), os.path.join(base, "runc"), container_id)
    os.makedirs(bundle.path)
    os.makedirs(bundle.runc_root)
    make_rootfs(bundle.rootfs)
    config = copy.deepcopy(spec_template())
    config["process"]["args"] = args
    config["process"]["terminal"] = terminal
    config["process"]["env"] = ["PATH=/bin", "TERM=xterm"]
    config["root"] = {"path": "rootfs", "readonly": False}
    config["hostname"] = container_id[:63]
    linux = config["linux"]
    linux["cgroupsPath"] = f"/{CGROUP_PARENT}/{container_id}"
    if memory_limit is not None:
        linux.setdefault("resources", {})["memory"] = {"limit": memory_limit, "swap": memory_limit}
    if edit is not None:
        edit(config)
    with open(bundle.config_path, "w") as f:
        json.dump(config, f, indent=1)
    return bundle
