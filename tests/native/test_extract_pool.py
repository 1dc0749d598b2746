"""csrc/extract_pool.c through cffi: small files written by worker threads give the same tree as
one thread, whatever the archive replaces, links or whites out; failures and threads end with the call."""

from __future__ import annotations

import errno
import hashlib
import os
import random
import stat
import subprocess

import pytest

from pycrio import native
from tests.native.conftest import extract_bytes
from tests.support import tarcraft as tc

POOL_FILE_MAX = 64 * 1024


def threads() -> int:
    return len(os.listdir("/proc/self/task"))


def random_layer(seed: int, entries: int = 2500) -> bytes:
    """A valid layer that keeps the order sensitive: repeated paths, files that become directories
    and back, hard links to files just written, whiteouts, set-group-ID directories after their
    files, owners, modes, sizes on both sides of the pool's limit."""
    rng = random.Random(seed)
    dirs = ["a", "a/b", "c", "c/d", "c/d/e", "f"]  # every directory explicit: an implied one's mtime is "now"
    names = [f"{d}/n{i}" for d in dirs for i in range(40)] + [f"top{i}" for i in range(20)]
    state = dict.fromkeys(names, "absent")  # what each name is now: file, dir, symlink, wh, absent
    out = [tc.entry(d + "/", type=b"5", mode=0o755) for d in dirs]
    for i in range(entries):
        name = rng.choice(names)
        kind = rng.random()
        meta = {
            "mode": rng.choice([0o644, 0o600, 0o755, 0o4755, 0o640]),
            "uid": rng.choice([0, 0, 0, 1000]),
            "gid": rng.choice([0, 0, 0, 50]),
            "mtime": 1_600_000_000 + i,
        }
        files = [n for n, what in state.items() if what == "file"]
        if kind < 0.66:
            size = rng.choice([0, 1, 100, 4096, 60_000, POOL_FILE_MAX, POOL_FILE_MAX + 1, 200_000])
            out.append(tc.entry(name, rng.randbytes(size), **meta))
            state[name] = "file"
        elif kind < 0.74:
            out.append(tc.entry(name + "/", type=b"5", **{**meta, "mode": rng.choice([0o755, 0o2775])}))
            state[name] = "dir"
        elif kind < 0.80:
            out.append(tc.entry(name, type=b"2", linkname=rng.choice(names), mtime=meta["mtime"]))
            state[name] = "symlink"
        elif kind < 0.88 and files:
            out.append(tc.entry(name, type=b"1", linkname=rng.choice(files)))
            state[name] = "file"
        elif kind < 0.93:
            parent, _, base = name.rpartition("/")
            out.append(tc.entry((parent + "/" if parent else "") + ".wh." + base))
            state[name] = "wh"
        elif state[name] in ("dir", "absent"):
            if state[name] == "absent":
                out.append(tc.entry(name + "/", type=b"5", mtime=meta["mtime"]))
            out.append(tc.entry(name + "/inner", b"in a directory made or kept", **meta))
            state[name] = "dir"
    return b"".join(out) + tc.end()


def tree(root: str) -> dict[str, tuple]:
    """Everything about every entry below root; hard links as the first path of their inode."""
    seen_inodes: dict[tuple[int, int], str] = {}
    out: dict[str, tuple] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in sorted(dirnames + filenames):
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, root)
            st = os.lstat(path)
            kind = stat.S_IFMT(st.st_mode)
            facts: tuple = (kind, stat.S_IMODE(st.st_mode), st.st_uid, st.st_gid)
            if stat.S_ISREG(kind):
                key = (st.st_dev, st.st_ino)
                first = seen_inodes.setdefault(key, rel)
                with open(path, "rb") as f:
                    digest = hashlib.sha256(f.read()).hexdigest()
                facts += (st.st_size, digest, st.st_mtime_ns, first if first != rel else "", st.st_nlink)
            elif stat.S_ISLNK(kind):
                facts += (os.readlink(path), st.st_mtime_ns)
            elif stat.S_ISDIR(kind):
                facts += (st.st_mtime_ns,)
            else:
                facts += (st.st_rdev,)
            out[rel] = facts
    return out


def extract_or_error(data: bytes, dest: str, flags: int) -> tuple[str, object]:
    try:
        return "ok", extract_bytes(data, dest, flags=flags)
    except native.NativeError as e:
        return "error", (e.errno, e.step, e.filename)


@pytest.mark.parametrize("delay_us", [0, 300], ids=["workers-at-speed", "workers-far-behind"])
@pytest.mark.parametrize("seed", range(4))
def test_the_pool_makes_the_tree_one_thread_makes(layout, tmp_path, monkeypatch, seed, delay_us):
    # Slow workers (a test knob of extract_pool.c) let the calling thread run far ahead: every
    # order the pool must keep is then at stake, not only those a fast disk happens to keep.
    monkeypatch.setenv("PYCRIO_TEST_EXTRACT_WORKER_DELAY_US", str(delay_us))
    data = random_layer(seed, entries=1200 if delay_us else 2500)
    serial = str(tmp_path / "serial")
    os.mkdir(serial)
    before = threads()
    got = extract_or_error(data, layout.dest, 0)
    assert threads() == before, "a worker thread outlived the call"
    want = extract_or_error(data, serial, native.EXTRACT_SERIAL)
    assert got[0] == want[0] == "ok", (got, want)
    assert got[1] == want[1]  # the stats: files counted once each
    assert got[1].files > 500 and got[1].hardlinks > 50 and got[1].whiteouts > 25
    assert tree(layout.dest) == tree(serial)


