"""`debias-bench method invdiff groups`: how well InvDiff's inferred groups align with the world's
true attributes (NMI), per number of groups E (a diagnostic, not a metric)."""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Sequence
from typing import Any

from diffusers import DDPMScheduler

from benchmark.components import Components
from benchmark.errors import BenchError, ConfigError, DataError
from benchmark.images import ImageSet
from methods.invdiff import (
    SOFT_GROUP_COUNTS,
    InvDiffParams,
    alignment,
    encode_training_set,
    infer_groups,
    per_sample_losses,
)


def group_alignment_table(base: Components, target: ImageSet, group_counts: Sequence[int],
                          params: InvDiffParams) -> list[dict[str, Any]]:
    """For each E: the spread before/after inference and the NMI of the groups with each true attribute."""
    if not target.labels:
        raise DataError(f"{target.name}: the target set has no labels to compare the groups with")
    scheduler = DDPMScheduler.from_config(base.scheduler.config)
    train_set = encode_training_set(base, target)
    losses = per_sample_losses(base.unet, train_set, scheduler, params)
    rows = []
    for e in group_counts:
        inferred = infer_groups(losses, e, epochs=params.group_epochs, lr=params.group_lr,
                                nonzero_weight=params.nonzero_weight, seed=params.seed)
        rows.append({"groups": e, "spread_start": inferred.spread_start, "spread_end": inferred.spread_end,
                     "nmi": alignment(inferred.weights, target.labels, target.captions)})
    return rows


def _load_world():
    try:
        from benchmark.world import load_world
    except ImportError as exc:
        raise DataError(f"the world is not available ({exc})") from None
    return load_world()


def cli(argv: list[str]) -> int:
    """``groups``: how well inferred groups align with the world's true attributes (NMI), per E."""
    parser = argparse.ArgumentParser(prog="debias-bench method invdiff")
    sub = parser.add_subparsers(dest="command", required=True)
    g = sub.add_parser("groups", help="infer groups on the world's training set and print their NMI with each attribute")
    g.add_argument("--groups", type=int, nargs="+", default=list(SOFT_GROUP_COUNTS), help="values of E")
    g.add_argument("--paper", action="store_true", help="paper settings for the per-sample losses (1 random t, no normalisation)")
    g.add_argument("--draws", type=int, default=None, help="timesteps averaged per image (overrides the preset)")
    g.add_argument("--epochs", type=int, default=None, help="group-inference epochs (overrides the preset)")
    args = parser.parse_args(argv)

    params = InvDiffParams.paper() if args.paper else InvDiffParams()
    changes = {k: v for k, v in {"loss_draws": args.draws, "group_epochs": args.epochs}.items() if v is not None}
    try:
        params = dataclasses.replace(params, **changes)
        for e in args.groups:
            if e not in SOFT_GROUP_COUNTS:
                raise ConfigError(f"--groups: {e} is not one of {SOFT_GROUP_COUNTS}")
        world = _load_world()
        rows = group_alignment_table(world.components, world.method_data.target, args.groups, params)
    except (BenchError, ValueError) as exc:
        print(f"error: {exc}")
        return 2
    attrs = sorted(rows[0]["nmi"]) if rows else []
    print(f"{'E':>3} {'spread start':>13} {'spread end':>11} " + " ".join(f"{'NMI ' + a:>12}" for a in attrs))
    for r in rows:
        print(f"{r['groups']:>3} {r['spread_start']:>13.5f} {r['spread_end']:>11.5f} "
              + " ".join(f"{r['nmi'][a]:>12.4f}" for a in attrs))
    return 0
