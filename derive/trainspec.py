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


def single_value_batches(batch_size: int, layers) -> tuple[str, str] | None:
    """Why a batch of ``batch_size`` samples cannot train these layers, or None.

    A layer that normalises with its batch's statistics (batch normalisation in training)
    needs more than one value per channel: with one, the variance is 0 and every output
    is β — PyTorch refuses it ("Expected more than 1 value per channel when training").
    A channel holds ``batch_size`` × (values per channel of one sample) values.

    Parameters
    ----------
    batch_size : int
        Samples per training batch.
    layers : iterable of (int, str, int)
        Each layer that normalises with its batch's statistics: its index in the spec,
        its type, and how many values one sample gives each channel (1 for features,
        H·W for an image).

    Returns
    -------
    (str, str) or None
        What is wrong and how to fix it, for the first such layer with one value per
        channel; None when every channel has more than one.
    """
    for index, kind, per_sample in layers:
        if batch_size * per_sample == 1:
            return (f"batch_size = {batch_size} gives layers[{index}] ({kind}) one value per "
                    "channel, whose variance is 0: it cannot normalise with the batch's "
                    "statistics.", f"Set batch_size to 2 or more, or remove layers[{index}].")
    return None
