"""Pod + container lifecycle latency and memory of pycrio and, when given, another CRI endpoint (containerd).

    python benchmarks/lifecycle.py [-n 20] [--pods 20] [--log-level info|debug]
        [--endpoint unix:///tmp/ctrd/containerd.sock --certs-dir /tmp/ctrd/certs.d | --start-containerd]

It starts a docker-registry on 127.0.0.1, pushes the busybox test image (tests.support), starts a
fresh pycrio (temporary root, runroot, socket; registries.conf trusting the registry) and pulls
the image into every runtime (untimed). Then, per variant, it runs -n lifecycles of the kubelet's
sequence from scratch, each RPC timed at the gRPC client (ms):

    RunPodSandbox, CreateContainer (`sleep 3600`), StartContainer, StopContainer (--stop-timeout,
    default 0 = SIGKILL: busybox sleep as PID 1 of its own PID namespace ignores SIGTERM; with a
    timeout, that variant runs `sh -c "trap 'exit 0' TERM; echo ready; sleep 3600 & wait"` instead
    and waits, untimed, for "ready" in its log before StopContainer),
    RemoveContainer, StopPodSandbox, RemovePodSandbox

printing p50/p90 of each, of their sum and of the wall time of the whole sequence, pycrio beside
the peer with the ratio pycrio/peer. The runtimes take turns iteration by iteration so that load
from elsewhere on the machine hits both alike; two untimed warm-up lifecycles per runtime and
variant come first (containerd pulls its sandbox image on the first one).

Variants: the kubelet's ordinary pod (namespace_options.pid = CONTAINER in pod and container),
and a shared PID namespace (pid = POD), which costs pycrio an infra (pause) container.
Pod network (--network auto): pycrio has no pod network yet (pods get only lo). When the peer
reports NetworkReady=false (no CNI config), both runtimes run host-network pods (NODE);
otherwise pod network (POD) for both. The mode is printed.

Memory: VmRSS and Pss (smaps_rollup) of pycrio's daemon idle (after start + pull, then IDLE_WAIT
seconds without a call: pycrio trims its heap one second after its last RPC) and with --pods
running pods of one `sleep` container each, of every pycrio-monitor then; of the peer's daemon
(the process that owns the endpoint's socket) and its containerd-shim-runc-v2 processes.

--endpoint: containerd must have `config_path` = --certs-dir in its CRI registry config; the
script writes <certs-dir>/<registry>/hosts.toml (plain http; removed at the end) and, when
missing, <certs-dir>/registry.k8s.io/hosts.toml mirroring the sandbox image to --pause-mirror.
--start-containerd: runs a private containerd (temporary root, state, socket, certs.d) for the
comparison with the defaults except `restrict_oom_score_adj = true`: without CAP_SYS_RESOURCE
(containers, some VMs) a stock containerd cannot run a pod sandbox at all (runc cannot set
its hard-coded oomScoreAdj -998); pycrio clamps to its own oom_score_adj the same way.

--pycrio-runtime PATH: pycrio's default handler runs another OCI runtime binary (e.g. crun);
crun 1.8.1 refuses hosts with cgroup v1 plus a v2 mount that has controllers ("hybrid mode").

With --log-level debug the daemon log's per-phase timings ("pod … resources: …", "container …
created: …", runc calls, server-side RPC times) are summarised per RPC; debug logging costs
time itself, so take headline figures from an info-level run.

Everything made is removed (pods in both runtimes; images stay in the peer); the script checks
that no pycrio mount, process, OCI runtime state or cgroup is left.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_network  # noqa: E402
from pycrio.cri import api_pb2, api_pb2_grpc  # noqa: E402
from tests.support.images import build_image  # noqa: E402
from tests.support.push import push_image  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

REPO, TAG = "bench/busybox", "latest"
RPCS = (
    "RunPodSandbox",
    "CreateContainer",
    "StartContainer",
    "StopContainer",
    "RemoveContainer",
    "StopPodSandbox",
    "RemovePodSandbox",
)
VARIANTS = {  # name -> (pod pid mode, container pid mode, description)
    "pid-per-container": (api_pb2.CONTAINER, api_pb2.CONTAINER, "kubelet's ordinary pod: pid=CONTAINER"),
    "shared-pid": (api_pb2.POD, api_pb2.POD, "shared PID namespace: pid=POD (infra container)"),
}
TARGET_RATIO = 1 / 3
TARGET_RUNP_MS = 10.0
TARGET_DAEMON_KB = 45 * 1024
IDLE_WAIT = 2.0  # seconds without a call before the idle memory figure
TARGET_MONITOR_KB = 1024
RPC_TIMEOUT = 60


# ---------------------------------------------------------------- processes and memory


def mem_kb(pid: int) -> dict[str, int]:
    """VmRSS and Pss (kB) of a process; empty when it is gone."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    out["rss"] = int(line.split()[1])
        with open(f"/proc/{pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    out["pss"] = int(line.split()[1])
    except (FileNotFoundError, ProcessLookupError):
        return {}
    return out


def cmdline(pid: int) -> list[str]:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return [a.decode(errors="replace") for a in f.read().split(b"\0") if a]
    except (FileNotFoundError, ProcessLookupError):
        return []


def processes() -> list[tuple[int, list[str]]]:
    out = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            args = cmdline(int(entry))
            if args:
                out.append((int(entry), args))
    return out


def socket_owner(path: str) -> int | None:
    """The pid of the process listening on the unix socket path (the daemon behind an endpoint)."""
    inodes = set()
    with open("/proc/net/unix") as f:
        next(f)
        for line in f:
            fields = line.split()
            if len(fields) >= 8 and fields[7] == path and fields[5] == "01":  # state 01: listening
                inodes.add(fields[6])
    for pid, _ in processes():
        try:
            for fd in os.listdir(f"/proc/{pid}/fd"):
                with_target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if with_target.startswith("socket:[") and with_target[8:-1] in inodes:
                    return pid
        except OSError:
            continue
    return None


def loadavg() -> str:
    with open("/proc/loadavg") as f:
        return " ".join(f.read().split()[:3])


def kb(value: float) -> str:
    return f"{value / 1024:6.2f} MiB" if value >= 1024 else f"{value:6.0f} kB "


def summary(rows: list[dict[str, int]], key: str) -> str:
    values = sorted(r[key] for r in rows if key in r)
    if not values:
        return "-"
    return f"min {kb(values[0])} median {kb(statistics.median(values))} max {kb(values[-1])}"


# ---------------------------------------------------------------- runtimes


@dataclass
class Runtime:
    label: str
    endpoint: str
    channel: grpc.Channel | None = None
    rt: Any = None  # RuntimeServiceStub once connected
    img: Any = None  # ImageServiceStub once connected
    pods: set[str] = field(default_factory=set)  # made and not removed yet
    daemon_pid: int | None = None
    version: str = ""

    def connect(self) -> None:
        self.channel = grpc.insecure_channel(self.endpoint.replace("unix://", "unix:"))
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.img = api_pb2_grpc.ImageServiceStub(self.channel)
        v = self.rt.Version(api_pb2.VersionRequest(), timeout=10)
        self.version = f"{v.runtime_name} {v.runtime_version}"

    @property
    def socket_path(self) -> str:
        return self.endpoint.removeprefix("unix://").removeprefix("unix:")

    def network_ready(self) -> bool:
        status = self.rt.Status(api_pb2.StatusRequest(), timeout=10).status
        return all(c.status for c in status.conditions if c.type == "NetworkReady")

    def remove_pods(self) -> list[str]:
        errors = []
        for pod_id in list(self.pods):
            try:
                self.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT)
                self.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT)
                self.pods.discard(pod_id)
            except grpc.RpcError as e:
                errors.append(f"{self.label}: pod {pod_id[:12]}: {e.code().name} {e.details()}")
        return errors


