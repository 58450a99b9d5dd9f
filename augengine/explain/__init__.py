"""Explanations: layer-wise relevance propagation for the project's ResNets and heatmaps of it."""
from augengine.explain.heatmap import relevance_heatmap, save_heatmap_png
from augengine.explain.lrp import (
    alpha_beta_rule,
    epsilon_rule,
    flat_rule,
    fold_batchnorm,
    global_avg_pool_rule,
    lrp,
    lrp_layers,
    max_pool_rule,
    residual_split,
    zb_rule,
)

__all__ = [
    "alpha_beta_rule",
    "epsilon_rule",
    "flat_rule",
    "fold_batchnorm",
    "global_avg_pool_rule",
    "lrp",
    "lrp_layers",
    "max_pool_rule",
    "relevance_heatmap",
    "residual_split",
    "save_heatmap_png",
    "zb_rule",
]
