"""RPC round-trip latency (Version, Status) of pycrio and, when given, another CRI endpoint.

    python benchmarks/rpc_latency.py [--endpoint unix:///run/containerd/containerd.sock] [-n 2000]

Without --endpoint only a fresh pycrio (temporary root, runroot and socket) is measured.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_network  # noqa: E402
from pycrio.cri import api_pb2, api_pb2_grpc  # noqa: E402


def start_pycrio(base: str) -> tuple[subprocess.Popen, str]:
    sock = os.path.join(base, "run", "pycrio.sock")
    conf = os.path.join(base, "pycrio.conf")
    with open(conf, "w") as f:
        f.write(bench_network.CONFIG)
    os.makedirs(os.path.join(base, "conf.d"))
    args = ["--config", conf, "--config-dir", os.path.join(base, "conf.d")]
    args += ["--root", os.path.join(base, "root"), "--runroot", os.path.join(base, "run"), "--log-level", "warning"]
    proc = subprocess.Popen([sys.executable, "-m", "pycrio.cli", *args])
    deadline = time.monotonic() + 15
    while not os.path.exists(sock):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("pycrio did not start")
        time.sleep(0.02)
    return proc, f"unix://{sock}"


def measure(endpoint: str, n: int) -> dict[str, list[float]]:
    results: dict[str, list[float]] = {}
    with grpc.insecure_channel(endpoint.replace("unix://", "unix:")) as channel:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        stub.Version(api_pb2.VersionRequest(), timeout=10)  # connect
        calls = {
            "Version": lambda: stub.Version(api_pb2.VersionRequest(), timeout=10),
            "Status": lambda: stub.Status(api_pb2.StatusRequest(), timeout=10),
            "Status(verbose)": lambda: stub.Status(api_pb2.StatusRequest(verbose=True), timeout=10),
        }
        for name, call in calls.items():
            samples = []
            for _ in range(n):
                t0 = time.perf_counter()
                call()
                samples.append((time.perf_counter() - t0) * 1000)
            results[name] = samples
    return results


def report(label: str, results: dict[str, list[float]]) -> None:
    for name, samples in results.items():
        samples.sort()
        p50 = statistics.median(samples)
        p90 = samples[int(len(samples) * 0.9)]
        p99 = samples[int(len(samples) * 0.99)]
        print(f"{label:<12} {name:<16} p50 {p50:7.3f} ms  p90 {p90:7.3f} ms  p99 {p99:7.3f} ms  (n={len(samples)})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="another CRI endpoint to measure beside pycrio")
    parser.add_argument("-n", type=int, default=2000, help="calls per RPC")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="pycrio-bench-")
    proc, endpoint = start_pycrio(base)
    try:
        report("pycrio", measure(endpoint, args.n))
    finally:
        proc.terminate()
        proc.wait(10)
        bench_network.remove()
        shutil.rmtree(base, ignore_errors=True)
    if args.endpoint:
        report(args.endpoint.rsplit("/", 1)[-1], measure(args.endpoint, args.n))


if __name__ == "__main__":
    main()
