"""Sharding a run over processes and machines with ``accelerate``.

    accelerate launch --num_processes 4 -m benchmark run CONFIG

Every process prepares each method (rank 0 first, so the others load its artefacts from the shared
cache), then generates and classifies its share of the (method, prompt) cells into the shared cache.
After a barrier, rank 0 runs the whole config once more: every image and prediction is now a cache hit,
so it only scores and writes the results. The numbers are therefore those of a one-process run by
construction; the cache directory must be shared by all processes (a network file system across
machines).
"""

from __future__ import annotations

import os
from typing import Any


def process_state() -> Any | None:
    """accelerate's PartialState when launched with more than one process, else None."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from accelerate import PartialState

    state = PartialState(cpu=os.environ.get("ACCELERATE_USE_CPU", "").lower() in {"1", "true"})
    return state if state.num_processes > 1 else None


def my_share(index: int, state: Any) -> bool:
    """Round-robin assignment of cell ``index`` to processes."""
    return index % state.num_processes == state.process_index
