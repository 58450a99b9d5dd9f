"""Neural style transfer for breast ultrasound (spec paper, seed 002): losses and pairing plans.

``losses`` holds the style-transfer objective (Eqs. 1-6 and the proposed Eq. 14, with the
LRP-weighted content loss), ``histogram`` the multi-reference style target (Eqs. 7-9), ``pairs``
the plan of which content image is styled by which reference(s). All losses take torch feature
maps; any feature extractor can supply them.
"""

from augengine.nst.histogram import (
    histogram_specification,
    max_reference_features,
    multi_reference_target,
)
from augengine.nst.losses import (
    RESNET50_LAYERS,
    StyleTransferLoss,
    content_loss,
    gram_loss,
    gram_matrix,
    mmd_poly_loss,
    proposed_style_loss,
    relevance_weights,
    total_loss,
)
from augengine.nst.pairs import count_pairs, plan_pairs

__all__ = [
    "RESNET50_LAYERS",
    "StyleTransferLoss",
    "content_loss",
    "count_pairs",
    "gram_loss",
    "gram_matrix",
    "histogram_specification",
    "max_reference_features",
    "mmd_poly_loss",
    "multi_reference_target",
    "plan_pairs",
    "proposed_style_loss",
    "relevance_weights",
    "total_loss",
]

# The style-transfer engine: iterative optimisation, the feed-forward (AdaIN) network, loading
# its trained decoder (trained by augengine.train.nst_decoder) and mass generation, and
# per-sample quality checks.
from augengine.nst.feedforward import Decoder, StyleNet, adain, align_statistics, feature_stats
from augengine.nst.generate import generate
from augengine.nst.iterative import StylizeResult, stylize
from augengine.nst.quality import QualityScores, assess_quality, ssim, style_distance
from augengine.nst.inference import load_checkpoint, load_style_net

__all__ += [
    "Decoder",
    "QualityScores",
    "StyleNet",
    "StylizeResult",
    "adain",
    "align_statistics",
    "assess_quality",
    "feature_stats",
    "generate",
    "load_checkpoint",
    "load_style_net",
    "ssim",
    "style_distance",
    "stylize",
]
