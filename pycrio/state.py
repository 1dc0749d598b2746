"""The metadata database: one sqlite file (WAL) under root, its schema and migrations.

Calls are short (sub-millisecond with WAL and synchronous=NORMAL) and run on the
event loop's thread; nothing else touches the connection.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sqlite3
from collections.abc import Iterator

logger = logging.getLogger("pycrio.state")

# Each entry upgrades the schema by one version (PRAGMA user_version); never edit a released one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE layers (
        chain_id    TEXT PRIMARY KEY,      -- sha256 chain id: the layer and everything below it
        diff_id     TEXT NOT NULL,         -- sha256 of the uncompressed tar
        parent      TEXT,                  -- chain id of the layer below, NULL for a base layer
        blob_digest TEXT NOT NULL,         -- the compressed blob it came from
        size        INTEGER NOT NULL,      -- bytes of file data in its directory
        inodes      INTEGER NOT NULL,      -- entries in its directory
        created_ns  INTEGER NOT NULL
    );
    CREATE TABLE images (
        id              TEXT PRIMARY KEY,  -- "sha256:<config digest>", the CRI image id
        manifest_digest TEXT NOT NULL,
        index_digest    TEXT,              -- the index/list the manifest was chosen from
        layers          TEXT NOT NULL,     -- JSON list of chain ids, base first
        blobs           TEXT NOT NULL,     -- JSON list of every blob digest the image holds on to
        size            INTEGER NOT NULL,
        user            TEXT NOT NULL,     -- the config's User
        created_ns      INTEGER NOT NULL
    );
    CREATE TABLE image_names (
        name     TEXT PRIMARY KEY,         -- "registry/repo:tag" or "registry/repo@sha256:..."
        image_id TEXT NOT NULL REFERENCES images(id) ON DELETE CASCADE,
        kind     TEXT NOT NULL CHECK (kind IN ('tag', 'digest'))
    );
    CREATE INDEX image_names_by_image ON image_names(image_id);
    """,
    """
    CREATE TABLE pods (
        id              TEXT PRIMARY KEY,
        name            TEXT NOT NULL UNIQUE,   -- metadata name_namespace_uid_attempt
        state           TEXT NOT NULL CHECK (state IN ('creating', 'ready', 'notready')),
        config          BLOB NOT NULL,          -- the PodSandboxConfig as sent
        runtime_handler TEXT NOT NULL,
        created_ns      INTEGER NOT NULL,
        facts           TEXT NOT NULL           -- JSON: namespace paths, pause container, dirs, cgroup parent
    );
    CREATE TABLE containers (
        id          TEXT PRIMARY KEY,
        pod_id      TEXT NOT NULL REFERENCES pods(id),
        name        TEXT NOT NULL UNIQUE,       -- pod id + metadata name_attempt
        state       TEXT NOT NULL CHECK (state IN ('creating', 'created', 'running', 'exited')),
        config      BLOB NOT NULL,              -- the ContainerConfig as sent
        image_id    TEXT NOT NULL,
        image_ref   TEXT NOT NULL,
        pid         INTEGER,
        created_ns  INTEGER NOT NULL,
        started_ns  INTEGER NOT NULL DEFAULT 0,
        finished_ns INTEGER NOT NULL DEFAULT 0,
        exit_code   INTEGER NOT NULL DEFAULT 0,
        reason      TEXT NOT NULL DEFAULT '',
        message     TEXT NOT NULL DEFAULT '',
        facts       TEXT NOT NULL               -- JSON: dirs, log path, stop signal, monitor paths
    );
    CREATE INDEX containers_by_pod ON containers(pod_id);
    """,
    """
    CREATE TABLE ip_allocations (
        ip     TEXT PRIMARY KEY,    -- "10.88.0.7": the built-in network's IPAM (pycrio/network/ipam.py)
        pod_id TEXT NOT NULL        -- no foreign key: the address is taken before the pod row commits
    );
    CREATE INDEX ip_allocations_by_pod ON ip_allocations(pod_id);
    """,
]


class Database:
    """The sqlite connection with the schema brought up to date."""

    def __init__(self, path: str):
        os.makedirs(os.path.dirname(path), mode=0o700, exist_ok=True)
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.row_factory = sqlite3.Row
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=NORMAL")
        self.conn.execute("PRAGMA foreign_keys=ON")
        self.conn.execute("PRAGMA busy_timeout=5000")
        self._migrate()

    def _migrate(self) -> None:
        version = self.conn.execute("PRAGMA user_version").fetchone()[0]
        if version > len(MIGRATIONS):
            raise RuntimeError(
                f"{self.path} has schema version {version}, newer than this pycrio knows ({len(MIGRATIONS)})"
            )
        for number in range(version, len(MIGRATIONS)):
            with self.transaction():
                for statement in _statements(MIGRATIONS[number]):
                    self.conn.execute(statement)
                self.conn.execute(f"PRAGMA user_version = {number + 1}")
            logger.info("database %s upgraded to schema version %d", self.path, number + 1)

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT, rolled back on any exception."""
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK")
            raise
        self.conn.execute("COMMIT")

    def close(self) -> None:
        self.conn.close()


def _statements(script: str) -> list[str]:
    """Split a migration into statements (executescript would COMMIT our transaction)."""
    out, current = [], []
    for line in script.splitlines():
        current.append(line)
        if sqlite3.complete_statement("\n".join(current)):
            out.append("\n".join(current))
            current = []
    return [s for s in out if s.strip()]
