"""ResNet-18/50 with torchvision's ``state_dict`` layout, local weight loading and feature
extraction for NST; the segmenters (U-Net, DSA-U++) and the super-resolution
networks (EDSR, RDN).

Grey ultrasound enters these ImageNet-layout networks as three identical channels normalised with
the ImageNet statistics (:func:`imagenet_normalize`).
"""
from augengine.models.dsa_unetpp import DSAUNetPP, dsa_unetpp
from augengine.models.features import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    FeatureExtractor,
    feature_extractor,
    imagenet_normalize,
)
from augengine.models.heads import (
    BIRADS_CLASSES,
    BIRADS_FEATURES,
    QUALITY_SCORES,
    classifier,
    quality_regressor,
    split_birads_logits,
)
from augengine.models.resnet import BasicBlock, Bottleneck, ResNet, resnet18, resnet50
from augengine.models.superres import EDSR, RDN, edsr, edsr_small, rdn, rdn_small
from augengine.models.unet import UNet, unet
from augengine.models.weights import (
    ARCHITECTURES,
    load_classifier,
    load_weights,
)

__all__ = [
    "ARCHITECTURES",
    "load_classifier",
    "BIRADS_CLASSES",
    "BIRADS_FEATURES",
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "QUALITY_SCORES",
    "BasicBlock",
    "Bottleneck",
    "DSAUNetPP",
    "EDSR",
    "FeatureExtractor",
    "RDN",
    "ResNet",
    "UNet",
    "classifier",
    "dsa_unetpp",
    "edsr",
    "edsr_small",
    "feature_extractor",
    "imagenet_normalize",
    "load_weights",
    "quality_regressor",
    "rdn",
    "rdn_small",
    "resnet18",
    "resnet50",
    "split_birads_logits",
    "unet",
]
