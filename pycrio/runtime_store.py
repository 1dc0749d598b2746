"""Pod and container records in the metadata database."""

from __future__ import annotations

import json
import sqlite3
from dataclasses import dataclass, field
from typing import Any

from pycrio.cri import api_pb2
from pycrio.errors import AlreadyExists
from pycrio.state import Database


@dataclass
class PodRecord:
    id: str
    name: str
    state: str  # creating | ready | notready
    config: api_pb2.PodSandboxConfig
    runtime_handler: str
    created_ns: int
    facts: dict[str, Any] = field(default_factory=dict)


@dataclass
class ContainerRecord:
    id: str
    pod_id: str
    name: str
    state: str  # creating | created | running | exited
    config: api_pb2.ContainerConfig
    image_id: str
    image_ref: str
    created_ns: int
    pid: int | None = None
    started_ns: int = 0
    finished_ns: int = 0
    exit_code: int = 0
    reason: str = ""
    message: str = ""
    facts: dict[str, Any] = field(default_factory=dict)


class RuntimeStore:
    def __init__(self, db: Database):
        self.db = db

    # ------------------------------------------------------------ pods

    def add_pod(self, pod: PodRecord) -> None:
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO pods (id, name, state, config, runtime_handler, created_ns, facts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    (pod.id, pod.name, pod.state, pod.config.SerializeToString(), pod.runtime_handler,
                     pod.created_ns, json.dumps(pod.facts)),
                )  # fmt: skip
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"a pod sandbox named {pod.name} exists already") from e

    def update_pod(self, pod: PodRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE pods SET state = ?, facts = ? WHERE id = ?", (pod.state, json.dumps(pod.facts), pod.id)
            )

    def update_pod_config(self, pod: PodRecord) -> None:
        """The pod's config as stored (UpdatePodSandboxResources changes its resources and overhead)."""
        with self.db.transaction() as conn:
            conn.execute("UPDATE pods SET config = ? WHERE id = ?", (pod.config.SerializeToString(), pod.id))

    def delete_pod(self, pod_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM pods WHERE id = ?", (pod_id,))

    def _pod(self, row: sqlite3.Row) -> PodRecord:
        return PodRecord(
            id=row["id"],
            name=row["name"],
            state=row["state"],
            config=api_pb2.PodSandboxConfig.FromString(row["config"]),
            runtime_handler=row["runtime_handler"],
            created_ns=row["created_ns"],
            facts=json.loads(row["facts"]),
        )

    def pod(self, pod_id: str) -> PodRecord | None:
        row = self.db.conn.execute("SELECT * FROM pods WHERE id = ?", (pod_id,)).fetchone()
        return self._pod(row) if row else None

    def pods_by_prefix(self, prefix: str) -> list[PodRecord]:
        rows = self.db.conn.execute(
            "SELECT * FROM pods WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "\uffff")
        ).fetchall()
        return [self._pod(r) for r in rows]

    def state_counts(self) -> tuple[dict[str, int], dict[str, int]]:
        """(pods by state, containers by state), each state pycrio uses present, zero or not."""
        pods = dict.fromkeys(("creating", "ready", "notready"), 0)
        pods.update(self.db.conn.execute("SELECT state, COUNT(*) FROM pods GROUP BY state").fetchall())
        containers = dict.fromkeys(("creating", "created", "running", "exited"), 0)
        containers.update(self.db.conn.execute("SELECT state, COUNT(*) FROM containers GROUP BY state").fetchall())
        return pods, containers

    def pods(self) -> list[PodRecord]:
        return [self._pod(r) for r in self.db.conn.execute("SELECT * FROM pods ORDER BY created_ns")]

    # ------------------------------------------------------------ containers

    def add_container(self, c: ContainerRecord) -> None:
        try:
            with self.db.transaction() as conn:
                conn.execute(
                    "INSERT INTO containers (id, pod_id, name, state, config, image_id, image_ref, created_ns, facts)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (c.id, c.pod_id, c.name, c.state, c.config.SerializeToString(), c.image_id, c.image_ref,
                     c.created_ns, json.dumps(c.facts)),
                )  # fmt: skip
        except sqlite3.IntegrityError as e:
            raise AlreadyExists(f"a container named {c.config.metadata.name} exists in the pod already") from e

    def update_container(self, c: ContainerRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute(
                "UPDATE containers SET state = ?, pid = ?, started_ns = ?, finished_ns = ?, exit_code = ?,"
                " reason = ?, message = ?, facts = ? WHERE id = ?",
                (c.state, c.pid, c.started_ns, c.finished_ns, c.exit_code, c.reason, c.message,
                 json.dumps(c.facts), c.id),
            )  # fmt: skip

    def update_container_config(self, c: ContainerRecord) -> None:
        with self.db.transaction() as conn:
            conn.execute("UPDATE containers SET config = ? WHERE id = ?", (c.config.SerializeToString(), c.id))

    def delete_container(self, container_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM containers WHERE id = ?", (container_id,))

    def _container(self, row: sqlite3.Row) -> ContainerRecord:
        return ContainerRecord(
            id=row["id"],
            pod_id=row["pod_id"],
            name=row["name"],
            state=row["state"],
            config=api_pb2.ContainerConfig.FromString(row["config"]),
            image_id=row["image_id"],
            image_ref=row["image_ref"],
            created_ns=row["created_ns"],
            pid=row["pid"],
            started_ns=row["started_ns"],
            finished_ns=row["finished_ns"],
            exit_code=row["exit_code"],
            reason=row["reason"],
            message=row["message"],
            facts=json.loads(row["facts"]),
        )

    def container(self, container_id: str) -> ContainerRecord | None:
        row = self.db.conn.execute("SELECT * FROM containers WHERE id = ?", (container_id,)).fetchone()
        return self._container(row) if row else None

    def containers_by_prefix(self, prefix: str) -> list[ContainerRecord]:
        rows = self.db.conn.execute(
            "SELECT * FROM containers WHERE id >= ? AND id < ? LIMIT 2", (prefix, prefix + "\uffff")
        ).fetchall()
        return [self._container(r) for r in rows]

    def containers(self, pod_id: str | None = None) -> list[ContainerRecord]:
        if pod_id is None:
            rows = self.db.conn.execute("SELECT * FROM containers ORDER BY created_ns")
        else:
            rows = self.db.conn.execute("SELECT * FROM containers WHERE pod_id = ? ORDER BY created_ns", (pod_id,))
        return [self._container(r) for r in rows]

    def image_in_use(self) -> set[str]:
        """Ids of the images containers run, and of those they mount as image volumes."""
        used = {r[0] for r in self.db.conn.execute("SELECT DISTINCT image_id FROM containers")}
        for (blob,) in self.db.conn.execute("SELECT config FROM containers"):
            config = api_pb2.ContainerConfig.FromString(blob)
            used.update(m.image.image_ref for m in config.mounts if m.image.image_ref)
        return used
