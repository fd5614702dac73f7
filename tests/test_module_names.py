"""A generated module's name never shadows a library or means something to Python."""

import pytest

from derive.network import SpecError, parse_spec
from derive.pipeline import check_module_name

SPEC = '[network]\nname = "{name}"\ninput_shape = [4]\nloss = "mse"\n' \
       '[[layers]]\ntype = "dense"\nunits = 1\n'


@pytest.mark.parametrize("name", ["numpy", "numba", "math", "os", "__init__", "__main__",
                                  "derive", "random", "json"])
def test_network_names_that_shadow_modules_are_refused(name):
    with pytest.raises(SpecError) as caught:
        parse_spec(SPEC.format(name=name), "net.toml")
    assert "network.name" in caught.value.message and name in caught.value.message


@pytest.mark.parametrize("name", ["numpy", "__init__", "sigmoid", "math"])
def test_custom_op_names_that_clash_are_refused(name):
    with pytest.raises(Exception) as caught:
        check_module_name(name)
    assert "--name" in caught.value.message


@pytest.mark.parametrize("name", ["mlp", "my_net", "numpy_like"])
def test_ordinary_names_pass(name):
    assert parse_spec(SPEC.format(name=name), "net.toml").name == name


@pytest.mark.parametrize("p", [1.0, 1.5, float("nan"), -0.1])
def test_dropout_probability_outside_0_1_is_refused(p):
    import numpy as np
    from conftest import generated

    dropout = generated("layers", "dropout")
    with pytest.raises(ValueError, match="p must be a finite number >= 0.0 and < 1.0"):
        dropout.forward(np.ones((2, 3)), p=p, training=1, seed=0)
