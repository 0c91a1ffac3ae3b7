"""Debiasing methods, one module each, found by name through :data:`METHODS`."""

from benchmark.registry import Registry
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
)

__all__ = ["METHODS", "Method", "MethodData"]
