"""pycrio/state.py (schema, transactions) and pycrio/image/store.py (image and layer records)."""

from __future__ import annotations

import hashlib
import sqlite3

import pytest

from pycrio.image.store import ImageRecord, ImageStore, LayerRecord
from pycrio.state import MIGRATIONS, Database


def _sha(text: str) -> str:
    return "sha256:" + hashlib.sha256(text.encode()).hexdigest()


@pytest.fixture
def store(tmp_path):
    db = Database(str(tmp_path / "db" / "pycrio.db"))
    yield ImageStore(db)
    db.close()


def _image(name: str, layers: list[str]) -> ImageRecord:
    return ImageRecord(
        id=_sha("config-" + name),
        manifest_digest=_sha("manifest-" + name),
        index_digest=None,
        layers=layers,
        blobs=[_sha("manifest-" + name), _sha("config-" + name)],
        size=10,
        user="1000",
        created_ns=1,
    )


def test_schema_version_and_reopen(tmp_path):
    path = str(tmp_path / "pycrio.db")
    db = Database(path)
    assert db.conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert db.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    db.close()
    Database(path).close()  # migrations are not re-run


def test_newer_schema_is_refused(tmp_path):
    path = str(tmp_path / "pycrio.db")
    conn = sqlite3.connect(path)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    with pytest.raises(RuntimeError, match="newer than this pycrio"):
        Database(path)


def test_transaction_rolls_back(store):
    with pytest.raises(ZeroDivisionError), store.db.transaction() as conn:
        conn.execute("INSERT INTO layers VALUES ('c', 'd', NULL, 'b', 1, 1, 0)")
        1 / 0  # noqa: B018
    assert not store.has_layer("c")


def test_add_find_and_move_a_tag(store):
    a = _image("a", [_sha("l1")])
    store.add_image(a, [("docker.io/library/x:1", "tag"), ("docker.io/library/x@" + a.manifest_digest, "digest")])
    got = store.by_name("docker.io/library/x:1")
    assert got is not None and got.id == a.id
    assert got.tags == ["docker.io/library/x:1"] and got.digests == ["docker.io/library/x@" + a.manifest_digest]
    assert store.by_id_prefix(a.id[7:19]).id == a.id
    assert store.by_manifest_digest("docker.io/library/x", a.manifest_digest).id == a.id
    assert store.by_manifest_digest("docker.io/library/y", a.manifest_digest) is None
    b = _image("b", [_sha("l2")])
    store.add_image(b, [("docker.io/library/x:1", "tag")])
    assert store.by_name("docker.io/library/x:1").id == b.id
    assert store.get(a.id).tags == []  # the tag moved; a keeps its digest name
    store.remove_image(a.id)
    assert store.get(a.id) is None and store.by_name("docker.io/library/x@" + a.manifest_digest) is None


def test_ambiguous_prefix_is_none(store):
    images = [_image(str(i), []) for i in range(40)]
    for i, image in enumerate(images):
        store.add_image(image, [(f"r/x:{i}", "tag")])
    first = [image.id[7] for image in images]
    shared = next(c for c in first if first.count(c) > 1)  # 40 ids, 16 hex digits: some share one
    unique = next((image.id for image in images if first.count(image.id[7]) == 1), None)
    assert store.by_id_prefix(shared) is None
    if unique:
        assert store.by_id_prefix(unique[7]).id == unique
    assert store.by_id_prefix("xyz") is None


def test_layers_and_usage(store):
    store.add_layer(LayerRecord(_sha("c1"), _sha("d1"), None, _sha("b1"), 100, 5))
    store.add_layer(LayerRecord(_sha("c2"), _sha("d2"), _sha("c1"), _sha("b2"), 50, 2))
    store.add_layer(LayerRecord(_sha("c2"), _sha("d2"), _sha("c1"), _sha("b2"), 50, 2))  # ignored
    assert store.layer_usage() == (150, 7)
    assert store.layer_sizes([_sha("c2")]) == 50
    store.remove_layer_records({_sha("c1")})
    assert store.layer_chain_ids() == {_sha("c2")}
