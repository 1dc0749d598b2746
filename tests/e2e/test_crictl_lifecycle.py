"""crictl, the CRI client of record, drives a pod and a container through their whole life.

runp, create, start, ps, inspect, logs, exec -s, stats, inspectp, stop, rm, stopp, rmp: the
commands an operator types on a node, against a real daemon, runc and the test busybox.
"""

from __future__ import annotations

import json
import os
import subprocess
import time

import pytest

from tests.e2e import test_pods

node = test_pods.node  # the fixture
CRICTL = os.environ.get("CRICTL", "/tmp/critools-bin/crictl")
pytestmark = pytest.mark.skipif(not os.access(CRICTL, os.X_OK), reason=f"no crictl at {CRICTL}")


def crictl(node, *args: str) -> str:
    endpoint = f"unix://{node.d.socket}"
    out = subprocess.run(
        [CRICTL, "--runtime-endpoint", endpoint, "--image-endpoint", endpoint, "--timeout", "20s", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, f"crictl {' '.join(args)}: {out.stderr}"
    return out.stdout


def test_the_whole_life_of_a_pod_through_crictl(node, tmp_path):
    pod_json = tmp_path / "pod.json"
    pod_json.write_text(
        json.dumps(
            {
                "metadata": {"name": "crictl-pod", "namespace": "ns", "uid": "crictl-uid"},
                "hostname": "crictl-host",
                "log_directory": str(tmp_path / "logs"),
                "linux": {"cgroup_parent": f"{node.cgroup_base}/crictl"},
            }
        )
    )
    ctr_json = tmp_path / "ctr.json"
    ctr_json.write_text(
        json.dumps(
            {
                "metadata": {"name": "app"},
                "image": {"image": node.image},
                "command": ["sh", "-c", "echo hello from crictl; exec sleep 600"],
                "log_path": "app.log",
                "labels": {"tier": "test"},
            }
        )
    )
    pod = crictl(node, "runp", str(pod_json)).strip()
    assert len(pod) == 64
    ctr = crictl(node, "create", pod, str(ctr_json), str(pod_json)).strip()
    assert len(ctr) == 64
    crictl(node, "start", ctr)

    listed = json.loads(crictl(node, "ps", "-o", "json"))["containers"]
    assert [(c["id"], c["state"], c["labels"]["tier"]) for c in listed] == [(ctr, "CONTAINER_RUNNING", "test")]
    inspected = json.loads(crictl(node, "inspect", ctr))
    assert inspected["status"]["state"] == "CONTAINER_RUNNING"
    assert inspected["status"]["logPath"].endswith("app.log")
    assert inspected["info"]["pid"] > 0

    deadline = time.monotonic() + 10
    while "hello from crictl" not in crictl(node, "logs", ctr) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert crictl(node, "logs", ctr) == "hello from crictl\n"

    # crictl prints stdout and then stderr, each with a newline of its own.
    assert crictl(node, "exec", "-s", ctr, "hostname") == "crictl-host\n\n\n"
    # No namespace options: the PID namespace is the pod's (the enum's zero), with pycrio's pause as PID 1.
    assert crictl(node, "exec", "-s", ctr, "cat", "/proc/1/cmdline").startswith("/pause\0")

    stats = json.loads(crictl(node, "stats", "-o", "json", "--id", ctr))["stats"]
    assert len(stats) == 1 and stats[0]["attributes"]["id"] == ctr
    assert int(stats[0]["memory"]["workingSetBytes"]["value"]) > 0

    pod_info = json.loads(crictl(node, "inspectp", pod))
    assert pod_info["status"]["state"] == "SANDBOX_READY"
    assert pod_info["status"]["metadata"]["name"] == "crictl-pod"

    crictl(node, "stop", "--timeout", "0", ctr)
    assert json.loads(crictl(node, "inspect", ctr))["status"]["state"] == "CONTAINER_EXITED"
    crictl(node, "rm", ctr)
    assert json.loads(crictl(node, "ps", "-a", "-o", "json"))["containers"] == []
    crictl(node, "stopp", pod)
    assert json.loads(crictl(node, "inspectp", pod))["status"]["state"] == "SANDBOX_NOTREADY"
    crictl(node, "rmp", pod)
    assert json.loads(crictl(node, "pods", "-o", "json"))["items"] == []