def test_a_failure_after_queued_files_is_the_one_thread_makes(layout, tmp_path):
    """A file, then a name below it: ENOTDIR at the same entry, the queued files drained first."""
    data = b"".join(tc.entry(f"q{i}", b"queued") for i in range(300))
    data += tc.entry("x", b"a file") + tc.entry("x/below", b"cannot be") + tc.entry("never", b"!") + tc.end()
    serial = str(tmp_path / "serial")
    os.mkdir(serial)
    before = threads()
    got = extract_or_error(data, layout.dest, 0)
    assert threads() == before
    want = extract_or_error(data, serial, native.EXTRACT_SERIAL)
    assert got == want and got[0] == "error" and got[1][0] == errno.ENOTDIR and got[1][2] == "x/below"


def test_many_small_files_all_land(layout):
    data = b"".join(tc.entry(f"d{i % 7}/f{i}", f"content {i}\n".encode(), mtime=1_600_000_000 + i) for i in range(3000))
    stats = extract_bytes(data + tc.end(), layout.dest)
    assert stats.files == 3000 and stats.dirs == 0
    for i in (0, 1499, 2999):
        path = os.path.join(layout.dest, f"d{i % 7}", f"f{i}")
        with open(path, "rb") as f:
            assert f.read() == f"content {i}\n".encode()
        assert os.stat(path).st_mtime == 1_600_000_000 + i


def test_a_worker_failure_is_reported_with_its_entry_and_no_thread_is_left(layout):
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", layout.dest], check=True)
    try:
        data = b"".join(tc.entry(f"f{i:03d}", b"x" * 8192) for i in range(100)) + tc.end()
        before = threads()
        with pytest.raises(native.NativeError) as info:
            extract_bytes(data, layout.dest)
        assert threads() == before
        e = info.value
        assert e.errno == errno.ENOSPC and e.step in ("write", "openat")
        assert e.filename.startswith("f") and "No space left" in e.strerror
    finally:
        subprocess.run(["umount", layout.dest], check=True)


def test_serial_flag_is_accepted_and_unknown_flags_are_not(layout):
    stats = extract_bytes(tc.entry("f", b"x") + tc.end(), layout.dest, flags=native.EXTRACT_SERIAL)
    assert stats.files == 1
    with pytest.raises(native.NativeError) as info:
        extract_bytes(tc.end(), layout.dest, flags=1 << 20)
    assert info.value.errno == errno.EINVAL


@pytest.mark.parametrize(
    "body",
    [
        tc.entry("x", b"file") + tc.entry("x/", type=b"5") + tc.entry("x/inner", b"in"),
        tc.entry("y", b"one") + tc.entry("y", b"two", mode=0o600),
        tc.entry("s", b"one") + tc.entry("s", type=b"2", linkname="t"),
        tc.entry("w", b"one") + tc.entry(".wh.w"),
        tc.entry("h", b"one") + tc.entry("h2", type=b"1", linkname="h"),
        tc.entry("g/f", b"before the set-group-ID", gid=0) + tc.entry("g/", type=b"5", mode=0o2775, gid=50),
        tc.entry("d/", type=b"5") + tc.entry("d/f", b"in d") + tc.entry("d", b"a file over d"),
    ],
    ids=[
        "file-then-dir",
        "file-twice",
        "file-then-symlink",
        "file-then-whiteout",
        "link-to-queued",
        "setgid-dir-after-its-file",
        "dir-with-queued-file-replaced",
    ],  # fmt: skip
)
def test_each_order_that_matters_with_workers_far_behind(layout, tmp_path, monkeypatch, body):
    monkeypatch.setenv("PYCRIO_TEST_EXTRACT_WORKER_DELAY_US", "20000")
    data = b"".join(tc.entry(f"pad{i}", b"p") for i in range(20)) + body + tc.end()
    serial = str(tmp_path / "serial")
    os.mkdir(serial)
    got = extract_or_error(data, layout.dest, 0)
    want = extract_or_error(data, serial, native.EXTRACT_SERIAL)
    assert got[0] == want[0] == "ok", (got, want)
    assert got[1] == want[1]
    assert tree(layout.dest) == tree(serial)


def test_a_symlink_to_a_queued_file_as_a_parent_fails_as_with_one_thread(layout, tmp_path, monkeypatch):
    monkeypatch.setenv("PYCRIO_TEST_EXTRACT_WORKER_DELAY_US", "20000")
    data = b"".join(tc.entry(f"pad{i}", b"p") for i in range(20))
    data += tc.entry("f", b"x") + tc.entry("l", type=b"2", linkname="f") + tc.entry("l/x", b"1") + tc.end()
    serial = str(tmp_path / "serial")
    os.mkdir(serial)
    got = extract_or_error(data, layout.dest, 0)
    assert got == extract_or_error(data, serial, native.EXTRACT_SERIAL)
    assert got[0] == "error" and got[1][:1] == (errno.ENOTDIR,) and got[1][2] == "l/x"
