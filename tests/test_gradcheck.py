"""The referee itself: finite differences, relative error, and a check that can say no."""
import numpy as np
import pytest

from minivae.gradcheck import check_backward, check_params, numerical_gradient, rel_error


def test_numerical_gradient_matches_known_derivative():
    """$\\partial_x \\sum \\sin(x) x = \\sin x + x \\cos x$."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal((3, 4))
    num = numerical_gradient(lambda: float(np.sum(np.sin(x) * x)), x)
    assert num.shape == x.shape
    assert rel_error(np.sin(x) + x * np.cos(x), num) <= 1e-8


def test_numerical_gradient_restores_x_exactly():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((2, 3)) * 1e3  # (x + h) - h != x at this magnitude
    before = x.copy()
    numerical_gradient(lambda: float(np.sum(x ** 3)), x)
    assert np.array_equal(x, before)
    assert x.tobytes() == before.tobytes()


def test_numerical_gradient_sees_the_array_f_closes_over():
    x = np.array([1.0, -2.0, 0.5])
    num = numerical_gradient(lambda: float(x @ np.array([3.0, 5.0, 7.0])), x)
    np.testing.assert_allclose(num, [3.0, 5.0, 7.0], rtol=1e-8)


def test_numerical_gradient_refuses_float32():
    with pytest.raises(TypeError, match="float64"):
        numerical_gradient(lambda: 0.0, np.zeros(3, dtype=np.float32))


def test_numerical_gradient_refuses_array_it_cannot_perturb_in_place():
    x = np.arange(6.0).reshape(2, 3).T  # (3, 2), not C-contiguous: reshape(-1) copies
    with pytest.raises(ValueError):
        numerical_gradient(lambda: float(np.sum(x)), x)


def test_rel_error_basics():
    a = np.array([1.0, -2.0, 3.0])
    assert rel_error(a, a.copy()) == 0.0
    both_zero = rel_error(np.zeros(3), np.zeros(3))
    assert both_zero == 0.0 and not np.isnan(both_zero)
    # ||a - n|| / max(||a||, ||n||): sqrt(2) / 1 for orthogonal unit vectors
    assert rel_error(np.array([1.0, 0.0]), np.array([0.0, 1.0])) == pytest.approx(np.sqrt(2))
    assert rel_error(a, 2 * a) == pytest.approx(0.5)
    assert rel_error(2 * a, a) == pytest.approx(0.5)  # symmetric
    assert rel_error(1e-30 * a, 2e-30 * a) == pytest.approx(0.5)  # scale-free
    assert isinstance(rel_error(a, a), float)


def test_rel_error_rejects_shape_mismatch():
    with pytest.raises(ValueError, match="shape"):
        rel_error(np.zeros(3), np.zeros((3, 1)))


def _sigmoid_forward(x):
    y = 1 / (1 + np.exp(-x))
    return y, y


def test_check_backward_passes_a_correct_backward():
    rng = np.random.default_rng(2)
    errors = check_backward(_sigmoid_forward, lambda dy, y: dy * y * (1 - y),
                            [rng.standard_normal((3, 4))], rng)
    assert len(errors) == 1 and errors[0] <= 1e-7


@pytest.mark.parametrize("wrong_backward", [
    lambda dy, y: dy * y,                    # forgot the (1 - y)
    lambda dy, y: 2 * dy * y * (1 - y),      # off by a factor of two
    lambda dy, y: (dy * y * (1 - y))[::-1],  # rows in the wrong order
])
def test_check_backward_detects_a_wrong_backward(wrong_backward):
    rng = np.random.default_rng(3)
    errors = check_backward(_sigmoid_forward, wrong_backward, [rng.standard_normal((3, 4))], rng)
    assert errors[0] > 1e-2


def test_check_backward_detects_a_wrong_gradient_for_one_input_only():
    rng = np.random.default_rng(4)
    fwd = lambda a, b: (a * b, (a, b))  # noqa: E731
    bwd = lambda dy, c: (dy * c[1], dy * c[1])  # d/db should be dy * a  # noqa: E731
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    err_a, err_b = check_backward(fwd, bwd, [a, b], rng)
    assert err_a <= 1e-7 and err_b > 1e-2
    assert check_backward(fwd, bwd, [a, b], rng, wrt=[0]) == [pytest.approx(err_a, abs=1e-7)]


def test_check_backward_handles_tuple_outputs():
    """y = (sin x, x^2) with dy a tuple: dx = dy1 cos x + 2 x dy2."""
    rng = np.random.default_rng(5)
    fwd = lambda x: ((np.sin(x), x * x), x)  # noqa: E731
    good = lambda dy, x: dy[0] * np.cos(x) + 2 * x * dy[1]  # noqa: E731
    bad = lambda dy, x: dy[0] * np.cos(x)  # noqa: E731
    x = rng.standard_normal(5)
    assert check_backward(fwd, good, [x], rng)[0] <= 1e-7
    assert check_backward(fwd, bad, [x], rng)[0] > 1e-2


def test_check_backward_rejects_wrong_number_of_gradients():
    rng = np.random.default_rng(6)
    fwd = lambda a, b: (a + b, None)  # noqa: E731
    with pytest.raises(ValueError, match="2 inputs"):
        check_backward(fwd, lambda dy, c: dy, [np.ones(2), np.ones(2)], rng)


def test_check_backward_leaves_callers_arrays_untouched():
    rng = np.random.default_rng(7)
    x = rng.standard_normal(4).astype(np.float32)  # checked in float64 copies
    before = x.copy()
    errors = check_backward(_sigmoid_forward, lambda dy, y: dy * y * (1 - y), [x], rng)
    assert errors[0] <= 1e-7
    assert x.dtype == np.float32 and np.array_equal(x, before)


def test_check_params_good_and_bad_gradients():
    rng = np.random.default_rng(8)
    params = {"w": rng.standard_normal(3), "b": rng.standard_normal((2, 2))}
    loss = lambda: float(np.sum(params["w"] ** 2) + np.sum(np.exp(params["b"])))  # noqa: E731
    good = {"w": 2 * params["w"], "b": np.exp(params["b"])}
    errors = check_params(loss, params, good)
    assert set(errors) == {"w", "b"} and max(errors.values()) <= 1e-7
    bad = {"w": params["w"], "b": np.exp(params["b"])}
    errors = check_params(loss, params, bad)
    assert errors["w"] > 1e-2 and errors["b"] <= 1e-7


def test_check_params_rejects_mismatched_keys():
    with pytest.raises(KeyError, match="w"):
        check_params(lambda: 0.0, {"w": np.zeros(2)}, {"v": np.zeros(2)})


def test_a_missing_gradient_fails_the_check_under_max():
    """max() over a list skips a NaN that is not first: a None gradient must count as inf."""
    errors = check_backward(lambda a, b: (a * b, (a, b)), lambda dy, c: (dy * c[1], None),
                            [np.ones(3), np.ones(3)], np.random.default_rng(0))
    assert errors[0] < 1e-7 and errors[1] == float("inf") and not max(errors) <= 1e-7
