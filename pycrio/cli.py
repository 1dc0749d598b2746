"""The `pycrio` command: run the daemon, print version or config, ask a daemon's status, wipe state."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
from typing import Any

from pycrio import __version__, config, listen, log
from pycrio.errors import PycrioError

FLAG_KEYS = {
    "root": "pycrio.root",
    "runroot": "pycrio.runroot",
    "listen": "pycrio.api.listen",
    "log_level": "pycrio.log_level",
    "registries_conf": "pycrio.image.registries_conf",
}


def _common_flags(suppress: bool) -> argparse.ArgumentParser:
    """Flags every command accepts; subcommands repeat them without overriding the top level."""
    default = argparse.SUPPRESS if suppress else None
    p = argparse.ArgumentParser(add_help=False, argument_default=default)
    p.add_argument("--config", metavar="FILE", help=f"main config file (default {config.DEFAULT_CONFIG_FILE})")
    p.add_argument("--config-dir", metavar="DIR", help=f"drop-in directory (default {config.DEFAULT_CONFIG_DIR})")
    p.add_argument("--root", metavar="DIR", help="persistent state directory (default /var/lib/pycrio)")
    p.add_argument("--runroot", metavar="DIR", help="volatile state directory (default /run/pycrio)")
    p.add_argument("--listen", metavar="SOCKET", help="CRI socket path (default <runroot>/pycrio.sock)")
    p.add_argument("--log-level", metavar="LEVEL", help="error, warning, info or debug (default info)")
    p.add_argument("--registries-conf", metavar="FILE", help="registries.conf v2 file")
    return p


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="pycrio",
        parents=[_common_flags(False)],
        description="pycrio, a Kubernetes container runtime. Without a command, runs the daemon in the foreground.",
    )
    parser.add_argument("--version", action="version", version=f"pycrio {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    flags = _common_flags(True)
    sub.add_parser("run", parents=[flags], help="run the daemon in the foreground (the default)")
    p = sub.add_parser("version", parents=[flags], help="print the version")
    p.add_argument("--json", action="store_true", help="print JSON")
    p = sub.add_parser("config", parents=[flags], help="print the effective configuration as commented TOML")
    p.add_argument("--default", action="store_true", help="print the built-in defaults instead")
    p = sub.add_parser("status", parents=[flags], help="ask the running daemon for its status")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--timeout", type=float, default=5.0, help="seconds to wait for the daemon (default 5)")
    sub.add_parser("wipe", parents=[flags], help="remove all state (root and runroot) when no daemon runs")
    return parser


def load_config(args: argparse.Namespace) -> config.Config:
    overrides = {key: getattr(args, attr, None) for attr, key in FLAG_KEYS.items()}
    return config.load(args.config, args.config_dir, overrides)


def cmd_run(args: argparse.Namespace) -> int:
    from pycrio.daemon import Daemon  # the daemon's imports (grpc, cffi) only when it runs

    cfg = load_config(args)
    log.setup(cfg.log_level)
    daemon = Daemon(cfg, reload=lambda: load_config(args))
    asyncio.run(daemon.run())
    return 0


def cmd_version(args: argparse.Namespace) -> int:
    from pycrio.server.runtime_info import RUNTIME_API_VERSION, RUNTIME_NAME

    info = {
        "name": RUNTIME_NAME,
        "version": __version__,
        "runtime_api_version": RUNTIME_API_VERSION,
        "python": sys.version.split()[0],
    }
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print(f"{RUNTIME_NAME} {__version__} (CRI {RUNTIME_API_VERSION}, Python {info['python']})")
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    cfg = config.Config() if args.default else load_config(args)
    sys.stdout.write(config.render(cfg.resolved()))
    return 0


def _status(path: str, timeout: float) -> dict[str, Any]:
    import grpc
    from google.protobuf import json_format

    from pycrio.cri import api_pb2, api_pb2_grpc

    with grpc.insecure_channel(f"unix:{path}") as channel:
        stub = api_pb2_grpc.RuntimeServiceStub(channel)
        version = stub.Version(api_pb2.VersionRequest(), timeout=timeout)
        status = stub.Status(api_pb2.StatusRequest(verbose=True), timeout=timeout)
    return {
        "version": json_format.MessageToDict(version),
        "status": json_format.MessageToDict(status.status),
        "runtimeHandlers": [json_format.MessageToDict(h) for h in status.runtime_handlers],
        "config": json.loads(status.info.get("config", "{}")),
    }


def cmd_status(args: argparse.Namespace) -> int:
    import grpc

    path = listen.socket_path(load_config(args).resolved().api.listen)
    try:
        result = _status(path, args.timeout)
    except grpc.RpcError as e:
        print(f"pycrio: no daemon answers on {path}: {e.details()}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    v = result["version"]
    print(f"{v['runtimeName']} {v['runtimeVersion']} (CRI {v['runtimeApiVersion']}) on {path}")
    for cond in result["status"].get("conditions", []):
        ready = "true" if cond.get("status") else "false"
        detail = f"  {cond.get('reason', '')}: {cond.get('message', '')}" if not cond.get("status") else ""
        print(f"  {cond['type']:<14} {ready}{detail}")
    names = [h.get("name") or '"" (default)' for h in result["runtimeHandlers"]]
    print(f"  runtime handlers: {', '.join(names)}")
    return 0


def _mounts_under(paths: list[str]) -> list[str]:
    """Mount points at or below any of paths, deepest first."""
    found = []
    with open("/proc/self/mountinfo") as f:
        for line in f:
            point = line.split()[4].encode().decode("unicode_escape")
            if any(point == p or point.startswith(p.rstrip("/") + "/") for p in paths):
                found.append(point)
    return sorted(found, key=lambda p: p.count("/"), reverse=True)


def _delete_runtime_containers(cfg: config.Config) -> None:
    """Kill and delete every container the runtime handlers know (their monitors then exit)."""
    from pycrio.oci import runtime_binary

    for name, handler in cfg.runtime.runtimes.items():
        binary = runtime_binary(cfg, name)
        if binary is None or not os.path.isdir(handler.runtime_root):
            continue
        listed = subprocess.run([binary, "--root", handler.runtime_root, "list", "-q"], capture_output=True, text=True)
        for container_id in listed.stdout.split():
            subprocess.run([binary, "--root", handler.runtime_root, "delete", "--force", container_id], check=False)
            print(f"deleted container {container_id[:12]} ({name})")


def cmd_wipe(args: argparse.Namespace) -> int:
    cfg = load_config(args).resolved()
    sock = listen.socket_path(cfg.api.listen)
    if listen.is_locked(sock) or listen.is_served(sock):
        print(f"pycrio: a daemon is serving {sock}; stop it before wiping", file=sys.stderr)
        return 1
    _delete_runtime_containers(cfg)
    from pycrio.sandbox import kill_recorded_pauses

    for pid in kill_recorded_pauses(cfg.runroot):
        print(f"killed pause {pid}")
    from pycrio.pod_cgroup import remove_recorded

    for cgroup in remove_recorded(cfg.runroot):  # once the containers and pauses in it are gone
        print(f"removed pod cgroup {cgroup}")
    from pycrio.network import cni

    for line in cni.wipe(cfg.network):  # before the pins go: DEL passes each pod's netns
        print(line)
    if cfg.network.backend == "builtin":
        from pycrio.network.builtin import remove_bridge

        remove_bridge(cfg.network.bridge)
    targets = [cfg.root, cfg.runroot, cfg.runtime.exits_dir, cfg.runtime.namespaces_dir]
    targets = [t for t in dict.fromkeys(os.path.realpath(t) for t in targets) if t != "/"]
    for point in _mounts_under(targets):
        # Lazy unmount: a pinned namespace or rootfs may still be busy.
        subprocess.run(["umount", "--lazy", point], check=False)
    for target in targets:
        if not os.path.isdir(target):
            continue
        for entry in os.scandir(target):
            if entry.path == sock + ".lock":  # a daemon starting now takes this lock
                continue
            if entry.is_dir(follow_symlinks=False):
                shutil.rmtree(entry.path)
            else:
                os.unlink(entry.path)
        print(f"wiped {target}")
    return 0


COMMANDS = {
    "run": cmd_run,
    None: cmd_run,
    "version": cmd_version,
    "config": cmd_config,
    "status": cmd_status,
    "wipe": cmd_wipe,
}


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except config.ConfigError as e:
        print(f"pycrio: configuration error: {e}", file=sys.stderr)
        return 2
    except PycrioError as e:
        print(f"pycrio: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
