"""Optimizers against steps computed by hand from the published update rules."""
import math

import numpy as np
import pytest

from minivae.optim import (
    OPTIMIZERS, AdamState, MomentumState, SGDState, adam_step, init_state, momentum_step, sgd_step, step,
)

THETA0 = (0.5, -1.25, 2.0)
GRADS = [(0.3, -0.7, 1.1), (-0.2, 0.05, 0.9), (1.5, -2.0, 0.01)]


def test_sgd_by_hand():
    param = np.array(THETA0)
    state, lr = SGDState(), 0.1
    expected = list(THETA0)
    for t, g in enumerate(GRADS, start=1):
        state = sgd_step(param, np.array(g), state, lr)
        expected = [e - lr * gi for e, gi in zip(expected, g)]
        assert state.t == t
        np.testing.assert_allclose(param, expected, rtol=1e-15)


def test_momentum_by_hand():
    param = np.array(THETA0)
    state, lr, mom = init_state("momentum", param), 0.1, 0.9
    theta, vel = list(THETA0), [0.0, 0.0, 0.0]
    for t, g in enumerate(GRADS, start=1):
        state = momentum_step(param, np.array(g), state, lr, momentum=mom)
        vel = [mom * v + gi for v, gi in zip(vel, g)]
        theta = [th - lr * v for th, v in zip(theta, vel)]
        assert state.t == t
        np.testing.assert_allclose(state.velocity, vel, rtol=1e-14)
        np.testing.assert_allclose(param, theta, rtol=1e-14)
    # step 1 by hand: v = g, theta = 0.5 - 0.1 * 0.3
    fresh = np.array(THETA0)
    momentum_step(fresh, np.array(GRADS[0]), init_state("momentum", fresh), 0.1)
    assert fresh[0] == pytest.approx(0.47, rel=1e-15)


@pytest.mark.task_adam
@pytest.mark.parametrize("betas", [(0.9, 0.999), (0.5, 0.75)])
def test_adam_by_hand_textbook_form(betas):
    """Kingma & Ba, Algorithm 1, with explicit bias-corrected moments."""
    b1, b2 = betas
    lr, eps = 0.01, 1e-8
    param = np.array(THETA0)
    state = init_state("adam", param)
    theta, m, v = list(THETA0), [0.0] * 3, [0.0] * 3
    for t, g in enumerate(GRADS, start=1):
        state = adam_step(param, np.array(g), state, lr, beta1=b1, beta2=b2, eps=eps)
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g)]
        m_hat = [mi / (1 - b1 ** t) for mi in m]
        v_hat = [vi / (1 - b2 ** t) for vi in v]
        theta = [th - lr * mh / (math.sqrt(vh) + eps) for th, mh, vh in zip(theta, m_hat, v_hat)]
        assert state.t == t
        np.testing.assert_allclose(state.m, m, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(state.v, v, rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(param, theta, rtol=1e-12, atol=1e-12)


@pytest.mark.task_adam
def test_adam_first_step_moves_every_coordinate_by_about_lr():
    """At t = 1, m_hat / sqrt(v_hat) = g / |g| = sign(g): the step is lr in each coordinate."""
    param = np.array(THETA0)
    adam_step(param, np.array(GRADS[0]), init_state("adam", param), lr=0.01)
    np.testing.assert_allclose(np.array(THETA0) - param, 0.01 * np.sign(GRADS[0]), rtol=1e-6)


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_updates_in_place_and_keep_float32(name):
    param = np.array(THETA0, dtype=np.float32)
    grad = np.array(GRADS[0], dtype=np.float32)
    grad0 = grad.copy()
    state = init_state(name, param)
    arrays = [a for a in state if isinstance(a, np.ndarray)]
    assert all(a.dtype == np.float32 and a.shape == param.shape for a in arrays)
    before = param.copy()
    new_state = step(param, grad, state, 0.1)
    assert param.dtype == np.float32 and not np.array_equal(param, before)
    assert np.array_equal(grad, grad0)  # the gradient is read, not written
    new_arrays = [a for a in new_state if isinstance(a, np.ndarray)]
    assert len(new_arrays) == len(arrays)
    assert all(a is b and b.dtype == np.float32 for a, b in zip(arrays, new_arrays))
    assert new_state.t == state.t + 1 == 1


@pytest.mark.task_adam
def test_init_state_types_and_rejection():
    param = np.zeros(3)
    assert isinstance(init_state("sgd", param), SGDState)
    assert isinstance(init_state("momentum", param), MomentumState)
    adam = init_state("adam", param)
    assert isinstance(adam, AdamState) and adam.t == 0
    assert np.array_equal(adam.m, param) and np.array_equal(adam.v, param)
    assert adam.m is not param and adam.v is not adam.m
    with pytest.raises(ValueError) as info:
        init_state("rmsprop", param)
    message = str(info.value)
    assert "rmsprop" in message and all(name in message for name in OPTIMIZERS)


@pytest.mark.parametrize("name,step_fn", [("sgd", sgd_step), ("momentum", momentum_step), ("adam", adam_step)])
def test_step_dispatches_on_state_type(name, step_fn):
    rng = np.random.default_rng(0)
    theta0, grad = rng.standard_normal(3), rng.standard_normal(3)
    via_step, direct = theta0.copy(), theta0.copy()
    s1, s2 = init_state(name, via_step), init_state(name, direct)
    for _ in range(3):
        s1 = step(via_step, grad, s1, 0.05)
        s2 = step_fn(direct, grad, s2, 0.05)
    assert type(s1) is type(s2)
    np.testing.assert_array_equal(via_step, direct)
    # the three optimizers really differ, so dispatching to the wrong one is caught
    others = [n for n in OPTIMIZERS if n != name]
    for other in others:
        p = theta0.copy()
        s = init_state(other, p)
        for _ in range(3):
            s = step(p, grad, s, 0.05)
        assert not np.allclose(p, via_step)


@pytest.mark.task_adam
def test_adam_minimizes_a_quadratic():
    """f(theta) = 1/2 (theta - c)^T A (theta - c) with an ill-conditioned diagonal A."""
    a, c = np.array([1.0, 10.0, 100.0]), np.array([1.0, -2.0, 3.0])
    theta = np.zeros(3)
    state = init_state("adam", theta)
    for _ in range(3000):
        state = adam_step(theta, a * (theta - c), state, lr=0.05)
    assert state.t == 3000
    np.testing.assert_allclose(theta, c, atol=1e-3)
    assert 0.5 * np.sum(a * (theta - c) ** 2) < 1e-6
