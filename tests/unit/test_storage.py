"""pycrio/storage: digests and chain ids, the content store, the layer store."""

from __future__ import annotations

import hashlib
import os

import pytest

from pycrio import digest as dg
from pycrio.errors import InvalidArgument
from pycrio.storage.content import ContentStore
from pycrio.storage.layers import LayerStore


def _sha(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def test_check_digest():
    d = _sha(b"x")
    assert dg.check_digest(d) == d
    for bad in ["sha256:" + "A" * 64, "sha512:" + "a" * 128, "sha256:abc", "", "a" * 64, "sha256:" + "a" * 64 + "\n"]:
        with pytest.raises(InvalidArgument):
            dg.check_digest(bad)


def test_chain_ids_follow_the_oci_rule():
    d1, d2, d3 = _sha(b"1"), _sha(b"2"), _sha(b"3")
    c = dg.chain_ids([d1, d2, d3])
    assert c[0] == d1
    assert c[1] == _sha(f"{d1} {d2}".encode())
    assert c[2] == _sha(f"{c[1]} {d3}".encode())
    assert dg.chain_ids([]) == []


def test_content_store_write_read_and_verify(tmp_path):
    cs = ContentStore(str(tmp_path / "blobs"))
    data = b"hello"
    d = _sha(data)
    cs.write(d, data)
    assert cs.has(d) and cs.read(d) == data
    assert cs.path(d) == str(tmp_path / "blobs" / "sha256" / d[7:])
    assert cs.digests() == {d}
    with pytest.raises(InvalidArgument, match="does not match"):
        cs.write(_sha(b"other"), data)
    assert not cs.has(_sha(b"other"))
    assert os.listdir(cs.tmp) == []
    cs.remove(d)
    cs.remove(d)  # idempotent
    assert not cs.has(d)


def test_content_store_temp_commit_and_clear(tmp_path):
    cs = ContentStore(str(tmp_path / "blobs"))
    fd, path = cs.open_temp()
    os.write(fd, b"abc")
    os.close(fd)
    cs.commit(path, _sha(b"abc"))
    assert cs.read(_sha(b"abc")) == b"abc"
    fd, _ = cs.open_temp()
    os.close(fd)
    assert cs.clear_temp() == 1
    assert os.listdir(cs.tmp) == []
    assert cs.has(_sha(b"abc"))


def test_layer_store_commit_remove_and_clear(tmp_path):
    ls = LayerStore(str(tmp_path / "layers"))
    chain = _sha(b"layer")
    temp = ls.new_temp()
    open(os.path.join(temp, "diff", "f"), "w").close()
    assert not ls.exists(chain)
    ls.commit(temp, chain)
    assert ls.exists(chain) and os.path.exists(os.path.join(ls.diff(chain), "f"))
    assert ls.chain_ids_on_disk() == {chain}
    # A second commit of the same chain (a concurrent pull) keeps the first and drops the temp.
    temp2 = ls.new_temp()
    ls.commit(temp2, chain)
    assert not os.path.exists(temp2)
    ls.remove(chain)
    ls.remove(chain)
    assert not ls.exists(chain) and ls.chain_ids_on_disk() == set()
    ls.new_temp()
    assert ls.clear_temp() == 1 and os.listdir(ls.tmp) == []


def test_layer_removal_does_not_follow_symlinks(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "keep").write_text("x")
    ls = LayerStore(str(tmp_path / "layers"))
    chain = _sha(b"evil")
    temp = ls.new_temp()
    os.symlink(str(outside), os.path.join(temp, "diff", "link"))
    ls.commit(temp, chain)
    ls.remove(chain)
    assert (outside / "keep").read_text() == "x"
