"""pycrio/exits.py: the exit watcher (inotify on the exits directory) and its start-up scan."""

from __future__ import annotations

import asyncio
import json
import logging
import os

import pytest

from pycrio.exits import ExitWatcher, is_exit_file_name
from pycrio.monitor import ExitStatus


def write_exit(directory: str, name: str, code: int = 0, atomic: bool = True, text: str | None = None) -> None:
    """What pycrio-monitor does: .<name>.tmp, then rename (atomic), or a plain write."""
    body = (
        text
        if text is not None
        else json.dumps({"exit_code": code, "signal": 0, "finished_ns": 123, "oom_killed": False})
    )
    final = os.path.join(directory, name)
    path = os.path.join(directory, f".{name}.tmp") if atomic else final
    with open(path, "w") as f:
        f.write(body)
    if atomic:
        os.rename(path, final)


async def settle(seen: list | None = None, count: int = 0, timeout: float = 3.0) -> None:
    """Let the loop run the inotify reader: until seen has count items (if given), then a little more."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while seen is not None and len(seen) < count and loop.time() < deadline:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.05)  # room for a duplicate to show up


def run(coro):
    return asyncio.run(coro)


def test_names():
    assert is_exit_file_name("abc123")
    assert not is_exit_file_name(".abc.tmp")
    assert not is_exit_file_name("abc.tmp")
    assert not is_exit_file_name("")


def test_fires_once_per_atomic_exit(tmp_path):
    seen: list[tuple[str, ExitStatus]] = []

    async def main():
        with ExitWatcher(str(tmp_path), lambda cid, st: seen.append((cid, st))):
            write_exit(str(tmp_path), "c1", 3)
            write_exit(str(tmp_path), "c2", 0)
            await settle(seen, 2)

    run(main())
    assert seen == [("c1", ExitStatus(3, 0, 123, False)), ("c2", ExitStatus(0, 0, 123, False))]


def test_plain_write_fires_once(tmp_path):
    seen = []

    async def main():
        with ExitWatcher(str(tmp_path), lambda cid, st: seen.append(cid)):
            write_exit(str(tmp_path), "c1", atomic=False)
            await settle(seen, 1)

    run(main())
    assert seen == ["c1"]


def test_scan_finds_exits_from_before_start_once(tmp_path):
    write_exit(str(tmp_path), "old1", 1)
    write_exit(str(tmp_path), "old2", 2)
    (tmp_path / ".half.tmp").write_text("{")
    seen = []

    async def main():
        w = ExitWatcher(str(tmp_path), lambda cid, st: seen.append((cid, st.exit_code)))
        w.start()
        try:
            write_exit(str(tmp_path), "new", 9)  # its event is queued, not read yet
            assert sorted(w.scan()) == ["new", "old1", "old2"]
            await settle()  # the queued event for "new" must not report it again
            assert w.scan() == []
        finally:
            w.close()

    run(main())
    assert sorted(seen) == [("new", 9), ("old1", 1), ("old2", 2)]


def test_removed_and_written_again_fires_again(tmp_path):
    seen = []

    async def main():
        with ExitWatcher(str(tmp_path), lambda cid, st: seen.append(st.exit_code)):
            write_exit(str(tmp_path), "c", 1)
            await settle(seen, 1)
            os.unlink(tmp_path / "c")
            await settle()
            write_exit(str(tmp_path), "c", 2)
            await settle(seen, 2)

    run(main())
    assert seen == [1, 2]


def test_malformed_file_is_logged_and_skipped(tmp_path, caplog):
    seen = []

    async def main():
        with ExitWatcher(str(tmp_path), lambda cid, st: seen.append(cid)):
            write_exit(str(tmp_path), "bad", text="{not json")
            write_exit(str(tmp_path), "good")
            await settle(seen, 1)

    with caplog.at_level(logging.ERROR, logger="pycrio.exits"):
        run(main())
    assert seen == ["good"]
    assert "bad: not JSON" in caplog.text


def test_callback_exception_does_not_stop_the_watcher(tmp_path, caplog):
    seen = []

    def callback(cid, st):
        seen.append(cid)
        if cid == "a":
            raise RuntimeError("boom")

    async def main():
        with ExitWatcher(str(tmp_path), callback):
            write_exit(str(tmp_path), "a")
            await settle(seen, 1)
            write_exit(str(tmp_path), "b")
            await settle(seen, 2)

    with caplog.at_level(logging.ERROR, logger="pycrio.exits"):
        run(main())
    assert seen == ["a", "b"]
    assert "boom" in caplog.text


def test_directories_are_ignored(tmp_path):
    seen = []

    async def main():
        with ExitWatcher(str(tmp_path), lambda cid, st: seen.append(cid)):
            os.mkdir(tmp_path / "d")
            os.rename(tmp_path / "d", tmp_path / "e")
            await settle()

    run(main())
    assert seen == []


def test_missing_directory_raises(tmp_path):
    async def main():
        ExitWatcher(str(tmp_path / "missing"), lambda cid, st: None).start()

    with pytest.raises(OSError, match="inotify_add_watch"):
        run(main())


def test_close_removes_the_reader(tmp_path):
    async def main():
        w = ExitWatcher(str(tmp_path), lambda cid, st: None)
        w.start()
        fd = w._fd
        w.close()
        w.close()
        assert w._fd == -1
        assert asyncio.get_running_loop().remove_reader(fd) is False

    run(main())