def wait_socket(proc: subprocess.Popen, sock: str, what: str, log: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        if proc.poll() is not None or time.monotonic() > deadline:
            with open(log, errors="replace") as f:
                raise SystemExit(f"{what} did not start:\n{f.read()[-3000:]}")
        if os.path.exists(sock):
            try:
                with grpc.insecure_channel(f"unix:{sock}") as ch:
                    api_pb2_grpc.RuntimeServiceStub(ch).Version(api_pb2.VersionRequest(), timeout=1)
                return
            except grpc.RpcError:
                pass
        time.sleep(0.02)


def start_pycrio(
    base: str, registry_host: str, log_level: str, runtime_path: str | None = None
) -> tuple[subprocess.Popen, str]:
    conf = os.path.join(base, "registries.conf")
    with open(conf, "w") as f:
        f.write(f'[[registry]]\nlocation = "{registry_host}"\ninsecure = true\n')
    with open(os.path.join(base, "pycrio.conf"), "w") as f:
        f.write(bench_network.CONFIG)
    os.makedirs(os.path.join(base, "conf.d"))
    if runtime_path:  # the default handler ("runc") runs another OCI runtime binary
        with open(os.path.join(base, "conf.d", "10-runtime.conf"), "w") as f:
            f.write(f'[pycrio.runtime.runtimes.runc]\nruntime_path = "{runtime_path}"\n')
    sock = os.path.join(base, "run", "pycrio.sock")
    args = ["--config", os.path.join(base, "pycrio.conf"), "--config-dir", os.path.join(base, "conf.d")]
    args += ["--root", os.path.join(base, "root"), "--runroot", os.path.join(base, "run")]
    args += ["--registries-conf", conf, "--log-level", log_level]
    log_path = os.path.join(base, "daemon.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pycrio.cli", *args], stdout=log, stderr=subprocess.STDOUT)
    wait_socket(proc, sock, "pycrio", log_path)
    return proc, f"unix://{sock}"


