"""The words of a spec's ``[train]`` table that name the training loop's choices.

Network specs are checked (:mod:`derive.network`) before anything trains, and the
training package (:mod:`derive.train`) acts on the same names; both read them here.
This module imports nothing, so the check does not load the training code and the
training code does not load the spec reader.
"""

#: Ways to scale the input features, fitted on the training part of the data.
NORMALISATIONS = ("minmax", "feature_minmax", "feature_minmax_signed", "pixels", "zscore", "l2",
                  "none")

#: Learning-rate schedule names → the names of their parameters in a spec's table
#: (besides ``warmup`` and ``start_factor``, which any schedule takes).
SCHEDULES = {
    "constant": (),
    "step": ("step_size", "gamma"),
    "exponential": ("gamma", "k"),
    "cosine": ("t_max", "eta_min"),
}

#: ``early_stopping`` table of ``[train]``: its keys and their defaults (those of Keras'
#: EarlyStopping; ``restore_best`` is its ``restore_best_weights``).
EARLY_STOPPING = {"patience": 5, "min_delta": 0.0, "monitor": "val_loss", "restore_best": True}
#: What early stopping may watch → whether it is minimised (a loss) or maximised (an
#: accuracy). Both are measured on the validation set.
MONITORS = {"val_loss": "min", "val_accuracy": "max"}
