"""Debiasing methods, one module each, found by name through :data:`METHODS`."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from benchmark.registry import Registry

if TYPE_CHECKING:
    from methods.base import Method, MethodData

METHODS: Registry[type[Method]] = Registry(
    "method",
    {
        "baseline": "methods.baseline:Baseline",
        "ddm": "methods.ddm:DDM",
        "invdiff": "methods.invdiff:InvDiff",
        "selfdebias": "methods.selfdebias:SelfDebias",
        "difflens": "methods.difflens:DiffLens",
    },
    {
        "baseline": "the base model as it is (no debiasing)",
        "ddm": "DDM: LoRA fine-tuning with an indicator on target/non-target images (trains)",
        "invdiff": "InvDiff: inferred groups and an invariance-trained guidance UNet (trains)",
        "selfdebias": "SelfDebias: guidance towards modes found in the model's own samples (trains a projection)",
        "difflens": "DiffLens: sparse-autoencoder features of the mid-block edited while sampling (trains an SAE)",
    },
)


def __getattr__(name: str) -> Any:
    # Method and MethodData import torch; `debias-bench --help` and `list` need neither.
    if name in ("Method", "MethodData"):
        from methods import base

        return getattr(base, name)
    raise AttributeError(f"module 'methods' has no attribute {name!r}")


__all__ = ["METHODS", "Method", "MethodData"]
