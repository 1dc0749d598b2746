"""Image and layer records in the metadata database: add, find, list, remove."""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass, field

from pycrio.state import Database

_HEX = re.compile(r"[0-9a-f]{1,64}")


@dataclass(frozen=True)
class LayerRecord:
    chain_id: str
    diff_id: str
    parent: str | None
    blob_digest: str
    size: int
    inodes: int


@dataclass(frozen=True)
class ImageRecord:
    id: str
    manifest_digest: str
    index_digest: str | None
    layers: list[str]
    blobs: list[str]
    size: int
    user: str
    created_ns: int
    tags: list[str] = field(default_factory=list)
    digests: list[str] = field(default_factory=list)

    @property
    def repo_digest(self) -> str:
        """The digest clients pulled by: the index's when there was one."""
        return self.index_digest or self.manifest_digest


class ImageStore:
    def __init__(self, db: Database):
        self.db = db

    # ------------------------------------------------------------ layers

    def has_layer(self, chain_id: str) -> bool:
        return self.db.conn.execute("SELECT 1 FROM layers WHERE chain_id = ?", (chain_id,)).fetchone() is not None

    def add_layer(self, layer: LayerRecord) -> None:
        self.db.conn.execute(
            "INSERT OR IGNORE INTO layers (chain_id, diff_id, parent, blob_digest, size, inodes, created_ns)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            (layer.chain_id, layer.diff_id, layer.parent, layer.blob_digest, layer.size, layer.inodes, time.time_ns()),
        )

    def layer_chain_ids(self) -> set[str]:
        return {row[0] for row in self.db.conn.execute("SELECT chain_id FROM layers")}

    def layer_sizes(self, chain_ids: list[str]) -> int:
        if not chain_ids:
            return 0
        marks = ",".join("?" * len(chain_ids))
        row = self.db.conn.execute(f"SELECT COALESCE(SUM(size), 0) FROM layers WHERE chain_id IN ({marks})", chain_ids)
        return int(row.fetchone()[0])

    def layer_usage(self) -> tuple[int, int]:
        """(bytes, inodes) of every stored layer."""
        row = self.db.conn.execute("SELECT COALESCE(SUM(size), 0), COALESCE(SUM(inodes), 0) FROM layers").fetchone()
        return int(row[0]), int(row[1])

    def remove_layer_records(self, chain_ids: set[str]) -> None:
        with self.db.transaction() as conn:
            conn.executemany("DELETE FROM layers WHERE chain_id = ?", [(c,) for c in chain_ids])

    # ------------------------------------------------------------ images

    def add_image(self, image: ImageRecord, names: list[tuple[str, str]]) -> None:
        """Insert (or refresh) image and point names [(name, "tag"|"digest")] at it, atomically."""
        with self.db.transaction() as conn:
            conn.execute(
                "INSERT INTO images (id, manifest_digest, index_digest, layers, blobs, size, user, created_ns)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT(id) DO UPDATE SET manifest_digest = excluded.manifest_digest,"
                " index_digest = excluded.index_digest, blobs = excluded.blobs",
                (
                    image.id,
                    image.manifest_digest,
                    image.index_digest,
                    json.dumps(image.layers),
                    json.dumps(image.blobs),
                    image.size,
                    image.user,
                    image.created_ns,
                ),
            )
            conn.executemany(
                "INSERT INTO image_names (name, image_id, kind) VALUES (?, ?, ?)"
                " ON CONFLICT(name) DO UPDATE SET image_id = excluded.image_id, kind = excluded.kind",
                [(name, image.id, kind) for name, kind in names],
            )

    def _record(self, row) -> ImageRecord:
        names = self.db.conn.execute(
            "SELECT name, kind FROM image_names WHERE image_id = ? ORDER BY name", (row["id"],)
        ).fetchall()
        return ImageRecord(
            id=row["id"],
            manifest_digest=row["manifest_digest"],
            index_digest=row["index_digest"],
            layers=json.loads(row["layers"]),
            blobs=json.loads(row["blobs"]),
            size=row["size"],
            user=row["user"],
            created_ns=row["created_ns"],
            tags=[n["name"] for n in names if n["kind"] == "tag"],
            digests=[n["name"] for n in names if n["kind"] == "digest"],
        )

    def get(self, image_id: str) -> ImageRecord | None:
        row = self.db.conn.execute("SELECT * FROM images WHERE id = ?", (image_id,)).fetchone()
        return self._record(row) if row else None

    def by_name(self, name: str) -> ImageRecord | None:
        row = self.db.conn.execute(
            "SELECT images.* FROM image_names JOIN images ON images.id = image_names.image_id WHERE name = ?",
            (name,),
        ).fetchone()
        return self._record(row) if row else None

    def by_id_prefix(self, text: str) -> ImageRecord | None:
        """An image whose id is sha256:<text...>; None when absent or ambiguous."""
        hexpart = text.removeprefix("sha256:")
        if not _HEX.fullmatch(hexpart):
            return None
        rows = self.db.conn.execute(
            "SELECT * FROM images WHERE id >= ? AND id < ? LIMIT 2", (f"sha256:{hexpart}", f"sha256:{hexpart}g")
        ).fetchall()
        return self._record(rows[0]) if len(rows) == 1 else None

    def by_manifest_digest(self, repository_name: str, digest: str) -> ImageRecord | None:
        """An image of repository_name ("registry/repo") pulled from a manifest or index with digest."""
        row = self.db.conn.execute(
            "SELECT images.* FROM images JOIN image_names ON images.id = image_names.image_id"
            " WHERE (images.manifest_digest = ? OR images.index_digest = ?)"
            " AND (image_names.name LIKE ? OR image_names.name LIKE ?) LIMIT 1",
            (digest, digest, repository_name + ":%", repository_name + "@%"),
        ).fetchone()
        return self._record(row) if row else None

    def all(self) -> list[ImageRecord]:
        return [self._record(row) for row in self.db.conn.execute("SELECT * FROM images ORDER BY created_ns")]

    def remove_image(self, image_id: str) -> None:
        with self.db.transaction() as conn:
            conn.execute("DELETE FROM images WHERE id = ?", (image_id,))
