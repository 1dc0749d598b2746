"""Streaming figures: exec round-trip latency (p50/p90) and port-forward throughput, over SPDY/3.1.

    python benchmarks/streaming.py [-n 200] [--mb 200] [--endpoint unix:///run/containerd/containerd.sock --image IMG]

A fresh pycrio (temporary root, a local docker-registry with the tests' busybox) is measured;
with --endpoint, the same on another CRI runtime, which must be able to pull --image (a busybox
with `sh` and `nc`). Each exec is Exec RPC + upgrade + streams + `echo` + the exit status, as a
kubelet sees it; port-forward sends --mb MB to `nc -l -p 7000 -e cat >/dev/null`-like sink that
answers with a byte count, through one SPDY stream pair.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from pycrio.cri import api_pb2, api_pb2_grpc  # noqa: E402
from tests.support.images import build_image  # noqa: E402
from tests.support.push import push_image  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402
from tests.support.spdy_client import SpdyClient, spdy_exec  # noqa: E402


def start_pycrio(base: str, registry: str) -> tuple[subprocess.Popen, str]:
    sock = os.path.join(base, "run", "pycrio.sock")
    os.makedirs(os.path.join(base, "conf.d"))
    conf, regs = os.path.join(base, "pycrio.conf"), os.path.join(base, "registries.conf")
    with open(conf, "w") as f:
        f.write('[pycrio.network]\nbridge = "pycriobench0"\nsubnet = "10.233.7.0/24"\n')
    with open(regs, "w") as f:
        f.write(f'[[registry]]\nlocation = "{registry}"\ninsecure = true\n')
    args = ["--config", conf, "--config-dir", os.path.join(base, "conf.d"), "--registries-conf", regs]
    args += ["--root", os.path.join(base, "root"), "--runroot", os.path.join(base, "run"), "--log-level", "warning"]
    proc = subprocess.Popen([sys.executable, "-m", "pycrio.cli", *args])
    deadline = time.monotonic() + 15
    while not os.path.exists(sock):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("pycrio did not start")
        time.sleep(0.02)
    return proc, f"unix://{sock}"


class Bench:
    def __init__(self, endpoint: str, image: str):
        self.channel = grpc.insecure_channel(endpoint.replace("unix://", "unix:"))
        self.rt = api_pb2_grpc.RuntimeServiceStub(self.channel)
        self.img = api_pb2_grpc.ImageServiceStub(self.channel)
        self.image = image
        self.pod = ""

    def setup(self) -> str:
        self.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=self.image)), timeout=120)
        self.pod_config = api_pb2.PodSandboxConfig(
            metadata=api_pb2.PodSandboxMetadata(name="bench", namespace="bench", uid=f"u{os.getpid()}"),
            linux=api_pb2.LinuxPodSandboxConfig(cgroup_parent="/pycrio-bench"),
        )
        self.pod = self.rt.RunPodSandbox(
            api_pb2.RunPodSandboxRequest(config=self.pod_config), timeout=60
        ).pod_sandbox_id
        cmd = "while true; do nc -l -p 7000 -e sh -c 'wc -c'; done"
        config = api_pb2.ContainerConfig(
            metadata=api_pb2.ContainerMetadata(name="c"),
            image=api_pb2.ImageSpec(image=self.image),
            command=["sh", "-c", cmd],
        )
        req = api_pb2.CreateContainerRequest(pod_sandbox_id=self.pod, config=config, sandbox_config=self.pod_config)
        cid = self.rt.CreateContainer(req, timeout=60).container_id
        self.rt.StartContainer(api_pb2.StartContainerRequest(container_id=cid), timeout=60)
        return cid

    def teardown(self) -> None:
        if self.pod:
            self.rt.StopPodSandbox(api_pb2.StopPodSandboxRequest(pod_sandbox_id=self.pod), timeout=60)
            self.rt.RemovePodSandbox(api_pb2.RemovePodSandboxRequest(pod_sandbox_id=self.pod), timeout=60)
        self.channel.close()

    async def exec_latency(self, cid: str, n: int) -> list[float]:
        samples = []
        for _ in range(n):
            t0 = time.perf_counter()
            url = self.rt.Exec(api_pb2.ExecRequest(container_id=cid, cmd=["echo", "hi"], stdout=True), timeout=10).url
            out, _, _ = await spdy_exec(url, stderr=False)
            samples.append((time.perf_counter() - t0) * 1000)
            assert out == b"hi\n", out
        return samples

    async def forward_throughput(self, mb: int) -> float:
        url = self.rt.PortForward(api_pb2.PortForwardRequest(pod_sandbox_id=self.pod, port=[7000]), timeout=10).url
        client = await SpdyClient.connect(url, ["portforward.k8s.io"])
        block = os.urandom(1 << 20)
        try:
            await asyncio.sleep(0.3)
            error = await client.open_stream({"streamtype": "error", "port": "7000", "requestid": "0"})
            data = await client.open_stream({"streamtype": "data", "port": "7000", "requestid": "0"})
            t0 = time.perf_counter()
            answer = asyncio.ensure_future(data.read_all())
            for _ in range(mb):
                await data.write(block)
            await data.close()
            count = (await answer).strip()
            elapsed = time.perf_counter() - t0
            problem = await error.read_all()
            if count != str(mb << 20).encode():
                raise SystemExit(f"port-forward lost data: {count!r} {problem!r}")
            return mb / elapsed
        finally:
            await client.close()


def measure(label: str, endpoint: str, image: str, n: int, mb: int) -> None:
    bench = Bench(endpoint, image)
    try:
        cid = bench.setup()
        lat = asyncio.run(bench.exec_latency(cid, n))
        qs = statistics.quantiles(lat, n=10)
        print(f"{label:8} exec echo: p50 {statistics.median(lat):6.1f} ms  p90 {qs[8]:6.1f} ms  (n={n})", flush=True)
        try:
            tput = asyncio.run(bench.forward_throughput(mb))
        except (SystemExit, OSError, grpc.RpcError) as e:  # report the other figure all the same
            print(f"{label:8} port-forward failed: {e}")
        else:
            print(f"{label:8} port-forward: {tput:7.1f} MB/s  ({mb} MB, one connection)")
    finally:
        bench.teardown()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="another CRI endpoint to measure beside pycrio")
    parser.add_argument("--image", help="the image --endpoint pulls (busybox with sh and nc)")
    parser.add_argument("-n", type=int, default=200, help="exec round trips")
    parser.add_argument("--mb", type=int, default=200, help="MB sent through port-forward")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="pycrio-bench-")
    registry = start_registry(os.path.join(base, "registry"))
    proc = None
    try:
        push_image(registry.host, "bench/busybox", "latest", build_image())
        proc, endpoint = start_pycrio(os.path.join(base, "pycrio"), registry.host)
        measure("pycrio", endpoint, f"{registry.host}/bench/busybox:latest", args.n, args.mb)
        if args.endpoint:
            measure("other", args.endpoint, args.image or f"{registry.host}/bench/busybox:latest", args.n, args.mb)
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
            pb = os.path.join(base, "pycrio")
            flags = ["--config", os.path.join(pb, "pycrio.conf"), "--config-dir", os.path.join(pb, "conf.d")]
            flags += ["--root", os.path.join(pb, "root"), "--runroot", os.path.join(pb, "run")]
            subprocess.run([sys.executable, "-m", "pycrio.cli", "wipe", *flags], capture_output=True)
        registry.stop()
        shutil.rmtree(base, ignore_errors=True)
        for controller in os.listdir("/sys/fs/cgroup"):  # the empty pod cgroup parents runc made
            top = os.path.join("/sys/fs/cgroup", controller, "pycrio-bench")
            for path, _, _ in sorted(os.walk(top), key=lambda w: -w[0].count("/")):
                with contextlib.suppress(OSError):
                    os.rmdir(path)


if __name__ == "__main__":
    main()
