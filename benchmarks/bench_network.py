"""The pod network of a benchmark's private pycrio: a bridge of its own, removed at the end.

Without it a benchmark's daemon would make (and leave) the default `pycrio0` of a real daemon.
"""

from __future__ import annotations

import contextlib
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

BRIDGE, SUBNET = "pycriobench0", "10.75.0.0/16"
CONFIG = f'[pycrio.network]\nbridge = "{BRIDGE}"\nsubnet = "{SUBNET}"\n'


def remove() -> None:
    """Delete the benchmark bridge and its nftables chains; missing is fine."""
    from pycrio.network.builtin import remove_bridge

    with contextlib.suppress(Exception):  # cleanup after the figures: never hide them
        remove_bridge(BRIDGE)
