"""The wheel holds every module of the source tree, and the daemon imports from it alone."""

from __future__ import annotations

import os
import pathlib
import shutil
import subprocess
import sys
import sysconfig
import zipfile

ROOT = pathlib.Path(__file__).resolve().parents[2]


def test_the_wheel_installs_a_daemon_that_imports(tmp_path):
    # From a copy: setuptools reuses build/lib, where an earlier build may have left any module.
    src = tmp_path / "src"
    src.mkdir()
    for name in ("pyproject.toml", "setup.py", "build.py", "README.md"):
        shutil.copy(ROOT / name, src / name)
    for name in ("pycrio", "csrc"):
        shutil.copytree(ROOT / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.o", "bin"))
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "-w", str(wheels), str(src)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.iterdir()
    names = set(zipfile.ZipFile(wheel).namelist())
    sources = {
        str(p.relative_to(ROOT))
        for p in (ROOT / "pycrio").rglob("*.py")
        if "__pycache__" not in p.parts and not p.name.startswith("api_pb2")
    }
    assert sources - names == set(), "modules missing from the wheel"
    for built in ("pycrio/bin/pycrio-monitor", "pycrio/bin/pycrio-pause", "pycrio/cri/api_pb2.py"):
        assert built in names, built

    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    # -S: no .pth files, so the editable install of this checkout cannot answer the import.
    env = {**os.environ, "PYTHONPATH": f"{target}:{sysconfig.get_paths()['purelib']}"}
    code = "import pycrio.daemon, pycrio.cli, pycrio.network.builtin, pycrio.streaming.session; print(pycrio.__file__)"
    out = subprocess.run(
        [sys.executable, "-S", "-c", code], env=env, cwd=tmp_path, capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == str(target / "pycrio" / "__init__.py")
