"""AppArmor and SELinux requests: what pycrio does with them on hosts with and without the LSM.

pycrio loads no AppArmor profile and applies no SELinux labels of its own. A request that names
a profile or a label is honoured only where it can be: an AppArmor `Localhost` profile becomes
the OCI `process.apparmorProfile` on a host with AppArmor enabled; on a host without the LSM, a
request for confinement is refused (FailedPrecondition) rather than silently ignored, since a pod
that asked for it would run unconfined. Unconfined and RuntimeDefault (the runtime's default:
none here) are always accepted, as are empty SELinux options.
"""

from __future__ import annotations

import os

from pycrio.cri import api_pb2
from pycrio.errors import FailedPrecondition, InvalidArgument

APPARMOR_ENABLED_FILE = "/sys/module/apparmor/parameters/enabled"
SELINUX_ENFORCE_FILE = "/sys/fs/selinux/enforce"


def apparmor_enabled(path: str = APPARMOR_ENABLED_FILE) -> bool:
    try:
        with open(path) as f:
            return f.read().strip() == "Y"
    except OSError:
        return False


def selinux_enabled(path: str = SELINUX_ENFORCE_FILE) -> bool:
    return os.path.exists(path)


def apparmor_profile(sc: api_pb2.LinuxContainerSecurityContext, enabled: bool | None = None) -> str | None:
    """The OCI process.apparmorProfile for the container, or None. The `apparmor` field wins over
    the deprecated `apparmor_profile` string."""
    if sc.HasField("apparmor"):
        kind, name = sc.apparmor.profile_type, sc.apparmor.localhost_ref
        if kind in (api_pb2.SecurityProfile.RuntimeDefault, api_pb2.SecurityProfile.Unconfined):
            return None
        if kind != api_pb2.SecurityProfile.Localhost:
            raise InvalidArgument(f"apparmor profile type {kind}: unknown")
        if not name:
            raise InvalidArgument("apparmor: a Localhost profile needs localhost_ref")
    else:
        legacy = sc.apparmor_profile
        if legacy in ("", "runtime/default", "unconfined"):
            return None
        if not legacy.startswith("localhost/") or not legacy[len("localhost/") :]:
            raise InvalidArgument(
                f"apparmor profile {legacy!r}: unknown (runtime/default, unconfined or localhost/<name>)"
            )
        name = legacy[len("localhost/") :]
    if not (apparmor_enabled() if enabled is None else enabled):
        raise FailedPrecondition(f"apparmor profile {name!r} requested, but AppArmor is not enabled on this host")
    return name


def check_selinux(options: api_pb2.SELinuxOption, where: str, enabled: bool | None = None) -> None:
    """Refuse SELinux labels on a host without SELinux; pycrio applies none anywhere (no label support)."""
    fields = {k: getattr(options, k) for k in ("user", "role", "type", "level") if getattr(options, k)}
    if not fields:
        return
    if not (selinux_enabled() if enabled is None else enabled):
        wanted = ", ".join(f"{k}={v}" for k, v in fields.items())
        raise FailedPrecondition(
            f"{where}: SELinux options ({wanted}) requested, but SELinux is not enabled on this host"
        )
    raise FailedPrecondition(f"{where}: SELinux labels ({', '.join(fields)}) are not supported by pycrio")
