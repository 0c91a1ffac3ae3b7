"""Each method's own diagnostics (`debias-bench method NAME ...`): what its preparation found, shown
for a reader. They are not metrics; comparisons over a method's knobs are studies (`debias-bench study`)."""

from __future__ import annotations

from benchmark.registry import Registry

DIAGNOSTICS: Registry = Registry(
    "method with diagnostics",
    {
        "invdiff": "benchmark.diagnostics.invdiff:cli",
        "selfdebias": "benchmark.diagnostics.selfdebias:cli",
        "difflens": "benchmark.diagnostics.difflens:cli",
    },
    {
        "invdiff": "groups: NMI of the inferred groups with the world's attributes, per E",
        "selfdebias": "modes REPORT: modes found per prompt; purity: class shares per discovered mode",
        "difflens": "features: the bias features with their scores, and a grid of boosting each",
    },
)
