"""Where pycrio's daemon memory goes: the stack's floor, stage by stage, then the daemon itself.

    python benchmarks/memory_floor.py [--no-pull]

Each stage is a fresh interpreter (this venv's), VmRSS / RssAnon / RssFile from /proc/<pid>/status:

    interpreter        python doing nothing
    + asyncio          asyncio (which imports ssl, so libssl and libcrypto), logging, json, sqlite3
    + grpc.aio         grpcio's Cython core and grpc.aio
    + CRI protobuf     protobuf (upb) and the CRI's generated classes (pycrio.cri.api_pb2)
    grpc.aio server    all of the above serving Version on a unix socket, after three calls from
                       another process: the least any Python grpc.aio CRI server needs here
    pycrio daemon      the real daemon (temporary root), after start and a pull from a local
                       docker-registry, measured after lifecycle.IDLE_WAIT seconds without a call

and the daemon's resident memory by mapping (its largest files, anonymous memory).
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import bench_network  # noqa: E402
import lifecycle  # noqa: E402

from pycrio.cri import api_pb2  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

REPORT = """
import json, time
time.sleep(0.3)
d = {}
for line in open("/proc/self/status"):
    if line.startswith(("VmRSS", "RssAnon", "RssFile")):
        k, v = line.split(":")
        d[k] = int(v.split()[0])
print(json.dumps(d))
"""

STAGES = [
    ("interpreter", ""),
    ("+ asyncio", "import asyncio, logging, json, sqlite3"),
    ("+ grpc.aio", "import asyncio, logging, json, sqlite3, grpc, grpc.aio"),
    ("+ CRI protobuf", "import asyncio, logging, json, sqlite3, grpc, grpc.aio\nfrom pycrio.cri import api_pb2"),
]

SERVER = """
import asyncio, logging, json, sqlite3, sys
import grpc, grpc.aio
from pycrio.cri import api_pb2

async def version(request, context):
    return api_pb2.VersionResponse(version="0.1.0", runtime_name="floor")

handler = grpc.method_handlers_generic_handler("runtime.v1.RuntimeService", {
    "Version": grpc.unary_unary_rpc_method_handler(
        version,
        request_deserializer=api_pb2.VersionRequest.FromString,
        response_serializer=api_pb2.VersionResponse.SerializeToString,
    )
})

async def main():
    server = grpc.aio.server()
    server.add_generic_rpc_handlers([handler])
    server.add_insecure_port("unix:" + sys.argv[1])
    await server.start()
    print("serving", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    exec(REPORT)
    await server.stop(0)

REPORT = {report!r}
asyncio.run(main())
"""


def stage(code: str) -> dict[str, int]:
    out = subprocess.run([sys.executable, "-c", code + "\n" + REPORT], capture_output=True, text=True, check=True)
    return eval_json(out.stdout)


def eval_json(text: str) -> dict[str, int]:
    import json

    return json.loads(text.strip().splitlines()[-1])


def server_stage(base: str) -> dict[str, int]:
    sock = os.path.join(base, "floor.sock")
    proc = subprocess.Popen(
        [sys.executable, "-c", SERVER.replace("{report!r}", repr(REPORT)), sock],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        assert proc.stdout.readline().strip() == "serving"
        client = (
            "import grpc\nfrom pycrio.cri import api_pb2, api_pb2_grpc\n"
            f"stub = api_pb2_grpc.RuntimeServiceStub(grpc.insecure_channel('unix:{sock}'))\n"
            "for _ in range(3): stub.Version(api_pb2.VersionRequest(), timeout=10)\n"
        )
        subprocess.run([sys.executable, "-c", client], check=True)
        proc.stdin.write("\n")
        proc.stdin.flush()
        return eval_json(proc.stdout.read())
    finally:
        proc.wait(timeout=10)


def status(pid: int) -> dict[str, int]:
    d = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS", "RssAnon", "RssFile")):
                k, v = line.split(":")
                d[k] = int(v.split()[0])
    return d


def mappings(pid: int) -> list[tuple[int, str]]:
    """(Rss kB, name) per mapped file, anonymous memory summed as [anon]."""
    rss: dict[str, int] = {}
    name = ""
    with open(f"/proc/{pid}/smaps") as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and not parts[0].endswith(":"):
                name = parts[5] if len(parts) > 5 and not parts[5].startswith("[stack") else "[anon]"
                if name == "[heap]":
                    name = "[anon]"
            elif parts[0] == "Rss:":
                rss[name] = rss.get(name, 0) + int(parts[1])
    return sorted(((v, k) for k, v in rss.items()), reverse=True)


def mib(kb: int) -> str:
    return f"{kb / 1024:6.1f} MiB"


def line(label: str, d: dict[str, int], previous: dict[str, int] | None) -> None:
    delta = f"  (+{(d['VmRSS'] - previous['VmRSS']) / 1024:.1f})" if previous else ""
    print(f"  {label:16s} rss {mib(d['VmRSS'])}  anon {mib(d['RssAnon'])}  file {mib(d['RssFile'])}{delta}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--no-pull", action="store_true", help="measure the daemon after start only")
    args = parser.parse_args()
    base = tempfile.mkdtemp(prefix="pycrio-memfloor-", dir="/var/tmp")
    registry = None
    proc = None
    try:
        print(f"python {sys.version.split()[0]} ({sys.executable})")
        previous = None
        for label, code in STAGES:
            d = stage(code)
            line(label, d, previous)
            previous = d
        floor = server_stage(base)
        line("grpc.aio server", floor, previous)
        registry = start_registry(os.path.join(base, "registry"))
        os.makedirs(os.path.join(base, "pycrio"))
        proc, endpoint = lifecycle.start_pycrio(os.path.join(base, "pycrio"), registry.host, "info")
        runtime = lifecycle.Runtime("pycrio", endpoint, daemon_pid=proc.pid)
        runtime.connect()
        if not args.no_pull:
            lifecycle.push_image(registry.host, lifecycle.REPO, lifecycle.TAG, lifecycle.build_image())
            image = f"{registry.host}/{lifecycle.REPO}:{lifecycle.TAG}"
            runtime.img.PullImage(api_pb2.PullImageRequest(image=api_pb2.ImageSpec(image=image)), timeout=120)
        time.sleep(lifecycle.IDLE_WAIT)
        daemon = status(proc.pid)
        line("pycrio daemon", daemon, floor)
        print(f"\n  pycrio's own share above the grpc.aio server floor: {mib(daemon['VmRSS'] - floor['VmRSS'])}")
        print("\n  the daemon's resident memory by mapping:")
        for kb, name in mappings(proc.pid)[:12]:
            print(f"    {mib(kb)}  {name}")
    finally:
        if proc is not None:
            proc.send_signal(signal.SIGTERM)
            proc.wait(timeout=30)
        if registry is not None:
            registry.stop()
        bench_network.remove()
        shutil.rmtree(base, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
