"""A generated network module rebuilt in PyTorch from its own LAYERS description.

Shared by the tests that compare whole networks with PyTorch (plain, convolutional and
residual), so each layer kind and each skip connection is translated in one place.
"""

import torch
import torch.nn.functional as F  # noqa: N812  (the name PyTorch documents)

#: The activations the example networks use; None is a layer without one. A softmax
#: output is left to the loss: the network's value is its logits, which
#: ``F.cross_entropy`` takes.
ACTIVATIONS = {"relu": F.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
               "softmax": lambda h: h, None: lambda h: h}


def _dense(h, params, k, hyper):
    return F.linear(h, params[k], params[k + 1]), k + 2


def _conv2d(h, params, k, hyper):
    return F.conv2d(h, params[k], params[k + 1], stride=hyper["stride"],
                    padding=hyper["padding"]), k + 2


def _max_pool2d(h, params, k, hyper):
    return F.max_pool2d(h, hyper["kernel_size"], hyper["stride"]), k


def _flatten(h, params, k, hyper):
    return torch.flatten(h, 1), k


#: Each layer kind: (input, parameters, index of its first parameter, hyper-parameters)
#: → (output, index of the next layer's first parameter).
LAYER_KINDS = {"dense": _dense, "conv2d": _conv2d, "max_pool2d": _max_pool2d,
               "flatten": _flatten}


def torch_forward(module, params, x):
    """The network's output for ``x``, layer by layer as ``module.LAYERS`` describes it.

    Parameters
    ----------
    module : module
        A generated network module (its ``LAYERS`` lists kind, activation, hyper).
    params : list of torch.Tensor
        The parameters in the module's order.
    x : torch.Tensor
        A batch of inputs.

    Returns
    -------
    torch.Tensor
        The output; a layer with ``skip_from`` adds the input (``-1``) or an earlier
        layer's output to its own.
    """
    outputs, h, k = [], x, 0
    for kind, activation, hyper in module.LAYERS:
        h, k = LAYER_KINDS[kind](h, params, k, hyper)
        h = ACTIVATIONS[activation](h)
        if "skip_from" in hyper:
            source = hyper["skip_from"]
            h = h + (x if source < 0 else outputs[source])
        outputs.append(h)
    return h
