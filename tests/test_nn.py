"""Affine layer and activations: backward against finite differences, values, dtypes, purity."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae.gradcheck import check_backward
from minivae.nn import (
    ACTIVATIONS, LEAKY_SLOPE,
    affine_backward, affine_forward,
    leaky_relu_backward, leaky_relu_forward,
    relu_backward, relu_forward,
    sigmoid, sigmoid_backward, sigmoid_forward,
    softplus, softplus_backward, softplus_forward,
    tanh_backward, tanh_forward,
)

from strategies import dtypes, finite_arrays, shapes_2d, shapes_any

PAIRS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "softplus": (softplus_forward, softplus_backward),
}
TOL = 1e-7


def away_from_zero(rng: np.random.Generator, shape) -> np.ndarray:
    """Entries with 0.1 <= |x| <= 3 and random sign: no central difference straddles a kink."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 3.0, size=shape)


# ---------------------------------------------------------------- gradient checks
@pytest.mark.task_layers
@pytest.mark.parametrize("N,D,H", [(1, 1, 1), (3, 4, 5), (4, 2, 3)])
def test_affine_backward_gradcheck(N, D, H):
    rng = np.random.default_rng(N * 100 + D * 10 + H)
    x, W, b = rng.standard_normal((N, D)), rng.standard_normal((D, H)), rng.standard_normal(H)
    errors = check_backward(affine_forward, affine_backward, [x, W, b], rng)
    assert len(errors) == 3 and max(errors) <= TOL


@pytest.mark.task_layers
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (5,)])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_activation_backward_gradcheck(name, shape):
    forward, backward = PAIRS[name]
    rng = np.random.default_rng(len(shape) * 31 + sorted(PAIRS).index(name))
    errors = check_backward(forward, backward, [away_from_zero(rng, shape)], rng)
    assert errors[0] <= TOL


@pytest.mark.task_layers
def test_activation_registry_is_the_tested_pairs():
    assert ACTIVATIONS == PAIRS


# ---------------------------------------------------------------- values
def test_affine_forward_values():
    x = np.array([[1.0, 2.0]])
    W = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]])
    b = np.array([0.5, -1.0, 0.0])
    y, _ = affine_forward(x, W, b)
    np.testing.assert_array_equal(y, [[5.5, 1.0, 0.0]])


@pytest.mark.task_layers
def test_affine_backward_into_buffers_and_without_input_gradient():
    rng = np.random.default_rng(11)
    x, W, b, dy = (rng.standard_normal(s) for s in [(5, 4), (4, 3), (3,), (5, 3)])
    cache = affine_forward(x, W, b)[1]
    dx, dW, db = affine_backward(dy, cache)
    bufW, bufb = np.full((4, 3), np.nan), np.full(3, np.nan)
    dx2, dW2, db2 = affine_backward(dy, cache, out=(bufW, bufb), input_grad=False)
    assert dx2 is None and dW2 is bufW and db2 is bufb
    np.testing.assert_allclose(bufW, dW, rtol=1e-15)
    np.testing.assert_allclose(bufb, db, rtol=1e-15)


@pytest.mark.task_layers
def test_affine_backward_shapes_and_bias_sum():
    rng = np.random.default_rng(0)
    x, W, b = rng.standard_normal((4, 3)), rng.standard_normal((3, 2)), rng.standard_normal(2)
    dy = rng.standard_normal((4, 2))
    dx, dW, db = affine_backward(dy, affine_forward(x, W, b)[1])
    assert dx.shape == x.shape and dW.shape == W.shape and db.shape == b.shape
    np.testing.assert_allclose(db, dy.sum(axis=0), rtol=1e-15)


