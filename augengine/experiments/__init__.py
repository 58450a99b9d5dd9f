"""The seeds' experiments, end to end on the user's data (any source a job reads) or on
simulated phantoms: source -> runner -> (style transfer) -> classifier training -> scores with
error bars.

1. :func:`dynamic_range_experiment` -- seed 001, Table I: B-mode from the same RF at 40, 50 and
   60 dB; a classifier trained at one dynamic range or all three ("TrainALL"), tested at each.
2. :func:`augmentation_experiment` -- seed 002, Table 2: no augmentation vs the engine's
   geometric variants vs feed-forward style transfer on within-class pairs (+ SRAD) vs both.

Both split by lesion (the same split for every arm of a repeat; a new split and training seed
per repeat), test on original test images, and report the AUC and the accuracy at the ROC point
closest to (0, 1) (seed 001), per image and per lesion (the mean malignancy probability of a
lesion's images, seed 001), as the mean over repeats with a 95 % interval from a bootstrap over
test lesions. docs/experiments.md holds tables and the commands that made them.

The top layer beside the command line: it calls sources, the runner, style transfer and the
training jobs; nothing but :mod:`augengine.cli` imports it.

Command line::

    augengine experiment dynamic-range --data OASBUD.mat --out runs/dr
    augengine experiment augmentation --data OASBUD.mat --out runs/aug
"""
from augengine.experiments.augmentation import StyleConfig, augmentation_experiment
from augengine.experiments.common import EXPERIMENT_SETTINGS, ExperimentConfig
from augengine.experiments.dynamic_range import dynamic_range_experiment

__all__ = ["EXPERIMENT_SETTINGS", "ExperimentConfig", "StyleConfig", "augmentation_experiment",
           "dynamic_range_experiment"]
