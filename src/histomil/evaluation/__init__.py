"""histomil.evaluation: metrics, thresholds, statistics, localization and survival metrics.

Thresholds are chosen on validation data only; undefined metrics are NaN with a
:class:`MetricWarning`. See docs/evaluation.md.
"""

from histomil.evaluation.localization import (
    ALPHAS,
    localization_metrics,
    mean_localization,
    nonlesion_attention_sum,
)
from histomil.evaluation.metrics import (
    MetricWarning,
    choose_threshold,
    classification_metrics,
    multiclass_metrics,
)
from histomil.evaluation.stats import (
    BootstrapCI,
    MannWhitney,
    Summary,
    bootstrap_ci,
    bootstrap_cis,
    fmt_mean_sd,
    mann_whitney,
    mean_sd,
    significance_stars,
    summarize,
)
from histomil.evaluation.survival import concordance_ci, concordance_index, discretize, time_bins

__all__ = [
    "ALPHAS",
    "BootstrapCI",
    "MannWhitney",
    "MetricWarning",
    "Summary",
    "bootstrap_ci",
    "bootstrap_cis",
    "choose_threshold",
    "classification_metrics",
    "concordance_ci",
    "concordance_index",
    "discretize",
    "fmt_mean_sd",
    "localization_metrics",
    "mann_whitney",
    "mean_localization",
    "mean_sd",
    "multiclass_metrics",
    "nonlesion_attention_sum",
    "significance_stars",
    "summarize",
    "time_bins",
]