def start_containerd(base: str) -> tuple[subprocess.Popen, str, str]:
    """A private containerd with the defaults but restrict_oom_score_adj; (process, endpoint, certs dir)."""
    certs = os.path.join(base, "certs.d")
    os.makedirs(certs)
    sock = os.path.join(base, "containerd.sock")
    conf = os.path.join(base, "config.toml")
    with open(conf, "w") as f:
        f.write(
            f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n'
            f'[grpc]\n  address = "{sock}"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n'
            f'[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{certs}"\n'
        )
    log_path = os.path.join(base, "containerd.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["containerd", "--config", conf], stdout=log, stderr=subprocess.STDOUT)
    wait_socket(proc, sock, "containerd", log_path)
    return proc, f"unix://{sock}", certs


def write_hosts(certs: str, host: str, server: str, mirror: str) -> str:
    directory = os.path.join(certs, host)
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, "hosts.toml")
    with open(path, "w") as f:
        f.write(f'server = "{server}"\n[host."http://{mirror}"]\n  capabilities = ["pull", "resolve"]\n')
    return path


# ---------------------------------------------------------------- the workload


@dataclass
class Workload:
    image: str
    network: int
    base: str
    cgroup_root: str  # e.g. /pycrio-lcbench-1234: every pod's cgroup_parent is below it
    token: str  # label value marking this run's pods
    stop_timeout: int
    count: int = 0

    def pod_config(self, label: str, pod_pid: int) -> api_pb2.PodSandboxConfig:
        self.count += 1
        uid = str(uuid.uuid4())
        sc = api_pb2.LinuxSandboxSecurityContext(
            namespace_options=api_pb2.NamespaceOption(network=self.network, pid=pod_pid, ipc=api_pb2.POD)
        )
        return api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=f"lc-{self.count}", namespace="bench", uid=uid),
            hostname=f"lc-{self.count}" if self.network == api_pb2.POD else "",
            log_directory=os.path.join(self.base, "logs", label, uid),
            labels={"pycrio-bench": self.token},
            linux=api_pb2.LinuxPodSandboxConfig(
                cgroup_parent=f"{self.cgroup_root}/{label}/pod{uid}", security_context=sc
            ),
        )

    def container_config(self, ctr_pid: int) -> api_pb2.ContainerConfig:
        if self.stop_timeout > 0 and ctr_pid == api_pb2.CONTAINER:
            # PID 1 of its own namespace: sleep would ignore SIGTERM; a shell with a trap ends on it.
            # (Not in a shared PID namespace: there the backgrounded sleep would outlive the shell.)
            command = ["sh", "-c", "trap 'exit 0' TERM; echo ready; sleep 3600 & wait"]
        else:
            command = ["sleep", "3600"]
        return api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="sleeper"),
            image=api_pb2.ImageSpec(image=self.image),
            command=command,
            log_path="sleeper_0.log",
            labels={"pycrio-bench": self.token},
            linux=api_pb2.LinuxContainerConfig(
                resources=api_pb2.LinuxContainerResources(cpu_shares=2, oom_score_adj=1000),  # BestEffort
                security_context=api_pb2.LinuxContainerSecurityContext(
                    namespace_options=api_pb2.NamespaceOption(network=self.network, pid=ctr_pid, ipc=api_pb2.POD)
                ),
            ),
        )

    def run_pod(self, r: Runtime, label: str, pod_pid: int, ctr_pid: int) -> tuple[str, str, api_pb2.PodSandboxConfig]:
        config = self.pod_config(label, pod_pid)
        pod_id = r.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=RPC_TIMEOUT).pod_sandbox_id
        r.pods.add(pod_id)
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=self.container_config(ctr_pid), sandbox_config=config
        )
        cid = r.rt.CreateContainer(request, timeout=RPC_TIMEOUT).container_id
        r.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=RPC_TIMEOUT)
        return pod_id, cid, config

    def lifecycle(self, r: Runtime, label: str, pod_pid: int, ctr_pid: int) -> tuple[dict[str, float], str, str]:
        """One pod + container from scratch to gone; ms per RPC, plus "sum" and "wall"."""
        times: dict[str, float] = {}

        def timed(name, call, request):
            t0 = time.perf_counter()
            response = call(request, timeout=RPC_TIMEOUT)
            times[name] = (time.perf_counter() - t0) * 1000
            return response

        config = self.pod_config(label, pod_pid)
        wall0 = time.perf_counter()
        pod_id = timed("RunPodSandbox", r.rt.RunPodSandbox, api_pb2.RunPodSandboxRequest(config=config)).pod_sandbox_id
        r.pods.add(pod_id)
        request = api_pb2.CreateContainerRequest(
            pod_sandbox_id=pod_id, config=self.container_config(ctr_pid), sandbox_config=config
        )
        cid = timed("CreateContainer", r.rt.CreateContainer, request).container_id
        timed("StartContainer", r.rt.StartContainer, api_pb2.StartContainerRequest(container_id=cid))
        waited = 0.0
        if self.stop_timeout > 0 and ctr_pid == api_pb2.CONTAINER:
            # A SIGTERM before the shell has set its trap is ignored (PID 1): wait for "ready", untimed.
            t0 = time.perf_counter()
            log = os.path.join(config.log_directory, "sleeper_0.log")
            while time.perf_counter() - t0 < 10:
                with contextlib.suppress(FileNotFoundError), open(log, "rb") as f:
                    if b" F ready" in f.read():
                        break
                time.sleep(0.002)
            waited = time.perf_counter() - t0
        timed(
            "StopContainer",
            r.rt.StopContainer,
            api_pb2.StopContainerRequest(container_id=cid, timeout=self.stop_timeout),
        )
        timed("RemoveContainer", r.rt.RemoveContainer, api_pb2.RemoveContainerRequest(container_id=cid))
        timed("StopPodSandbox", r.rt.StopPodSandbox, api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id))
        timed("RemovePodSandbox", r.rt.RemovePodSandbox, api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id))
        times["wall"] = (time.perf_counter() - wall0 - waited) * 1000
        r.pods.discard(pod_id)
        times["sum"] = sum(times[name] for name in RPCS)
        return times, pod_id, cid


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    if q == 0.5:
        return statistics.median(ordered)
    return ordered[min(len(ordered) - 1, int(len(ordered) * q))]


