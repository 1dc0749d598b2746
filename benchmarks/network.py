"""Pod start and stop latency with a pod network: pycrio built-in, pycrio CNI mode, and a peer.

    python benchmarks/network.py [-n 30] [--parallel 4] [--per-worker 10]
        [--start-containerd [--pause-mirror 127.0.0.1:5000]] [--endpoint unix://… ]

Starts two private pycrio daemons (temporary roots and sockets): one with the built-in network
(bridge pycriobn0), one in CNI mode (`backend = "cni"`) with a conflist of Debian's
containernetworking-plugins (bridge + host-local + portmap, bridge cnibench0). --start-containerd
adds a private containerd 1.6 with the same kind of conflist (bridge ctrdbench0) and
`restrict_oom_score_adj` (this host lacks CAP_SYS_RESOURCE); its sandbox image comes from a
registry mirroring registry.k8s.io at --pause-mirror (the critest kit's registry:
`/work/shared/critest/start_registry.sh /var/lib/critest-registry`).

Per runtime, taking turns iteration by iteration, -n times from scratch (after 2 untimed
warm-ups), once without and once with a hostPort: RunPodSandbox (pod network) and StopPodSandbox, each timed at the gRPC
client, then an untimed RemovePodSandbox. Prints p50/p90 per RPC and the ratio peer/pycrio.
Then --parallel workers each run --per-worker pods (run, stop, remove) at once: pods/second.
Everything made is removed; bridges and nft/iptables state the plugins made are cleaned up.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks.lifecycle import wait_socket, write_hosts  # noqa: E402
from pycrio.cri import api_pb2, api_pb2_grpc  # noqa: E402

CNI_BIN = "/usr/lib/cni"


def conflist(name: str, bridge: str, subnet: str, data_dir: str) -> dict:
    return {
        "cniVersion": "1.0.0",
        "name": name,
        "plugins": [
            {
                "type": "bridge",
                "bridge": bridge,
                "isGateway": True,
                "ipMasq": True,
                "hairpinMode": True,
                "ipam": {"type": "host-local", "ranges": [[{"subnet": subnet}]], "dataDir": data_dir},
            },
            {"type": "portmap", "capabilities": {"portMappings": True}},
        ],
    }


def write_conflist(directory: str, name: str, bridge: str, subnet: str, data_dir: str) -> None:
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, f"10-{name}.conflist"), "w") as f:
        json.dump(conflist(name, bridge, subnet, data_dir), f)


def start_pycrio(base: str, network_toml: str) -> tuple[subprocess.Popen, str]:
    os.makedirs(os.path.join(base, "conf.d"))
    conf = os.path.join(base, "pycrio.conf")
    with open(conf, "w") as f:
        f.write(network_toml)
    sock = os.path.join(base, "run", "pycrio.sock")
    args = ["--config", conf, "--config-dir", os.path.join(base, "conf.d")]
    args += ["--root", os.path.join(base, "root"), "--runroot", os.path.join(base, "run"), "--log-level", "info"]
    log_path = os.path.join(base, "daemon.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "pycrio.cli", *args], stdout=log, stderr=subprocess.STDOUT)
    wait_socket(proc, sock, "pycrio", log_path)
    return proc, f"unix://{sock}"


def start_containerd(base: str, pause_mirror: str) -> tuple[subprocess.Popen, str]:
    certs, net_d = os.path.join(base, "certs.d"), os.path.join(base, "net.d")
    write_conflist(net_d, "ctrdbench", "ctrdbench0", "10.79.0.0/16", os.path.join(base, "ipam"))
    write_hosts(certs, "registry.k8s.io", "https://registry.k8s.io", pause_mirror)
    sock, conf = os.path.join(base, "containerd.sock"), os.path.join(base, "config.toml")
    with open(conf, "w") as f:
        f.write(
            f'version = 2\nroot = "{base}/root"\nstate = "{base}/state"\n[grpc]\n  address = "{sock}"\n'
            '[plugins."io.containerd.grpc.v1.cri"]\n  restrict_oom_score_adj = true\n'
            f'[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "{CNI_BIN}"\n  conf_dir = "{net_d}"\n'
            f'[plugins."io.containerd.grpc.v1.cri".registry]\n  config_path = "{certs}"\n'
        )
    log_path = os.path.join(base, "containerd.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(["containerd", "--config", conf], stdout=log, stderr=subprocess.STDOUT)
    wait_socket(proc, f"{sock}", "containerd", log_path)
    return proc, f"unix://{sock}"


class Runtime:
    def __init__(self, name: str, endpoint: str, base: str):
        self.name, self.endpoint, self.base = name, endpoint, base
        self.channel = grpc.insecure_channel(endpoint)
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.port = 0

    def pod_config(self, host_port: int) -> api_pb2.PodSandboxConfig:
        uid = str(uuid.uuid4())
        return api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name=f"netbench-{uid[:8]}", namespace="netbench", uid=uid),
            log_directory=os.path.join(self.base, "logs", uid),
            port_mappings=[api_pb2.PortMapping(protocol=api_pb2.TCP, container_port=80, host_port=host_port)]
            if host_port
            else [],
            linux=api_pb2.LinuxPodSandboxConfig(
                cgroup_parent=f"/netbench-{self.name}/{uid}",
                security_context=api_pb2.LinuxSandboxSecurityContext(
                    namespace_options=api_pb2.NamespaceOption(network=api_pb2.POD, pid=api_pb2.CONTAINER)
                ),
            ),
        )

    def cycle(self, host_port: int = 0) -> tuple[float, float]:
        """(RunPodSandbox ms, StopPodSandbox ms); the pod is removed (untimed)."""
        config = self.pod_config(host_port)
        t0 = time.perf_counter()
        pod = self.rt.RunPodSandbox(api_pb2.RunPodSandboxRequest(config=config), timeout=120).pod_sandbox_id
        t1 = time.perf_counter()
        status = self.rt.PodSandboxStatus(api_pb2.PodSandboxStatusRequest(pod_sandbox_id=pod), timeout=30)
        if not status.status.network.ip:
            raise SystemExit(f"{self.name}: pod {pod} has no IP")
        t2 = time.perf_counter()
        self.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=pod), timeout=120)
        t3 = time.perf_counter()
        self.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=pod), timeout=120)
        return (t1 - t0) * 1000, (t3 - t2) * 1000


def pct(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def report(title: str, results: dict[str, dict[str, list[float]]]) -> None:
    print(f"\n{title}")
    print(f"{'runtime':<16} {'RunPodSandbox':>18} {'StopPodSandbox':>18}")
    for name, r in results.items():
        print(
            f"{name:<16} {pct(r['run'], 0.5):8.1f} / {pct(r['run'], 0.9):6.1f}"
            f" {pct(r['stop'], 0.5):8.1f} / {pct(r['stop'], 0.9):6.1f}"
        )
    ours = results["pycrio builtin"]
    for name, r in results.items():
        if name != "pycrio builtin":
            print(
                f"{name} / pycrio builtin (p50): RunPodSandbox "
                f"{statistics.median(r['run']) / statistics.median(ours['run']):.1f}x, StopPodSandbox "
                f"{statistics.median(r['stop']) / statistics.median(ours['stop']):.1f}x"
            )


def parallel(rt: Runtime, workers: int, per_worker: int) -> float:
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(per_worker):
                rt.cycle()
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work) for _ in range(workers)]
    t0 = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise SystemExit(f"{rt.name}: {errors[0]}")
    return workers * per_worker / (time.perf_counter() - t0)


def cleanup_host(bridges: list[str]) -> None:
    for br in bridges:
        subprocess.run(["ip", "link", "del", br], capture_output=True)
    # The bridge plugin's ipMasq and portmap leave iptables chains named CNI-*; drop ours (all of them
    # are from this run's networks when nothing else uses CNI on this host).
    for table in ("nat", "filter"):
        rules = subprocess.run(["iptables-save", "-t", table], capture_output=True, text=True).stdout
        if "CNI-" in rules:
            kept = [line for line in rules.splitlines() if "CNI-" not in line]
            subprocess.run(["iptables-restore", "-T", table], input="\n".join(kept) + "\n", text=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=30)
    parser.add_argument("--parallel", type=int, default=4)
    parser.add_argument("--per-worker", type=int, default=10)
    peer = parser.add_mutually_exclusive_group()
    peer.add_argument("--start-containerd", action="store_true")
    peer.add_argument("--endpoint", help="another CRI endpoint with a pod network")
    parser.add_argument("--pause-mirror", default="127.0.0.1:5000")
    parser.add_argument("--keep", action="store_true")
    args = parser.parse_args()

    base = tempfile.mkdtemp(prefix="pycrio-netbench-")
    procs: list[subprocess.Popen] = []
    runtimes: list[Runtime] = []
    try:
        d = os.path.join(base, "builtin")
        p, ep = start_pycrio(d, '[pycrio.network]\nbridge = "pycriobn0"\nsubnet = "10.77.0.0/16"\n')
        procs.append(p)
        runtimes.append(Runtime("pycrio builtin", ep, d))
        d = os.path.join(base, "cni")
        write_conflist(os.path.join(d, "net.d"), "pycriobench", "cnibench0", "10.78.0.0/16", os.path.join(d, "ipam"))
        p, ep = start_pycrio(
            d,
            f'[pycrio.network]\nbackend = "cni"\ncni_conf_dir = "{d}/net.d"\ncni_bin_dirs = ["{CNI_BIN}"]\n',
        )
        procs.append(p)
        runtimes.append(Runtime("pycrio cni", ep, d))
        if args.start_containerd:
            d = os.path.join(base, "containerd")
            os.makedirs(d)
            p, ep = start_containerd(d, args.pause_mirror)
            procs.append(p)
            runtimes.append(Runtime("containerd", ep, d))
        elif args.endpoint:
            runtimes.append(Runtime("peer", args.endpoint, os.path.join(base, "peer")))

        for rt in runtimes:
            for _ in range(2):
                rt.cycle()
        for variant, with_port in (("no hostPort", False), ("one hostPort", True)):
            results: dict[str, dict[str, list[float]]] = {rt.name: {"run": [], "stop": []} for rt in runtimes}
            for i in range(args.n):
                for j, rt in enumerate(runtimes):
                    run, stop = rt.cycle(host_port=30000 + j * 1000 + i % 1000 if with_port else 0)
                    results[rt.name]["run"].append(run)
                    results[rt.name]["stop"].append(stop)
            report(f"pod network, {variant}; n={args.n}; ms at the gRPC client, p50 / p90", results)
        print(f"\n{args.parallel} workers x {args.per_worker} pods (run, stop, remove):")
        for rt in runtimes:
            print(f"{rt.name:<16} {parallel(rt, args.parallel, args.per_worker):6.1f} pods/s")
    finally:
        for rt in runtimes:
            rt.channel.close()
        for p in procs:
            p.terminate()
            try:
                p.wait(15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        for d in ("builtin", "cni"):
            conf = os.path.join(base, d, "pycrio.conf")
            if os.path.exists(conf):
                flags = ["--config", conf, "--config-dir", os.path.join(base, d, "conf.d")]
                flags += ["--root", os.path.join(base, d, "root"), "--runroot", os.path.join(base, d, "run")]
                subprocess.run([sys.executable, "-m", "pycrio.cli", "wipe", *flags], capture_output=True)
        if args.start_containerd:
            subprocess.run(["umount", "-R", os.path.join(base, "containerd", "state")], capture_output=True)
        cleanup_host(["cnibench0", "ctrdbench0"])
        if args.keep:
            print(f"kept {base}")
        else:
            shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
