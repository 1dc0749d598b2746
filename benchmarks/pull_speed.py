"""Pull + unpack time of a large multi-layer image, pycrio vs another CRI endpoint (e.g. containerd).

    python benchmarks/pull_speed.py [--endpoint unix:///run/containerd/containerd.sock \
        --certs-dir /etc/containerd/certs.d | --start-containerd] [--size-mb 500] [--files 40000] \
        [--layers 5] [--runs 3] [--fresh-ext4 GB]

It generates (once, cached in --workdir) an image of about --size-mb MB uncompressed in
--layers gzip layers holding --files files, pushes it to a docker-registry it starts on
127.0.0.1, and times PullImage (which includes unpacking) followed by RemoveImage, --runs
times per endpoint. containerd must run with `config_path` pointing at --certs-dir in its CRI
registry config: the script writes hosts.toml there so containerd uses plain http.
--start-containerd runs a private containerd instead (Debian's package; lifecycle.py's setup).

--fresh-ext4 GB puts both runtimes' storage on a new ext4 filesystem (mkfs defaults, with its
journal) in a loop-mounted image file of that size, made for the run and removed after it. A
node's image filesystem is usually such a filesystem; a long-lived one that churns files, or one
without a journal (ext4 then skips every inode deleted in the last minutes when it allocates
one, which made file creation on this VM's root 10-30 times slower after a test run), measures
the filesystem's state more than the runtime.
"""

from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib

import grpc

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from benchmarks import bench_network, lifecycle  # noqa: E402
from pycrio import native  # noqa: E402
from pycrio.cri import api_pb2, api_pb2_grpc  # noqa: E402
from tests.support.images import Blob, build_image, layer_media_type  # noqa: E402
from tests.support.push import push_image  # noqa: E402
from tests.support.registry import start_registry  # noqa: E402

REPO, TAG = "bench/big", "1"


