"""Training-side tools: evaluation metrics, leak-free splits by source, and run reports.

``metrics`` and ``splits`` are re-exported here (NumPy only). Figures and reports import
matplotlib, so they stay in their modules: ``augengine.train.plots`` (``plot_roc``,
``plot_confusion_matrix``, ``plot_curves``) and ``augengine.train.report`` (``write_report``).
"""
from augengine.train.metrics import (
    classification_metrics,
    confusion_matrix,
    dice,
    iou,
    mse,
    pearson_lcc,
    roc_auc,
    roc_curve,
    roc_operating_point,
)
from augengine.train.splits import (
    AUGMENTATION_OPS,
    SPLITS,
    assign_split,
    load_splits,
    originals_only,
    save_splits,
    split_by_source,
    summarize_splits,
)

__all__ = [
    "AUGMENTATION_OPS",
    "SPLITS",
    "assign_split",
    "classification_metrics",
    "confusion_matrix",
    "dice",
    "iou",
    "load_splits",
    "mse",
    "originals_only",
    "pearson_lcc",
    "roc_auc",
    "roc_curve",
    "roc_operating_point",
    "save_splits",
    "split_by_source",
    "summarize_splits",
]
