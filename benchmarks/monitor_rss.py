"""RSS of pycrio-monitor while it watches a running container; the budget is 1 MiB (VmRSS).

Usage: python benchmarks/monitor_rss.py [--containers 3] [--no-variants]
Run as root with runc installed. For each build it starts --containers busybox containers under
their own monitors, makes each write ~1 MB of output (so every buffer has been touched), then reads
VmRSS / RssAnon / RssFile from /proc/<pid>/status and Pss from smaps_rollup of every monitor.
Builds: the installed pycrio/bin/pycrio-monitor (static), and unless --no-variants the same
sources linked dynamically and static with -Os/--gc-sections, to back the choice in build.py.
Exits 1 when the installed monitor's VmRSS exceeds the budget.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
import uuid

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import build  # noqa: E402
from pycrio import monitor  # noqa: E402
from pycrio.paths import helper_binary  # noqa: E402
from tests.support.bundle import RUNC, make_bundle  # noqa: E402

BUDGET_KB = 1024
SCRIPT = "head -c 1000000 /dev/zero | tr '\\0' x; echo; echo ready; exec sleep 60"


def compile_variant(out: str, extra: list[str]) -> str:
    """The monitor built from csrc/monitor with the project's CFLAGS plus extra."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    sources = [str(build.CSRC / s) for s in build.EXECUTABLES["pycrio-monitor"]["sources"]]
    subprocess.run([*cc.split(), *build.CFLAGS, *extra, "-I", str(build.CSRC), "-o", out, *sources], check=True)
    return out


def status_kb(pid: int) -> dict[str, int]:
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key in ("VmRSS", "RssAnon", "RssFile"):
                out[key] = int(value.split()[0])
    with open(f"/proc/{pid}/smaps_rollup") as f:
        for line in f:
            if line.startswith("Pss:"):
                out["Pss"] = int(line.split()[1])
    return out


def measure(binary: str, count: int, workdir: str) -> list[dict[str, int]]:
    """Start count containers under `binary`; the memory figures of each monitor, then clean up."""
    bundles = []
    running: list[tuple[str, int]] = []  # (base dir, container pid)
    try:
        for i in range(count):
            base = os.path.join(workdir, f"{os.path.basename(binary)}-{i}")
            os.makedirs(base)
            bundle = make_bundle(base, f"rss-{uuid.uuid4().hex[:10]}", ["sh", "-c", SCRIPT])
            bundles.append(bundle)
            pid = asyncio.run(
                monitor.spawn(
                    bundle.container_id,
                    runtime=RUNC,
                    runtime_root=bundle.runc_root,
                    bundle=bundle.path,
                    pid_file=f"{base}/pid",
                    exit_file=f"{base}/exit",
                    ctl_socket=f"{base}/ctl",
                    log_path=f"{base}/ctr.log",
                    binary=binary,
                )
            )
            bundle.runc("start", bundle.container_id)
            running.append((base, pid))
        for base, _pid in running:
            deadline = time.monotonic() + 20
            while time.monotonic() < deadline:
                with open(f"{base}/ctr.log", "rb") as f:
                    if b" F ready\n" in f.read():
                        break
                time.sleep(0.05)
        time.sleep(0.2)
        results = []
        for _base, pid in running:
            with open(f"/proc/{pid}/stat") as f:
                monitor_pid = int(f.read().rsplit(")", 1)[1].split()[1])  # the container's parent
            results.append(status_kb(monitor_pid))
        return results
    finally:
        for bundle in bundles:
            bundle.runc("kill", bundle.container_id, "KILL", check=False)
        for base, _pid in running:
            deadline = time.monotonic() + 10
            while not os.path.exists(f"{base}/exit") and time.monotonic() < deadline:
                time.sleep(0.05)
        for bundle in bundles:
            bundle.delete()


def report(name: str, rows: list[dict[str, int]]) -> int:
    worst = max(r["VmRSS"] for r in rows)
    line = " ".join(f"{k}={max(r[k] for r in rows)}kB" for k in ("VmRSS", "RssAnon", "RssFile", "Pss"))
    print(f"{name:28s} monitors={len(rows)} max {line}")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=3)
    parser.add_argument("--no-variants", action="store_true")
    args = parser.parse_args()
    workdir = tempfile.mkdtemp(prefix="pycrio-rss-")
    try:
        installed = helper_binary("pycrio-monitor")
        worst = report("installed (static -O2)", measure(installed, args.containers, workdir))
        if not args.no_variants:
            variants = {
                "dynamic -O2": [],
                "static -Os gc-sections": ["-static", "-Os", "-ffunction-sections", "-Wl,--gc-sections"],
            }
            for name, flags in variants.items():
                binary = compile_variant(os.path.join(workdir, name.replace(" ", "_")), flags)
                report(name, measure(binary, args.containers, workdir))
        verdict = "within" if worst <= BUDGET_KB else "OVER"
        print(f"installed monitor VmRSS {worst} kB: {verdict} the {BUDGET_KB} kB budget")
        return 0 if worst <= BUDGET_KB else 1
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