@pytest.mark.task_layers
def test_relu_and_leaky_relu_values():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(relu_forward(x)[0], [0.0, 0.0, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(leaky_relu_forward(x)[0], [-0.02, -0.005, 0.0, 0.5, 3.0])
    assert LEAKY_SLOPE == 0.01
    # subgradient 0 at the kink for relu, the left slope for leaky relu
    dy = np.ones_like(x)
    np.testing.assert_array_equal(relu_backward(dy, relu_forward(x)[1]), [0, 0, 0, 1, 1])
    np.testing.assert_array_equal(leaky_relu_backward(dy, leaky_relu_forward(x)[1]),
                                  [0.01, 0.01, 0.01, 1, 1])


def test_sigmoid_softplus_tanh_match_naive_formulas_for_moderate_inputs():
    x = np.linspace(-20, 20, 81)
    # the tanh form is accurate in absolute terms (1 + tanh cancels in the far left tail)
    np.testing.assert_allclose(sigmoid(x), 1 / (1 + np.exp(-x)), rtol=1e-13, atol=2e-16)
    np.testing.assert_allclose(softplus(x), np.log1p(np.exp(x)), rtol=1e-13)
    np.testing.assert_allclose(tanh_forward(x)[0], np.tanh(x), rtol=0)


def test_sigmoid_softplus_extreme_inputs_exact_limits():
    x = np.array([-1e4, -800.0, 800.0, 1e4])
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        s, sp = sigmoid(x), softplus(x)
    np.testing.assert_array_equal(s, [0.0, 0.0, 1.0, 1.0])
    np.testing.assert_array_equal(sp, [0.0, 0.0, 800.0, 1e4])
    assert sigmoid(np.array(0.0)) == 0.5
    assert softplus(np.array(0.0)) == pytest.approx(np.log(2), rel=1e-15)


# ---------------------------------------------------------------- properties
@settings(max_examples=40, deadline=None)
@given(name=st.sampled_from(sorted(PAIRS)), dtype=dtypes, data=st.data())
def test_activation_dtype_shape_finite_and_pure(name, dtype, data):
    """float32 stays float32, shapes are kept, extreme inputs stay finite, and
    backward leaves dy and the cache untouched."""
    forward, backward = PAIRS[name]
    shape = data.draw(shapes_any)
    x = data.draw(finite_arrays(shape, dtype, bound=1e4))
    dy = data.draw(finite_arrays(shape, dtype, bound=4.0))
    x0 = x.copy()
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, cache = forward(x)
        cache0 = [a.copy() for a in cache]
        dy0 = dy.copy()
        dx = backward(dy, cache)
    assert np.array_equal(x, x0)
    assert np.array_equal(dy, dy0)
    assert all(np.array_equal(a, a0) for a, a0 in zip(cache, cache0))
    assert y.shape == x.shape and dx.shape == x.shape
    assert y.dtype == dtype and dx.dtype == dtype
    assert np.all(np.isfinite(y)) and np.all(np.isfinite(dx))


@pytest.mark.task_layers
@settings(max_examples=30, deadline=None)
@given(dtype=dtypes, shape=shapes_2d, H=st.integers(1, 4), data=st.data())
def test_affine_dtype_shape_and_pure(dtype, shape, H, data):
    N, D = shape
    x = data.draw(finite_arrays((N, D), dtype))
    W = data.draw(finite_arrays((D, H), dtype))
    b = data.draw(finite_arrays((H,), dtype))
    dy = data.draw(finite_arrays((N, H), dtype))
    copies = [a.copy() for a in (x, W, b, dy)]
    y, cache = affine_forward(x, W, b)
    cache0 = [a.copy() for a in cache]
    dx, dW, db = affine_backward(dy, cache)
    assert all(np.array_equal(a, a0) for a, a0 in zip((x, W, b, dy), copies))
    assert all(np.array_equal(a, a0) for a, a0 in zip(cache, cache0))
    assert y.shape == (N, H) and (dx.shape, dW.shape, db.shape) == ((N, D), (D, H), (H,))
    assert {a.dtype for a in (y, dx, dW, db)} == {np.dtype(dtype)}


@pytest.mark.task_layers
@settings(max_examples=30, deadline=None)
@given(x=finite_arrays(shapes_any, np.float64, bound=30.0))
def test_activation_derivatives_agree_with_their_definitions(x):
    """sigmoid' = s(1-s), softplus' = sigmoid, tanh' = 1 - tanh^2 at every point."""
    ones = np.ones_like(x)
    s = sigmoid(x)
    np.testing.assert_allclose(sigmoid_backward(ones, sigmoid_forward(x)[1]), s * (1 - s), rtol=1e-15)
    np.testing.assert_allclose(softplus_backward(ones, softplus_forward(x)[1]), s, rtol=1e-15)
    t = np.tanh(x)
    np.testing.assert_allclose(tanh_backward(ones, tanh_forward(x)[1]), 1 - t * t, rtol=1e-15)