def print_table(variant: str, results: dict[str, dict[str, list[float]]], labels: list[str]) -> None:
    ratio_head = f"{labels[0]}/{labels[1]} p50" if len(labels) == 2 else ""
    head = f"{'':18s}" + "".join(f" | {label + ' p50':>15s}{'p90':>10s}" for label in labels)
    print(head + (f" | {ratio_head}" if ratio_head else ""))
    for name in (*RPCS, "sum", "wall"):
        line = f"{name:18s}"
        for label in labels:
            samples = results[label][name]
            line += f" | {pct(samples, 0.5):12.2f} ms{pct(samples, 0.9):7.2f} ms"
        if ratio_head:
            a, b = (pct(results[label][name], 0.5) for label in labels)
            line += f" | {a / b:{len(ratio_head)}.2f}" if b else " |"
        print(line)


# ---------------------------------------------------------------- pycrio's debug log


_TIMING_LINE = re.compile(r"req=(\w+): (pod|container) (\w{12}) (resources|created): (.*)$")
_REQUEST_LINE = re.compile(r"req=(\w+): (\w+) request: (.*)$")
_DONE_LINE = re.compile(r"req=(\w+): (\w+) done in ([\d.]+) ms: ?(.*)$")
_RUNC_LINE = re.compile(r"req=(\w+): (\S+) (\S+): exit (-?\d+) in ([\d.]+) ms$")
_PHASE = re.compile(r"([a-z][a-z ]*?) ([\d.]+) ms")


