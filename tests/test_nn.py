"""Affine layer and activations: backward against finite differences, values, dtypes, purity."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae.nn import (
    ACTIVATIONS, LEAKY_SLOPE,
    affine_backward, affine_forward,
    leaky_relu_backward, leaky_relu_forward,
    relu_backward, relu_forward,
    sigmoid, sigmoid_backward, sigmoid_forward,
    softplus, softplus_backward, softplus_forward,
    tanh_backward, tanh_forward,
)

from checks import assert_backward, assert_close
from strategies import dtypes, finite_arrays, shapes_2d, shapes_any

PAIRS = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "softplus": (softplus_forward, softplus_backward),
}


def away_from_zero(rng: np.random.Generator, shape) -> np.ndarray:
    """Entries with 0.1 <= |x| <= 3 and random sign: no central difference straddles a kink."""
    return rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 3.0, size=shape)


# ---------------------------------------------------------------- gradient checks
@pytest.mark.task_layers
@pytest.mark.parametrize("N,D,H", [(1, 1, 1), (3, 4, 5), (4, 2, 3)])
def test_affine_backward_gradcheck(N, D, H):
    rng = np.random.default_rng(N * 100 + D * 10 + H)
    x, W, b = rng.standard_normal((N, D)), rng.standard_normal((D, H)), rng.standard_normal(H)
    assert_backward(affine_forward, affine_backward, {"x": x, "W": W, "b": b}, rng,
                    f"affine_backward with x ({N}, {D}), W ({D}, {H}), b ({H},)")


@pytest.mark.task_layers
@pytest.mark.parametrize("shape", [(3, 4), (2, 3, 4), (5,)])
@pytest.mark.parametrize("name", sorted(PAIRS))
def test_activation_backward_gradcheck(name, shape):
    forward, backward = PAIRS[name]
    rng = np.random.default_rng(len(shape) * 31 + sorted(PAIRS).index(name))
    assert_backward(forward, backward, {"x": away_from_zero(rng, shape)}, rng,
                    f"{backward.__name__} on x of shape {shape}, entries 0.1 <= |x| <= 3")


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
def test_affine_backward_by_hand():
    """Two examples, worked out on paper from y_nh = sum_d x_nd W_dh + b_h."""
    x = np.array([[1.0, 2.0], [0.0, -1.0]])
    W = np.array([[1.0, 0.0, -1.0], [2.0, 1.0, 0.5]])
    b = np.array([0.5, -1.0, 0.0])
    dy = np.array([[1.0, -1.0, 2.0], [3.0, 0.0, -1.0]])
    dx, dW, db = affine_backward(dy, affine_forward(x, W, b)[1])
    case = "affine_backward, x = [[1, 2], [0, -1]], W = [[1, 0, -1], [2, 1, 0.5]], dy = [[1, -1, 2], [3, 0, -1]]"
    assert_close(dx, [[-1.0, 2.0], [4.0, 5.5]], case, "dx")
    assert_close(dW, [[1.0, -1.0, 2.0], [-1.0, -2.0, 5.0]], case, "dW")
    assert_close(db, [4.0, -1.0, 1.0], case, "db")


@pytest.mark.task_layers
def test_relu_and_leaky_relu_values():
    x = np.array([-2.0, -0.5, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(relu_forward(x)[0], [0.0, 0.0, 0.0, 0.5, 3.0])
    np.testing.assert_array_equal(leaky_relu_forward(x)[0], [-0.02, -0.005, 0.0, 0.5, 3.0])
    assert LEAKY_SLOPE == 0.01
    # subgradient 0 at the kink for relu, the left slope for leaky relu
    dy = np.array([2.0, 2.0, 2.0, 2.0, -3.0])
    case = "x = [-2, -0.5, 0, 0.5, 3], dy = [2, 2, 2, 2, -3]"
    assert_close(relu_backward(dy, relu_forward(x)[1]), [0, 0, 0, 2, -3], case, "relu_backward")
    assert_close(leaky_relu_backward(dy, leaky_relu_forward(x)[1]), [0.02, 0.02, 0.02, 2, -3], case,
                 "leaky_relu_backward")


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
@pytest.mark.task_layers
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
    case = f"{backward.__name__} on {np.dtype(dtype)} x of shape {x.shape}, |x| up to 1e4"
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        y, cache = forward(x)
        cache0 = [a.copy() for a in cache]
        dy0 = dy.copy()
        try:
            dx = backward(dy, cache)
        except FloatingPointError as e:
            raise AssertionError(f"{case}: {e} (an overflow or an invalid value)") from None
    assert np.array_equal(x, x0)
    assert np.array_equal(dy, dy0), f"{case}: dy was changed"
    assert all(np.array_equal(a, a0) for a, a0 in zip(cache, cache0)), f"{case}: the cache was changed"
    assert y.shape == x.shape
    assert dx.shape == x.shape, f"{case}: dx has shape {dx.shape}, expected {x.shape}"
    assert y.dtype == dtype and dx.dtype == dtype, f"{case}: dx has dtype {dx.dtype}, expected {np.dtype(dtype)}"
    assert np.all(np.isfinite(y))
    assert np.all(np.isfinite(dx)), f"{case}: dx is not finite: {dx[~np.isfinite(dx)][:4]}"


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
    case = f"affine_backward with {np.dtype(dtype)} x ({N}, {D}), W ({D}, {H})"
    assert all(np.array_equal(a, a0) for a, a0 in zip((x, W, b, dy), copies)), f"{case}: an input was changed"
    assert all(np.array_equal(a, a0) for a, a0 in zip(cache, cache0)), f"{case}: the cache was changed"
    shapes = (dx.shape, dW.shape, db.shape)
    assert shapes == ((N, D), (D, H), (H,)), f"{case}: dx, dW, db have shapes {shapes}, expected the inputs'"
    dtypes_out = [a.dtype for a in (dx, dW, db)]
    assert set(dtypes_out) == {np.dtype(dtype)}, f"{case}: dx, dW, db have dtypes {dtypes_out}, expected {dtype}"


@pytest.mark.task_layers
@settings(max_examples=30, deadline=None)
@given(x=finite_arrays(shapes_any, np.float64, bound=30.0))
def test_smooth_activation_derivatives_agree_with_central_differences_at_every_point(x):
    """Elementwise: backward(1) is the derivative, (f(x + h) - f(x - h)) / 2h at each entry."""
    h = 1e-5
    for forward, backward in (PAIRS["sigmoid"], PAIRS["softplus"], PAIRS["tanh"]):
        numerical = (forward(x + h)[0] - forward(x - h)[0]) / (2 * h)
        assert_close(backward(np.ones_like(x), forward(x)[1]), numerical, f"{backward.__name__} at x = {x!r}",
                     "the derivative", rtol=1e-6, atol=1e-10)
