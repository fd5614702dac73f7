"""Readouts of a sequence: the layers a network puts between a recurrent layer and a head.

A recurrent layer outputs every state, ``h[n, t, k]`` of shape (T, H); a dense head reads
one vector per example. A readout reduces the time axis: the last state (what
``torch.nn.LSTM`` returns as ``h_n``) or the mean of the states over time. Each is an
ordinary layer declaration, derived and lowered like any other (its gradient, a copy
into the last step or 1/T at every step, comes from the calculus), but it exists only in
network specs (``[[layers]] type = "last_state"``): they are not registered in the
catalogue, whose documents each teach an op of the course.
"""

from __future__ import annotations

import sympy as sp
from sympy import IndexedBase, Sum

from derive.spec import Layer

N, T, H = (sp.Symbol(name, integer=True, positive=True) for name in "NTH")
n, t, k = (sp.Symbol(name, integer=True, nonnegative=True) for name in "ntk")
h = IndexedBase("h", real=True)
y = IndexedBase("y", real=True)

LAST_STATE = Layer(
    name="last_state", title="Last state of a sequence", latex=r"\operatorname{last}",
    out=y[n, k], expr=h[n, T - 1, k],
    arrays=((h, (N, T, H)), (y, (N, H))), inputs=(h,))

TIME_MEAN = Layer(
    name="time_mean", title="Mean of a sequence over time", latex=r"\operatorname{mean}_t",
    out=y[n, k], expr=Sum(h[n, t, k], (t, 0, T - 1)) / T,
    arrays=((h, (N, T, H)), (y, (N, H))), inputs=(h,))

#: Spec layer type → its declaration.
READOUTS = {op.name: op for op in (LAST_STATE, TIME_MEAN)}
