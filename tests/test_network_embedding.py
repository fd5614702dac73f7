"""An embedding inside a network (issue 15): tokens in, a learnt vector per token out.

The embedding reads the network's input as tokens (whole numbers 0..V−1), so it is the
first layer; a recurrent layer or the mean over time reads its sequence of vectors. The
whole network's loss and every gradient — the table's a scatter-add, since a token that
occurs twice sends back both rows — are compared with PyTorch (``F.embedding``, torch's GRU
kernel) in float64 at 1e-9 and with central differences; the module refuses inputs that
are not tokens of its vocabulary with one line, and a spec refuses an embedding below
another layer and a normalisation of the tokens, at exit code 2.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import REPO, one_error_line, table_network_builder, table_spec_text

from derive.cli import main

TOL = 1e-9
T, VOCABULARY, DIM, UNITS, CLASSES = 6, 5, 3, 4, 3

EMBED = {"type": "embedding", "vocabulary": VOCABULARY, "dim": DIM}
GRU_LAST = [EMBED, {"type": "gru", "units": UNITS}, {"type": "last_state"},
            {"type": "dense", "units": CLASSES, "activation": "softmax"}]
BAG = [EMBED, {"type": "time_mean"}, {"type": "dense", "units": 2}]


@pytest.fixture(scope="module")
def build(tmp_path_factory):
    """Write, generate and import a network module once per spec."""
    return table_network_builder(tmp_path_factory.mktemp("network_embedding"))


def tokens(rng, n):
    """A batch of token sequences in which tokens repeat (the scatter-add is exercised)."""
    return rng.integers(0, VOCABULARY, size=(n, T))


def test_embedding_gru_network_matches_pytorch(build):
    m = build("embed_gru", [T], GRU_LAST, loss="categorical_cross_entropy")
    assert m.VOCABULARY == VOCABULARY
    assert m.PARAM_SHAPES[0] == (VOCABULARY, DIM)
    rng = np.random.default_rng(0)
    x, y = tokens(rng, 7), rng.integers(0, CLASSES, 7)
    params = m.init_params(seed=1)
    params[2] += rng.normal(size=params[2].shape)  # biases away from 0, so they count
    tp = [torch.tensor(p, requires_grad=True) for p in params]
    vectors = F.embedding(torch.tensor(x), tp[0])
    zero = torch.zeros(1, x.shape[0], UNITS, dtype=torch.float64)
    states = torch._VF.gru(vectors, zero, [tp[1], tp[3], tp[2], tp[4]],
                           True, 1, 0.0, False, False, True)[0]
    logits = F.linear(states[:, -1], tp[5], tp[6])
    tloss = F.cross_entropy(logits, torch.tensor(y))
    tloss.backward()
    loss, grads = m.loss_and_grad(params, x, y)
    assert loss == pytest.approx(tloss.item(), rel=TOL, abs=TOL)
    for g, t, name in zip(grads, tp, m.PARAM_NAMES, strict=True):
        np.testing.assert_allclose(g, t.grad.numpy(), rtol=TOL, atol=TOL, err_msg=name)
    # A token absent from the batch gets no gradient; one present gets its rows' sum.
    absent = sorted(set(range(VOCABULARY)) - set(x.ravel()))
    assert not grads[0][absent].any()
    np.testing.assert_allclose(m.predict(params, x),
                               F.softmax(logits, dim=1).detach().numpy(), rtol=TOL, atol=TOL)


def test_bag_of_embeddings_matches_pytorch_in_both_dtypes(build):
    m = build("embed_bag", [T], BAG)
    rng = np.random.default_rng(1)
    x, y = tokens(rng, 5), rng.normal(size=(5, 2))
    for dtype, tol in ((np.float64, TOL), (np.float32, 1e-5)):
        params = m.init_params(seed=2, dtype=dtype)
        tp = [torch.tensor(p.astype(np.float64), requires_grad=True) for p in params]
        out = F.linear(F.embedding(torch.tensor(x), tp[0]).mean(dim=1), tp[1], tp[2])
        tloss = F.mse_loss(out, torch.tensor(y))
        tloss.backward()
        loss, grads = m.loss_and_grad(params, x, y)
        assert all(g.dtype == dtype for g in grads)
        assert loss == pytest.approx(tloss.item(), rel=tol, abs=tol)
        for g, t, name in zip(grads, tp, m.PARAM_NAMES, strict=True):
            np.testing.assert_allclose(g, t.grad.numpy(), rtol=tol, atol=tol, err_msg=name)


def test_embedding_gradient_matches_finite_differences(build):
    m = build("embed_gru", [T], GRU_LAST, loss="categorical_cross_entropy")
    rng = np.random.default_rng(3)
    x, y = tokens(rng, 4), rng.integers(0, CLASSES, 4)
    params = m.init_params(seed=4)
    table = params[0]
    _, grads = m.loss_and_grad(params, x, y)
    for index in np.ndindex(table.shape):
        saved, step = table[index], 1e-6
        table[index] = saved + step
        up = m.loss_and_grad(params, x, y)[0]
        table[index] = saved - step
        down = m.loss_and_grad(params, x, y)[0]
        table[index] = saved
        assert grads[0][index] == pytest.approx((up - down) / (2 * step), rel=1e-5, abs=1e-8)


def test_tokens_stored_as_floats_are_read_as_tokens_and_others_refused(build):
    m = build("embed_bag", [T], BAG)
    rng = np.random.default_rng(4)
    x = tokens(rng, 3)
    params = m.init_params(seed=0)
    np.testing.assert_array_equal(m.predict(params, x), m.predict(params, x.astype(float)))
    for bad, error, words in (
            (x + 0.5, ValueError, "whole numbers"),
            (x + VOCABULARY, ValueError, f"tokens 0..{VOCABULARY - 1}"),
            (x - VOCABULARY, ValueError, f"tokens 0..{VOCABULARY - 1}"),
            (np.where(x == x[0, 0], np.nan, x), ValueError, "whole numbers"),
            (x.astype(str), TypeError, "tokens"),
            (x[:, :-1], ValueError, "shape")):
        with pytest.raises(error, match=words):
            m.predict(params, bad)
        with pytest.raises(error, match=words):
            m.loss_and_grad(params, bad, np.zeros((bad.shape[0], 2)))


def test_embedding_network_trains(build):
    m = build("embed_bag_adam", [T], BAG, train='optimizer = "adam"\n')
    rng = np.random.default_rng(5)
    x = tokens(rng, 32)
    # A target each token's vector can learn: the share of each of two tokens.
    y = np.stack([(x == 1).mean(axis=1), (x == 3).mean(axis=1)], axis=1)
    params = m.init_params(seed=0)
    state = m.init_state(params)
    losses = [m.train_step(params, state, x, y, 0.05) for _ in range(60)]
    assert losses[-1] < 0.1 * losses[0]


def spec_error(tmp_path, capsys, layers, train="", extra=()):
    spec = tmp_path / "tokens.toml"
    spec.write_text(table_spec_text("tokens", [T], layers, train=train))
    assert main([*extra, str(spec)]) == 2
    return one_error_line(capsys)


@pytest.mark.parametrize("layers, train, words", [
    ([{"type": "dense", "units": 4}, EMBED, {"type": "time_mean"}], "",
     ["layers[1].type", "reads tokens", "Make it the first layer"]),
    (BAG, 'normalisation = "zscore"\n',
     ["train.normalisation", "tokens", 'normalisation = "none"']),
])
def test_spec_errors_are_one_line(tmp_path, capsys, layers, train, words):
    line = spec_error(tmp_path, capsys, layers, train, extra=("kernels",))
    assert all(word in line for word in words), line


def test_cli_refuses_normalising_tokens(tmp_path, capsys):
    line = spec_error(tmp_path, capsys, BAG,
                      extra=("train", "--data", "digits", "--normalise", "minmax",
                             "--out", str(tmp_path / "run")))
    assert "--normalise minmax" in line and "tokens" in line
    assert not (tmp_path / "run").exists()


def test_latex_of_a_token_network_is_one_line(tmp_path, capsys):
    assert main(["latex", str(REPO / "examples" / "digits_tokens.toml")]) == 2
    line = one_error_line(capsys)
    assert "layers[0] (embedding) reads tokens" in line and "derive latex embedding" in line
