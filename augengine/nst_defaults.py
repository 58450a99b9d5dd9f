"""The style-transfer defaults, written once (torch-free, so the job model can read them).

The job files' ``nst`` section (:mod:`augengine.config`), the NST functions
(:mod:`augengine.nst`) and the decoder's training (:mod:`augengine.train.nst_decoder`) all take
their defaults from here. Seed 002 (spec paper) fixes the layers; it gives no values for the
steps, the style weight or the batch, so those are the engine's choices.
"""
from __future__ import annotations

#: ResNet-50 stage outputs, shallow to deep: the paper's style layers (Eq. 5, ``w_l = 1``).
RESNET50_LAYERS = ("relu", "layer1", "layer2", "layer3", "layer4")
#: Content layer: at 224 x 224 ``layer2`` keeps a 28 x 28 map, the lesion's shape and position.
CONTENT_LAYERS = ("layer2",)
STYLE_LAYERS = RESNET50_LAYERS
#: Content weight (Eq. 1) and AdaIN's content-style trade-off (1 = full style).
ALPHA = 1.0
#: Style weight (Eq. 1's ``gamma beta'``).
BETA = 1e4
#: Optimisation steps of iterative style transfer per image.
ITERATIONS = 1000
#: Images per batch of the style stage (generation, statistics, LRP, quality checks).
BATCH_SIZE = 32