def _file_data(rng: random.Random, size: int) -> bytes:
    """Half random, half repetitive bytes: compresses about 2:1 like real binaries and text."""
    half = size // 2
    return (
        rng.randbytes(half)
        + (b"pycrio benchmark line of text %d\n" % rng.randint(0, 9) * (size // 32 + 1))[: size - half]
    )


def generate(workdir: str, size_mb: int, files: int, layers: int) -> list[Blob]:
    meta_path = os.path.join(workdir, "layers.json")
    wanted = {"size_mb": size_mb, "files": files, "layers": layers, "version": 1}
    if os.path.exists(meta_path):
        with open(meta_path) as f:
            meta = json.load(f)
        if meta["params"] == wanted:
            blobs = []
            for entry in meta["layers"]:
                with open(os.path.join(workdir, entry["file"]), "rb") as f:
                    blobs.append(Blob(f.read(), layer_media_type("oci", "gzip"), entry["diff_id"], "gzip"))
            return blobs
    os.makedirs(workdir, exist_ok=True)
    rng = random.Random(42)
    per_layer_bytes = size_mb * 1_000_000 // layers
    per_layer_files = files // layers
    small_budget = per_layer_bytes // 2  # half the bytes in many small files, half in a few big ones
    entries = []
    blobs = []
    for n in range(layers):
        raw = io.BytesIO()
        with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
            for i in range(per_layer_files):
                size = max(1, int(rng.expovariate(1 / (small_budget / per_layer_files))))
                info = tarfile.TarInfo(f"layer{n}/dir{i % 200}/file{i}")
                info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
                tar.addfile(info, io.BytesIO(_file_data(rng, size)))
            for i in range(4):
                size = (per_layer_bytes - small_budget) // 4
                info = tarfile.TarInfo(f"layer{n}/big/blob{i}")
                info.size, info.mode, info.mtime = size, 0o644, 1_700_000_000
                tar.addfile(info, io.BytesIO(_file_data(rng, size)))
        tar_bytes = raw.getvalue()
        diff_id = "sha256:" + __import__("hashlib").sha256(tar_bytes).hexdigest()
        data = gzip.compress(tar_bytes, compresslevel=6, mtime=0)
        name = f"layer{n}.tar.gz"
        with open(os.path.join(workdir, name), "wb") as f:
            f.write(data)
        entries.append({"file": name, "diff_id": diff_id, "uncompressed": len(tar_bytes)})
        blobs.append(Blob(data, layer_media_type("oci", "gzip"), diff_id, "gzip"))
        print(f"generated layer {n}: {len(tar_bytes) / 1e6:.0f} MB tar, {len(data) / 1e6:.0f} MB gzip", flush=True)
    with open(meta_path, "w") as f:
        json.dump({"params": wanted, "layers": entries}, f)
    return blobs


def start_pycrio(base: str, registry_host: str) -> tuple[subprocess.Popen, str]:
    conf = os.path.join(base, "registries.conf")
    with open(conf, "w") as f:
        f.write(f'[[registry]]\nlocation = "{registry_host}"\ninsecure = true\n')
    with open(os.path.join(base, "pycrio.conf"), "w") as f:
        f.write(bench_network.CONFIG)
    os.makedirs(os.path.join(base, "conf.d"))
    sock = os.path.join(base, "run", "pycrio.sock")
    args = ["--config", os.path.join(base, "pycrio.conf"), "--config-dir", os.path.join(base, "conf.d")]
    args += ["--root", os.path.join(base, "root"), "--runroot", os.path.join(base, "run")]
    args += ["--registries-conf", conf, "--log-level", "info"]
    log = open(os.path.join(base, "daemon.log"), "wb")  # noqa: SIM115 - lives as long as the daemon
    proc = subprocess.Popen([sys.executable, "-m", "pycrio.cli", *args], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 15
    while not os.path.exists(sock):
        if time.monotonic() > deadline or proc.poll() is not None:
            raise SystemExit("pycrio did not start")
        time.sleep(0.02)
    return proc, f"unix://{sock}"


def time_pulls(endpoint: str, image: str, runs: int) -> list[float]:
    times = []
    with grpc.insecure_channel(endpoint.replace("unix://", "unix:")) as channel:
        stub = api_pb2_grpc.ImageServiceStub(channel)
        spec = api_pb2.ImageSpec(image=image)
        for _ in range(runs):
            stub.RemoveImage(api_pb2.RemoveImageRequest(image=spec), timeout=120)
            time.sleep(1)  # let asynchronous garbage collection settle
            os.sync()  # start every run with no dirty data: this disk's writeback throttles later runs
            started = time.perf_counter()
            stub.PullImage(api_pb2.PullImageRequest(image=spec), timeout=1800)
            times.append(time.perf_counter() - started)
        stub.RemoveImage(api_pb2.RemoveImageRequest(image=spec), timeout=120)
    return times


def report(label: str, times: list[float], compressed: int, uncompressed: int, files: int) -> float:
    best, median = min(times), statistics.median(times)
    print(
        f"{label:<12} median {median:6.2f} s  best {best:6.2f} s  "
        f"{uncompressed / median / 1e6:7.1f} MB/s unpacked  {compressed / median / 1e6:7.1f} MB/s fetched  "
        f"{files / median:8.0f} files/s  runs={[round(t, 2) for t in times]}"
    )
    return median


def gzip_decode_rate(blob: Blob) -> float:
    started = time.perf_counter()
    out = zlib.decompressobj(31).decompress(blob.data)
    return len(out) / (time.perf_counter() - started) / 1e6


def pycrio_decode_rate(blob: Blob) -> float:
    """MB/s of output of the extractor's own decoder over blob (native.decompress_discard)."""
    fd = os.memfd_create("blob")
    os.write(fd, blob.data)
    try:
        best, decoded = float("inf"), 0
        for _ in range(3):
            os.lseek(fd, 0, os.SEEK_SET)
            started = time.perf_counter()
            _, decoded, _ = native.decompress_discard(fd)
            best = min(best, time.perf_counter() - started)
        return decoded / best / 1e6
    finally:
        os.close(fd)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--endpoint", help="another CRI endpoint to measure (containerd, CRI-O)")
    parser.add_argument("--certs-dir", help="containerd's registry config_path (hosts.toml is written there)")
    parser.add_argument("--size-mb", type=int, default=500)
    parser.add_argument("--files", type=int, default=40000)
    parser.add_argument("--layers", type=int, default=5)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", default="/var/tmp/pycrio-bench")
    parser.add_argument("--start-containerd", action="store_true", help="compare with a private containerd")
    parser.add_argument("--fresh-ext4", type=int, metavar="GB", help="both runtimes' storage on a new ext4 of GB")
    args = parser.parse_args()
    if args.start_containerd and args.endpoint:
        parser.error("--endpoint and --start-containerd exclude each other")

    blobs = generate(os.path.join(args.workdir, "image"), args.size_mb, args.files, args.layers)
    compressed = sum(b.size for b in blobs)
    with open(os.path.join(args.workdir, "image", "layers.json")) as f:
        uncompressed = sum(entry["uncompressed"] for entry in json.load(f)["layers"])
    print(
        f"image: {len(blobs)} gzip layers, {compressed / 1e6:.0f} MB compressed, {uncompressed / 1e6:.0f} MB tar, "
        f"{args.files} files + {4 * len(blobs)} big ones"
    )
    print(f"reference: single-core zlib gzip decode {gzip_decode_rate(blobs[0]):.0f} MB/s (output)")
    isal = "ISA-L" if native.extract_features() & native.FEATURE_ISAL else "zlib"
    print(f"pycrio's gzip decoder ({isal}), one core: {pycrio_decode_rate(blobs[0]):.0f} MB/s (output, best of 3)")

    base = tempfile.mkdtemp(prefix="pycrio-pullbench-", dir=args.workdir)
    registry = start_registry(os.path.join(base, "registry"))
    storage = base
    ctrd = None
    try:
        if args.fresh_ext4:
            storage = make_fresh_ext4(base, args.fresh_ext4)
            print(f"storage: a new ext4 of {args.fresh_ext4} GB (mkfs defaults) at {storage}")
        push_image(registry.host, REPO, TAG, build_image(blobs))
        image = f"{registry.host}/{REPO}:{TAG}"
        if args.start_containerd:
            os.makedirs(os.path.join(storage, "containerd"))
            ctrd, args.endpoint, args.certs_dir = lifecycle.start_containerd(os.path.join(storage, "containerd"))
        proc, endpoint = start_pycrio(storage, registry.host)
        try:
            ours = report("pycrio", time_pulls(endpoint, image, args.runs), compressed, uncompressed, args.files)
        finally:
            proc.terminate()
            proc.wait(10)
            with open(os.path.join(storage, "daemon.log")) as f:
                for line in f:
                    if "pulled " in line:  # pycrio's own phase timings for each run
                        print("  " + line.split(": ", 1)[1].strip())
        if args.endpoint:
            if args.certs_dir:
                host_dir = os.path.join(args.certs_dir, registry.host)
                os.makedirs(host_dir, exist_ok=True)
                with open(os.path.join(host_dir, "hosts.toml"), "w") as f:
                    f.write(
                        f'server = "http://{registry.host}"\n[host."http://{registry.host}"]\n'
                        '  capabilities = ["pull", "resolve"]\n'
                    )
            label = args.endpoint.rsplit("/", 1)[-1]
            theirs = report(label, time_pulls(args.endpoint, image, args.runs), compressed, uncompressed, args.files)
            print(f"pycrio / {label}: {ours / theirs:.2f} of the time")
    finally:
        if ctrd is not None:
            stop_containerd(ctrd, storage)
        registry.stop()
        bench_network.remove()
        if storage != base:
            remove_fresh_ext4(base, storage)
        shutil.rmtree(base, ignore_errors=True)


def make_fresh_ext4(base: str, gigabytes: int) -> str:
    image, mountpoint = os.path.join(base, "fs.img"), os.path.join(base, "fs")
    with open(image, "wb") as f:
        f.truncate(gigabytes << 30)
    subprocess.run(["mkfs.ext4", "-q", "-F", image], check=True)
    os.makedirs(mountpoint)
    subprocess.run(["mount", "-o", "loop", image, mountpoint], check=True)
    return mountpoint


def remove_fresh_ext4(base: str, mountpoint: str) -> None:
    subprocess.run(["umount", "-R", mountpoint], check=False)
    os.unlink(os.path.join(base, "fs.img"))


def stop_containerd(proc: subprocess.Popen, storage: str) -> None:
    proc.terminate()
    try:
        proc.wait(20)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    # its snapshot mounts and state, under the private root
    with open("/proc/self/mountinfo") as f:
        mounts = [line.split()[4] for line in f if os.path.join(storage, "containerd") in line]
    for mount in sorted(mounts, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], check=False)


if __name__ == "__main__":
    main()