def debug_breakdown(log_path: str, ids: dict[str, str]) -> None:
    """Per variant and RPC: pycrio's server-side time, runc calls and named phases (median ms).

    ids maps every measured pod / container id (full) to its variant; requests that name none of
    them (warm-up, the memory phase) are left out.
    """
    req_rpc: dict[str, str] = {}
    req_text: dict[str, str] = defaultdict(str)
    req_done: dict[str, float] = {}
    req_parts: dict[str, dict[str, float]] = defaultdict(lambda: defaultdict(float))
    with open(log_path, errors="replace") as f:
        for line in f:
            if m := _REQUEST_LINE.search(line):
                req_rpc[m[1]] = m[2]
                req_text[m[1]] += m[3]
            elif m := _DONE_LINE.search(line):
                req_done[m[1]] = float(m[3])
                req_text[m[1]] += m[4]
            elif m := _TIMING_LINE.search(line):
                for phase, ms in _PHASE.findall(m[5]):
                    req_parts[m[1]][f"{m[2]} {phase}"] += float(ms)
            elif m := _RUNC_LINE.search(line):
                req_parts[m[1]][f"{m[2]} {m[3]}"] += float(m[5])
    table: dict[str, dict[str, dict[str, list[float]]]] = defaultdict(lambda: defaultdict(lambda: defaultdict(list)))
    for req, rpc in req_rpc.items():
        if rpc not in RPCS or req not in req_done:
            continue
        variant = next((v for i, v in ids.items() if i in req_text[req]), None)
        if variant is None:
            continue
        table[variant][rpc]["server total"].append(req_done[req])
        for part, ms in req_parts[req].items():
            table[variant][rpc][part].append(ms)
    for variant in VARIANTS:
        if variant not in table:
            continue
        print(f"\npycrio debug-log breakdown, {variant} (median ms over the measured lifecycles):")
        for rpc in RPCS:
            parts = table[variant].get(rpc)
            if not parts:
                continue
            n = len(parts["server total"])
            shown = ", ".join(
                f"{name} {statistics.median(v):.2f}" + (f" (x{len(v) / n:.0f})" if len(v) != n else "")
                for name, v in sorted(parts.items(), key=lambda kv: kv[0] != "server total")
            )
            print(f"  {rpc:18s} {shown}")


# ---------------------------------------------------------------- leftovers


def cgroup_leftovers(root: str) -> list[str]:
    """Directories below root in any cgroup hierarchy; removes the empty ones (runc leaves the parents)."""
    left = []
    mounts = [os.path.join("/sys/fs/cgroup", d) for d in os.listdir("/sys/fs/cgroup")]
    for hierarchy in [*mounts, "/sys/fs/cgroup"]:
        top = hierarchy + root
        if not os.path.isdir(top):
            continue
        for dirpath, _dirs, _files in sorted(os.walk(top), key=lambda e: -len(e[0])):
            try:
                os.rmdir(dirpath)
            except OSError:
                left.append(dirpath)
    return left


def pycrio_leftovers(base: str, runc_root: str) -> list[str]:
    left = []
    with open("/proc/self/mountinfo") as f:
        left += [f"mount {line.split()[4]}" for line in f if base in line.split()[4]]
    left += [f"process {pid}: {' '.join(args)[:160]}" for pid, args in processes() if any(base in a for a in args)]
    if os.path.isdir(runc_root):  # the OCI runtime's state: a directory per container
        left += [f"runtime state of container {c}" for c in os.listdir(runc_root)]
    return left


# ---------------------------------------------------------------- main


