"""``debias-bench world check``: does this machine render the world's image sets as shipped?

The renderer is plain float arithmetic (numpy, torch's ``affine_grid`` / ``grid_sample``), and
another CPU may round a few pixels the other way. Nothing is keyed by the rendered bytes (a set's
fingerprint is its recipe, see :mod:`benchmark.images`), so a difference never retrains a method or
misses the cache; it only means that methods trained here would see images that differ by a level
or so from those the shipped artefacts were trained on. The world build stores the rendered sets
(``rendered.safetensors``, uint8); this command renders them again and counts what differs.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from benchmark.errors import ModelLoadError
from benchmark.images import ImageSet
from benchmark.world.config import WorldConfig, load_world_config
from benchmark.world.data import heldout_set, nontarget_set, reference_set, training_set

RENDERED_FILE = "rendered.safetensors"
SETS: dict[str, Callable[[WorldConfig], ImageSet]] = {
    "train": training_set, "nontarget": nontarget_set, "reference": reference_set, "heldout": heldout_set,
}


def record_rendered(config: WorldConfig, out: Path) -> dict:
    """Store the world's rendered sets in ``out`` and return their manifest entry."""
    sets = {name: make(config) for name, make in SETS.items()}
    info = {name: {"images": len(s), "sha256": s.content_hash(), "fingerprint": s.fingerprint} for name, s in sets.items()}
    save_file({name: torch.from_numpy(np.ascontiguousarray(s.images)) for name, s in sets.items()},
              str(out / RENDERED_FILE), metadata={"sets": json.dumps(info, sort_keys=True)})
    return {"rendered": info}


def check_rendered(config: WorldConfig, directory: Path) -> list[dict]:
    """One row per set: how many of its images render differently here, and by how many levels (0-255)."""
    path = directory / RENDERED_FILE
    try:
        shipped = load_file(str(path))
        with safe_open(str(path), framework="pt") as f:
            recorded = json.loads((f.metadata() or {}).get("sets", "{}"))
    except Exception as exc:  # missing or corrupt: safetensors raises several types
        raise ModelLoadError(f"{path}: cannot read the recorded renders ({str(exc).splitlines()[0]}); "
                             "run `debias-bench world build` to record them") from None
    rows = []
    for name, make in SETS.items():
        here = make(config)
        if (name not in shipped or tuple(shipped[name].shape) != here.images.shape
                or recorded.get(name, {}).get("fingerprint") != here.fingerprint):
            raise ModelLoadError(f"{path}: the recorded {name!r} set is not the one this world renders (recipe "
                                 "fingerprint or shape differs); the world or the renderer changed since the build: "
                                 "run `debias-bench world build`")
        diff = np.abs(shipped[name].numpy().astype(np.int16) - here.images.astype(np.int16))
        per_image = diff.reshape(len(diff), -1).max(axis=1)
        changed = diff[diff > 0]
        rows.append({"set": name, "images": len(here), "differ": int((per_image > 0).sum()),
                     "pixels_differ": int(changed.size), "max_levels": int(diff.max(initial=0)),
                     "mean_levels_where_differ": float(changed.mean()) if changed.size else 0.0,
                     "fingerprint": here.fingerprint})
    return rows


def format_rows(rows: list[dict]) -> str:
    lines = [f"{'set':<10} {'images':>7} {'differ':>7} {'pixels':>7} {'max Δ':>6} {'mean Δ':>7}"]
    for r in rows:
        lines.append(f"{r['set']:<10} {r['images']:>7} {r['differ']:>7} {r['pixels_differ']:>7} "
                     f"{r['max_levels']:>6} {r['mean_levels_where_differ']:>7.2f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``debias-bench world check``; exit 0 either way (a difference blocks nothing)."""
    from benchmark.world import weights_dir

    ap = argparse.ArgumentParser(prog="debias-bench world check", description=__doc__.splitlines()[0])
    ap.add_argument("--variant", default="default", help="world variant (default, alt)")
    ap.add_argument("--json", action="store_true", help="print the rows as JSON")
    args = ap.parse_args(argv)
    config = load_world_config(args.variant)
    rows = check_rendered(config, weights_dir(args.variant))
    if args.json:
        print(json.dumps(rows, indent=1))
        return 0
    print(format_rows(rows))
    differ = sum(r["differ"] for r in rows)
    total = sum(r["images"] for r in rows)
    if differ:
        print(f"\n{differ} of {total} images render differently on this machine (at most "
              f"{max(r['max_levels'] for r in rows)} levels of 255). Keys and shipped artefacts do not depend on "
              "this; methods trained here would see slightly different images.")
    else:
        print(f"\nall {total} images render bit-identically to the shipped record.")
    return 0
