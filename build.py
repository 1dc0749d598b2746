"""cffi builder for pycrio._native, the helper executables and the CRI stubs.

setup.py uses `ffibuilder` (cffi_modules) and the two helpers below;
`python build.py` builds everything in place for development.
"""

from __future__ import annotations

import compileall
import os
import pathlib
import subprocess
import sys
import sysconfig

from cffi import FFI

HERE = pathlib.Path(__file__).resolve().parent
CSRC = HERE / "csrc"

# Headers fed to cdef, in this order: err.h first, every later header uses it.
CDEF_HEADERS = [
    "err.h",
    "fs.h",
    "extract.h",
    "ns.h",
    "mount.h",
    "inotify.h",
    "pause_spawn.h",
    "netns_socket.h",
    "memory.h",
]
# C files linked into the extension module.
EXTENSION_SOURCES = [
    "err.c",
    "fdio.c",
    "fs.c",
    "extract.c",
    "extract_stream.c",
    "extract_decompress.c",
    "extract_tar.c",
    "extract_path.c",
    "extract_entry.c",
    "extract_whiteout.c",
    "extract_discard.c",
    "extract_pool.c",
    "ns.c",
    "mount.c",
    "inotify.c",
    "pause_spawn.c",
    "netns_socket.c",
    "memory.c",
]
# Libraries of the extension: zlib and zstd (layers), libcrypto (SHA-256); ISA-L when present.
EXTENSION_LIBRARIES = ["z", "zstd", "crypto"]
# Executables installed as pycrio/bin/<name>: sources, extra flags, libraries.
EXECUTABLES: dict[str, dict[str, list[str]]] = {
    "pycrio-pause": {"sources": ["pause/pause.c"], "cflags": ["-static"], "libs": []},
    # Static: measured smaller RSS than dynamic glibc (docs/monitor.md).
    "pycrio-monitor": {
        "sources": [
            f"monitor/{name}.c"
            for name in ("main", "loop", "spawn", "stdio", "log", "ctl", "attach", "exit", "oom", "sync", "util")
        ],
        "cflags": ["-static"],
        "libs": [],
    },
}

# Executables never built with sanitizers: pycrio-pause must stay static, since pause_spawn.c
# execs it by descriptor inside an empty root where no ELF interpreter exists.
UNSANITIZED = {"pycrio-pause"}

CFLAGS = ["-std=gnu11", "-O2", "-g", "-Wall", "-Wextra", "-Werror", "-D_GNU_SOURCE", "-fno-strict-aliasing"]


def sanitizer_flags() -> list[str]:
    """PYCRIO_SANITIZE=1 builds with AddressSanitizer and UBSan (make test-asan)."""
    if os.environ.get("PYCRIO_SANITIZE") == "1":
        return ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-fno-sanitize-recover=undefined"]
    return []


def have_header(header: str) -> bool:
    """Whether the C compiler finds <header> (an optional library's development files)."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    probe = subprocess.run(
        [*cc.split(), "-E", "-x", "c", "-", "-o", os.devnull],
        input=f"#include <{header}>\n",
        text=True,
        capture_output=True,
    )
    return probe.returncode == 0


def extension_libraries() -> tuple[list[str], list[tuple[str, str | None]]]:
    """Libraries and macros of the extension: ISA-L's igzip for gzip when isa-l.h exists."""
    if have_header("isa-l.h"):
        return [*EXTENSION_LIBRARIES, "isal"], [("PYCRIO_HAVE_ISAL", "1")]
    return list(EXTENSION_LIBRARIES), []


def _cdef_text() -> str:
    return "\n".join((CSRC / "include" / name).read_text() for name in CDEF_HEADERS)


def _source_prelude() -> str:
    includes = ['#include "internal/err_set.h"']
    includes += [f'#include "include/{name}"' for name in CDEF_HEADERS if name != "err.h"]
    return "\n".join(includes)


_libraries, _macros = extension_libraries()
ffibuilder = FFI()
ffibuilder.cdef(_cdef_text())
ffibuilder.set_source(
    "pycrio._native",
    _source_prelude(),
    sources=[f"csrc/{src}" for src in EXTENSION_SOURCES],  # setuptools wants relative paths,
    include_dirs=["csrc"],
    libraries=_libraries,
    define_macros=_macros,
    extra_compile_args=CFLAGS + sanitizer_flags(),
    extra_link_args=sanitizer_flags(),
)


def build_executables(out_dir: pathlib.Path) -> list[pathlib.Path]:
    """Compile every entry of EXECUTABLES into out_dir; return the paths."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    out_dir.mkdir(parents=True, exist_ok=True)
    built = []
    for name, spec in EXECUTABLES.items():
        target = out_dir / name
        flags = list(spec["cflags"])
        if sanitizer_flags() and name not in UNSANITIZED:
            flags = [f for f in flags if f != "-static"] + sanitizer_flags()
        cmd = [*cc.split(), *CFLAGS, *flags, "-I", str(CSRC), "-o", str(target)]
        cmd += [str(CSRC / s) for s in spec["sources"]] + spec["libs"]
        subprocess.run(cmd, check=True)
        built.append(target)
    return built


def generate_cri_stubs(out_dir: pathlib.Path) -> None:
    """Compile pycrio/cri/api.proto to api_pb2.py and api_pb2_grpc.py in out_dir."""
    from grpc_tools import protoc

    proto_dir = HERE / "pycrio" / "cri"
    out_dir.mkdir(parents=True, exist_ok=True)
    include = pathlib.Path(protoc.__file__).parent / "_proto"
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_dir}",
            f"-I{include}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            f"--pyi_out={out_dir}",
            str(proto_dir / "api.proto"),
        ]
    )
    if rc != 0:
        raise RuntimeError(f"protoc failed on {proto_dir / 'api.proto'} (exit {rc})")
    # grpc_tools writes `import api_pb2`; make it package-relative.
    grpc_file = out_dir / "api_pb2_grpc.py"
    text = grpc_file.read_text().replace("import api_pb2 as api__pb2", "from . import api_pb2 as api__pb2")
    grpc_file.write_text(text)


def build_in_place() -> None:
    """Development build: stubs, extension and executables inside the source tree."""
    generate_cri_stubs(HERE / "pycrio" / "cri")
    ffibuilder.compile(tmpdir=".", verbose=False)  # cwd is HERE: writes pycrio/_native.*.so
    build_executables(HERE / "pycrio" / "bin")
    # Byte-compile the package, as pip does when it installs one. Without the .pyc files (an
    # editable install under PYTHONDONTWRITEBYTECODE=1) the daemon compiles every module at each
    # start: slower, and the compiler's transient memory stayed in the daemon's RSS (~1 MiB).
    compileall.compile_dir(HERE / "pycrio", quiet=1)


if __name__ == "__main__":
    os.chdir(HERE)
    build_in_place()
    print("built pycrio._native, pycrio/bin/*, pycrio/cri/api_pb2*.py", file=sys.stderr)