def measure_memory(runtimes: list[Runtime], work: Workload, pods: int, base: str) -> dict[str, dict]:
    """Start `pods` pods of one sleep container in each runtime; memory of daemons and helpers."""
    pod_pid, ctr_pid, _ = VARIANTS["pid-per-container"]
    out: dict[str, dict] = {}
    for r in runtimes:
        made = [work.run_pod(r, f"{r.label}-rss", pod_pid, ctr_pid) for _ in range(pods)]
        time.sleep(1.0)
        entry: dict[str, Any] = {"daemon": mem_kb(r.daemon_pid) if r.daemon_pid else {}}
        if r.label == "pycrio":
            helpers = [p for p, a in processes() if a[0].endswith("pycrio-monitor") and any(base in x for x in a)]
        else:
            helpers = [
                p for p, a in processes() if os.path.basename(a[0]).startswith("containerd-shim") and r.socket_path in a
            ]
        entry["helpers"] = [m for m in (mem_kb(p) for p in helpers) if m]
        out[r.label] = entry
        for pod_id, _cid, _config in made:
            r.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT)
            r.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod_id), timeout=RPC_TIMEOUT)
            r.pods.discard(pod_id)
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    peer = parser.add_mutually_exclusive_group()
    peer.add_argument("--endpoint", help="another CRI endpoint to measure beside pycrio (containerd)")
    peer.add_argument("--start-containerd", action="store_true", help="compare with a private containerd")
    parser.add_argument("--certs-dir", help="the --endpoint containerd's registry config_path")
    parser.add_argument("--pause-mirror", default="127.0.0.1:5000", help="registry mirroring registry.k8s.io")
    parser.add_argument("-n", type=int, default=20, help="measured lifecycles per runtime and variant")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--pods", type=int, default=20, help="running pods for the memory figures (0: skip)")
    parser.add_argument("--stop-timeout", type=int, default=0, help="StopContainer timeout (s)")
    parser.add_argument("--network", choices=("auto", "node", "pod"), default="auto")
    parser.add_argument(
        "--variants", default=",".join(VARIANTS), help="comma-separated subset of " + ", ".join(VARIANTS)
    )
    parser.add_argument("--log-level", default="info", help="pycrio's log level (debug: per-phase breakdown)")
    parser.add_argument("--pycrio-runtime", help="OCI runtime binary for pycrio's default handler (e.g. crun)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory (logs)")
    args = parser.parse_args()
    variants = [v for v in args.variants.split(",") if v]
    for v in variants:
        if v not in VARIANTS:
            parser.error(f"unknown variant {v}")

    base = tempfile.mkdtemp(prefix="pycrio-lc-", dir="/var/tmp")
    os.makedirs(os.path.join(base, "logs"))
    token = uuid.uuid4().hex[:10]
    cgroup_root = f"/pycrio-lcbench-{token}"
    base_pycrio = os.path.join(base, "pycrio")
    runc_root = os.path.join(base_pycrio, "run", "runtime", "runc")
    problems: list[str] = []
    print(f"load average at start: {loadavg()}, {os.cpu_count()} cpus; dir {base}")

    registry = start_registry(os.path.join(base, "registry"))
    pycrio_proc = ctrd_proc = None
    written: list[str] = []
    runtimes: list[Runtime] = []
    try:
        push_image(registry.host, REPO, TAG, build_image())
        image = f"{registry.host}/{REPO}:{TAG}"
        os.makedirs(base_pycrio)
        pycrio_proc, endpoint = start_pycrio(base_pycrio, registry.host, args.log_level, args.pycrio_runtime)
        ours = Runtime("pycrio", endpoint, daemon_pid=pycrio_proc.pid)
        ours.connect()
        runtimes.append(ours)
        certs = args.certs_dir
        if args.start_containerd:
            os.makedirs(os.path.join(base, "containerd"))
            ctrd_proc, peer_endpoint, certs = start_containerd(os.path.join(base, "containerd"))
        else:
            peer_endpoint = args.endpoint
        theirs = None
        if peer_endpoint:
            label = "containerd" if "containerd" in peer_endpoint else peer_endpoint.rsplit("/", 1)[-1]
            theirs = Runtime(label, peer_endpoint)
            theirs.connect()
            theirs.daemon_pid = ctrd_proc.pid if ctrd_proc else socket_owner(theirs.socket_path)
            if certs:
                written.append(write_hosts(certs, registry.host, f"http://{registry.host}", registry.host))
                if not os.path.exists(os.path.join(certs, "registry.k8s.io", "hosts.toml")):
                    written.append(write_hosts(certs, "registry.k8s.io", "https://registry.k8s.io", args.pause_mirror))
            runtimes.append(theirs)

        for r in runtimes:
            print(f"{r.label}: {r.version}, daemon pid {r.daemon_pid}, {r.endpoint}")
        if ctrd_proc is not None:
            print("containerd: private instance, default config but restrict_oom_score_adj = true")
        for r in runtimes:
            started = time.perf_counter()
            r.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)), timeout=120)
            print(f"{r.label}: pulled {image} in {(time.perf_counter() - started) * 1000:.0f} ms (untimed)")
        time.sleep(IDLE_WAIT)
        idle = {r.label: mem_kb(r.daemon_pid) for r in runtimes if r.daemon_pid}

        if args.network == "auto":
            network = api_pb2.POD
            if theirs is not None and not theirs.network_ready():
                network = api_pb2.NODE
                reason = f"{theirs.label} reports NetworkReady=false (no CNI config), so BOTH runtimes use it"
            elif theirs is None:
                reason = "no peer; pycrio pods get only lo"
            else:
                reason = f"{theirs.label} has a pod network; pycrio pods get only lo"
        else:
            network = api_pb2.NODE if args.network == "node" else api_pb2.POD
            reason = "--network"
        mode = "host network (NODE)" if network == api_pb2.NODE else "pod network (POD)"
        print(f"network mode: {mode}: {reason}")
        stop_desc = "SIGKILL at once" if args.stop_timeout == 0 else f"SIGTERM, {args.stop_timeout} s grace"
        print(f"container: {image}, sleep 3600; StopContainer timeout {args.stop_timeout} ({stop_desc})")

        work = Workload(image, network, base, cgroup_root, token, args.stop_timeout)
        measured_ids: dict[str, str] = {}
        all_results: dict[str, dict[str, dict[str, list[float]]]] = {}
        for variant in variants:
            pod_pid, ctr_pid, description = VARIANTS[variant]
            for r in runtimes:
                for _ in range(args.warmup):
                    try:
                        work.lifecycle(r, f"{r.label}-{variant}", pod_pid, ctr_pid)
                    except grpc.RpcError as e:
                        hint = ""
                        if "oom_score_adj" in e.details() or "final child's PID" in e.details():
                            hint = (
                                "\n  (probably runc could not set the sandbox's oom_score_adj -998: this host lacks "
                                "CAP_SYS_RESOURCE; containerd needs restrict_oom_score_adj = true, "
                                "or use --start-containerd)"
                            )
                        raise SystemExit(
                            f"{r.label} {variant} warm-up failed: {e.code().name} {e.details()}{hint}"
                        ) from e
            results: dict[str, dict[str, list[float]]] = {r.label: defaultdict(list) for r in runtimes}
            for i in range(args.n):
                order = runtimes if i % 2 == 0 else runtimes[::-1]
                for r in order:
                    times, pod_id, cid = work.lifecycle(r, f"{r.label}-{variant}", pod_pid, ctr_pid)
                    for name, ms in times.items():
                        results[r.label][name].append(ms)
                    if r is ours:
                        measured_ids[pod_id] = measured_ids[cid] = variant
            all_results[variant] = results
            print(f"\n{variant}: {description}, {mode}, n={args.n} (gRPC client latency)")
            print_table(variant, results, [r.label for r in runtimes])

        after_loops = {r.label: mem_kb(r.daemon_pid) for r in runtimes if r.daemon_pid}
        memory = measure_memory(runtimes, work, args.pods, base_pycrio) if args.pods else {}

        print("\nmemory (VmRSS / Pss):")
        for r in runtimes:
            before, after = idle.get(r.label, {}), after_loops.get(r.label, {})
            if before:
                print(
                    f"  {r.label:10s} daemon idle after start+pull  rss {kb(before['rss'])}  pss {kb(before['pss'])}"
                    f"   after the lifecycles rss {kb(after.get('rss', 0))}"
                )
            entry = memory.get(r.label)
            if entry and entry["daemon"]:
                print(
                    f"  {r.label:10s} daemon with {args.pods} pods         rss {kb(entry['daemon']['rss'])}"
                    f"  pss {kb(entry['daemon']['pss'])}"
                )
            if entry:
                kind = "pycrio-monitor" if r is ours else "containerd-shim-runc-v2"
                helpers = entry["helpers"]
                total_rss = sum(h["rss"] for h in helpers)
                total_pss = sum(h["pss"] for h in helpers)
                print(f"  {r.label:10s} {len(helpers)} x {kind}")
                print(f"  {'':10s}   rss {summary(helpers, 'rss')}   total {kb(total_rss)}")
                print(f"  {'':10s}   pss {summary(helpers, 'pss')}   total {kb(total_pss)}")

        # ---- targets
        print("\ntargets:")

        def verdict(name: str, ok: bool, text: str) -> None:
            print(f"  [{'met ' if ok else 'MISS'}] {name}: {text}")

        for variant, results in all_results.items():
            if theirs is not None:
                for key in ("wall", "sum"):
                    ours_ms = pct(results["pycrio"][key], 0.5)
                    theirs_ms = pct(results[theirs.label][key], 0.5)
                    verdict(
                        f"lifecycle {key} p50 <= 1/3 of {theirs.label} ({variant})",
                        ours_ms <= theirs_ms * TARGET_RATIO,
                        f"{ours_ms:.1f} ms vs {theirs_ms:.1f} ms = {ours_ms / theirs_ms:.2f}",
                    )
            runp = pct(results["pycrio"]["RunPodSandbox"], 0.5)
            verdict(f"RunPodSandbox p50 < {TARGET_RUNP_MS:.0f} ms ({variant})", runp < TARGET_RUNP_MS, f"{runp:.2f} ms")
        if "pycrio" in idle:
            rss = idle["pycrio"]["rss"]
            verdict("daemon RSS idle < 45 MiB", rss < TARGET_DAEMON_KB, f"{kb(rss).strip()}")
        if memory.get("pycrio", {}).get("helpers"):
            worst = max(h["rss"] for h in memory["pycrio"]["helpers"])
            verdict("monitor RSS < 1 MiB (max VmRSS)", worst < TARGET_MONITOR_KB, f"{kb(worst).strip()}")

        if args.log_level == "debug":
            debug_breakdown(os.path.join(base_pycrio, "daemon.log"), measured_ids)
    finally:
        for r in runtimes:
            problems += r.remove_pods()
        if peer_rt := next((r for r in runtimes if r.label != "pycrio"), None):
            with contextlib.suppress(grpc.RpcError):
                sel = api_pb2.PodSandboxFilter(label_selector={"pycrio-bench": token})
                left = peer_rt.rt.ListPodSandbox(api_pb2.ListPodSandboxRequest(filter=sel), timeout=10).items
                problems += [f"{peer_rt.label}: pod {p.id[:12]} left" for p in left]
        for r in runtimes:
            if r.channel is not None:
                r.channel.close()
        if pycrio_proc is not None:
            pycrio_proc.send_signal(signal.SIGTERM)
            try:
                pycrio_proc.wait(20)
            except subprocess.TimeoutExpired:
                pycrio_proc.kill()
                pycrio_proc.wait()
                problems.append("pycrio ignored SIGTERM")
            time.sleep(0.3)
            problems += [f"pycrio: {x}" for x in pycrio_leftovers(base_pycrio, runc_root)]
            bench_network.remove()
        if ctrd_proc is not None:
            ctrd_proc.send_signal(signal.SIGTERM)
            try:
                ctrd_proc.wait(20)
            except subprocess.TimeoutExpired:
                ctrd_proc.kill()
                ctrd_proc.wait()
            shims = [
                p for p, a in processes() if a[0].endswith("containerd-shim-runc-v2") and any(base in x for x in a)
            ]
            problems += [f"containerd shim {p} left" for p in shims]
        for path in written:
            with contextlib.suppress(OSError):
                os.unlink(path)
                os.rmdir(os.path.dirname(path))
        problems += [f"cgroup {d} left" for d in cgroup_leftovers(cgroup_root)]
        registry.stop()
        if args.keep:
            print(f"kept {base}")
        else:
            with open("/proc/self/mountinfo") as f:
                mounted = [line.split()[4] for line in f if base in line.split()[4]]
            for path in sorted(mounted, key=len, reverse=True):  # a private containerd's leftovers, if any
                subprocess.run(["umount", "-l", path], check=False)
            shutil.rmtree(base, ignore_errors=True)
        print(f"load average at end: {loadavg()}")
        if problems:
            print("cleanup problems:\n  " + "\n  ".join(problems))
        else:
            print("cleanup: every pod removed; no pycrio mount, process, runtime state or cgroup left")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
