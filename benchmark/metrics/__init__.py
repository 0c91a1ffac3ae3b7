"""Metrics: pure functions on numpy arrays (formula and source in each docstring) and record builders.

Fairness (``fairness``), classifier-error correction (``cleam``), bootstrap intervals (``bootstrap``),
image quality (``fid``), CLIP alignment (``clip_score``) and results-format records (``report``).
"""

from benchmark.metrics.bootstrap import Interval, bootstrap_ci, bootstrap_set_ci
from benchmark.metrics.cleam import cleam_fd, confusion_matrix, corrected_distribution
from benchmark.metrics.clip_score import clip_i, clip_i_from_embeddings, clip_t, clip_t_from_embeddings
from benchmark.metrics.fairness import (
    FairnessMetric,
    class_distribution,
    deviation_ratio,
    fairness_discrepancy,
    invdiff_bias,
    invdiff_bias_summary,
    joint_classes,
    joint_labels,
    joint_probs,
    kl_divergence,
    named_class_rate,
    normalized_entropy,
    statistical_parity_difference,
)
from benchmark.metrics.fid import (
    FeatureStats,
    FrechetDistance,
    InceptionFeatures,
    extract_features,
    fid_vs_baseline,
    fid_vs_reference,
    frechet_distance,
    kernel_distance,
    load_reference_stats,
    reference_stats,
)
from benchmark.metrics.report import (
    fairness_records,
    intersectional_records,
    make_record,
    mean_records,
    paired_delta_records,
)

__all__ = [
    "FairnessMetric",
    "FeatureStats",
    "FrechetDistance",
    "InceptionFeatures",
    "Interval",
    "bootstrap_ci",
    "bootstrap_set_ci",
    "class_distribution",
    "cleam_fd",
    "clip_i",
    "clip_i_from_embeddings",
    "clip_t",
    "clip_t_from_embeddings",
    "confusion_matrix",
    "corrected_distribution",
    "deviation_ratio",
    "extract_features",
    "fairness_discrepancy",
    "fairness_records",
    "fid_vs_baseline",
    "fid_vs_reference",
    "frechet_distance",
    "intersectional_records",
    "invdiff_bias",
    "invdiff_bias_summary",
    "joint_classes",
    "joint_labels",
    "joint_probs",
    "kernel_distance",
    "kl_divergence",
    "make_record",
    "mean_records",
    "paired_delta_records",
    "named_class_rate",
    "normalized_entropy",
    "load_reference_stats",
    "reference_stats",
    "statistical_parity_difference",
]
