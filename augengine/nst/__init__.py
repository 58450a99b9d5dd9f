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
