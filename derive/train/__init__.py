"""Training generated network modules: data sets, the loop, checkpoints, curves.

Stages::

    source string ──prepare──► Dataset ──fit(module)──► History ──► curves, diagnosis
"""

from derive.train.checkpoint import Checkpoint, load_checkpoint, save_checkpoint
from derive.train.data import Dataset, Normaliser, Source, dataset_for, load_source, prepare
from derive.train.loop import (
    History,
    accuracy,
    evaluate,
    fit,
    gradient_norm,
    lr_schedule,
    predict,
)
from derive.train.report import Diagnosis, EpochRecord, diagnose, write_curves

__all__ = [
    "Checkpoint", "Dataset", "Diagnosis", "EpochRecord", "History", "Normaliser", "Source",
    "accuracy", "dataset_for", "diagnose", "evaluate", "fit", "gradient_norm",
    "load_checkpoint", "load_source", "lr_schedule", "predict", "prepare",
    "save_checkpoint", "write_curves",
]
