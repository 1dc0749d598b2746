"""The layer store: one extracted layer per chain id, layers/<hex>/diff, made in tmp/ and renamed in."""

from __future__ import annotations

import os
import secrets
import shutil

from pycrio import digest as dg


class LayerStore:
    def __init__(self, root: str):
        self.root = root
        self.tmp = os.path.join(root, "tmp")
        os.makedirs(self.tmp, mode=0o700, exist_ok=True)

    def dir(self, chain_id: str) -> str:
        """The layer's directory; its files are in <dir>/diff (an overlay lowerdir)."""
        return os.path.join(self.root, dg.hex_of(chain_id))

    def diff(self, chain_id: str) -> str:
        return os.path.join(self.dir(chain_id), "diff")

    def exists(self, chain_id: str) -> bool:
        return os.path.isdir(self.diff(chain_id))

    def new_temp(self) -> str:
        """A fresh temporary layer directory with an empty diff/ inside; returns the layer dir."""
        path = os.path.join(self.tmp, secrets.token_hex(12))
        os.makedirs(os.path.join(path, "diff"), mode=0o755)
        os.chmod(path, 0o700)
        return path

    def commit(self, temp_dir: str, chain_id: str) -> None:
        """Move an extracted temporary layer into place (a rename on the same filesystem)."""
        target = self.dir(chain_id)
        if os.path.isdir(target):  # another pull committed the same layer first
            remove_tree(temp_dir)
            return
        os.chmod(temp_dir, 0o755)
        os.rename(temp_dir, target)

    def remove(self, chain_id: str) -> None:
        """Remove a layer: renamed into tmp/ first, so a crash never leaves half a layer in place."""
        target = self.dir(chain_id)
        if not os.path.isdir(target):
            return
        doomed = os.path.join(self.tmp, "rm-" + secrets.token_hex(8))
        os.rename(target, doomed)
        remove_tree(doomed)

    def chain_ids_on_disk(self) -> set[str]:
        return {"sha256:" + n for n in os.listdir(self.root) if dg.is_digest("sha256:" + n)}

    def clear_temp(self) -> int:
        names = os.listdir(self.tmp)
        for name in names:
            remove_tree(os.path.join(self.tmp, name))
        return len(names)


def remove_tree(path: str) -> None:
    """Remove a directory tree without following symlinks (root may delete in read-only dirs)."""
    shutil.rmtree(path)
