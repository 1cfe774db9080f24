"""Optimizers against steps computed by hand from the published update rules."""
import numpy as np
import pytest

from minivae.optim import (
    OPTIMIZERS, AdamState, MomentumState, SGDState, adam_step, init_state, momentum_step, sgd_step, state_arrays,
    step,
)

from checks import assert_close

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


#: Adam (Kingma & Ba 2015, Algorithm 1) worked out from THETA0 and GRADS at lr = 0.01, eps = 1e-8,
#: to 40 digits: betas -> [(m, v, theta) after steps 1, 2, 3]
ADAM_BY_HAND = {
    (0.9, 0.999): [
        ([0.03, -0.07, 0.11], [9e-05, 0.00049, 0.00121], [0.4900000003333333, -1.240000000142857, 1.990000000090909]),
        ([0.007, -0.058, 0.189], [0.00012991, 0.00049201, 0.00201879],
         [0.48855479509285965, -1.2338469023710912, 1.9801015083841162]),
        ([0.1563, -0.2522, 0.1711], [0.00237978009, 0.00449151799, 0.00201687121],
         [0.482082404577187, -1.2262449934850839, 1.972405153697156]),
    ],
    (0.5, 0.75): [
        ([0.15, -0.35, 0.55], [0.0225, 0.1225, 0.3025], [0.4900000003333333, -1.240000000142857, 1.990000000090909]),
        ([-0.025, -0.15, 0.725], [0.026875, 0.0925, 0.429375], [0.491344911253713, -1.2356504118754434, 1.9802423016939175]),
        ([0.7375, -1.075, 0.3675], [0.58265625, 1.069375, 0.32205625],
         [0.4829491778883228, -1.226617115285678, 1.9746150765210184]),
    ],
}


@pytest.mark.task_adam
@pytest.mark.parametrize("betas", list(ADAM_BY_HAND))
def test_adam_three_steps_worked_out_by_hand(betas):
    b1, b2 = betas
    param = np.array(THETA0)
    state = init_state("adam", param)
    for t, (g, (m, v, theta)) in enumerate(zip(GRADS, ADAM_BY_HAND[betas]), start=1):
        state = adam_step(param, np.array(g), state, 0.01, beta1=b1, beta2=b2, eps=1e-8)
        case = f"adam_step {t} of 3 from theta = {THETA0}, gradients {GRADS[:t]}, lr 0.01, betas {betas}"
        assert state.t == t, f"{case}: the state says t = {state.t}"
        assert_close(state.m, m, case, "the first moment m", rtol=1e-12, atol=1e-15)
        assert_close(state.v, v, case, "the second moment v", rtol=1e-12, atol=1e-15)
        assert_close(param, theta, case, "the parameters", rtol=1e-12, atol=1e-12)


@pytest.mark.task_adam
def test_adam_first_step_moves_every_coordinate_by_about_lr():
    """At t = 1, m_hat / sqrt(v_hat) = g / |g| = sign(g): the step is lr in each coordinate."""
    param = np.array(THETA0)
    adam_step(param, np.array(GRADS[0]), init_state("adam", param), lr=0.01)
    assert_close(np.array(THETA0) - param, 0.01 * np.sign(GRADS[0]), f"the first adam_step, gradient {GRADS[0]}",
                 "the step taken (expected lr in every coordinate, against the gradient's sign)", rtol=1e-6)


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


def test_init_state_types_and_rejection():
    param = np.zeros(3)
    assert isinstance(init_state("sgd", param), SGDState)
    assert isinstance(init_state("momentum", param), MomentumState)
    adam = init_state("adam", param)
    assert isinstance(adam, AdamState) and adam.t == 0
    assert np.array_equal(adam.m, param) and np.array_equal(adam.v, param)
    assert adam.m is not param and adam.v is not adam.m
    with pytest.raises(ValueError) as info:
        init_state("no-such-optimizer", param)
    message = str(info.value)
    assert "no-such-optimizer" in message and all(name in message for name in OPTIMIZERS)


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
    case = "3000 adam_steps on 1/2 (theta - c)^T A (theta - c), A = diag(1, 10, 100), c = (1, -2, 3), lr 0.05"
    assert state.t == 3000, f"{case}: the state says t = {state.t}"
    assert_close(theta, c, case, "the minimizer reached", atol=1e-3)
    assert 0.5 * np.sum(a * (theta - c) ** 2) < 1e-6


@pytest.mark.parametrize("name,update", [("sgd", sgd_step), ("momentum", momentum_step), ("adam", adam_step)])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_blocks_and_gradient_lists_change_nothing(name, update, dtype):
    """optim.step works block by block, from a flat gradient or from a list of arrays laid end
    to end (a model's gradients): the same bits as one update of the whole array."""
    from minivae.optim import BLOCK
    rng = np.random.default_rng(3)
    # small arrays gathered into one block (7 + 12, then 1 + BLOCK/2, then BLOCK/2 + 1 + 5), large ones sliced
    shapes = [(2, BLOCK + 5), (7,), (3, 4), (BLOCK // 2 + 3, 2), (1,), (BLOCK // 2,), (BLOCK // 2 + 1,), (5,)]
    grads = [rng.standard_normal(s).astype(dtype) for s in shapes]
    flat_grad = np.concatenate([g.reshape(-1) for g in grads])
    theta0 = rng.standard_normal(len(flat_grad)).astype(dtype)
    whole, flat, listed, threaded = (theta0.copy() for _ in range(4))
    states = [init_state(name, p) for p in (whole, flat, listed, threaded)]
    for _ in range(3):
        states[0] = update(whole, flat_grad, states[0], 0.05)
        states[1] = step(flat, flat_grad, states[1], 0.05)
        states[2] = step(listed, grads, states[2], 0.05)
        states[3] = step(threaded, grads, states[3], 0.05, each=lambda fn, blocks: [fn(b) for b in blocks[::-1]][::-1])
    for p, s in zip((flat, listed, threaded), states[1:]):
        np.testing.assert_array_equal(p, whole)
        for k, a in state_arrays(states[0]).items():
            np.testing.assert_array_equal(state_arrays(s)[k], a)
        assert s.t == states[0].t == 3
    with pytest.raises(ValueError, match="entries"):
        step(theta0.copy(), grads[:-1], init_state("momentum", theta0), 0.05)
### BEGIN INSTRUCTOR: adam_step_in_buffers is left out of the student copy


@pytest.mark.parametrize("dtype,grad_dtype", [(np.float32, np.float32), (np.float64, np.float64),
                                              (np.float32, np.float64)])
def test_adam_in_buffers_gives_adam_steps_bits(dtype, grad_dtype):
    """The trainer's Adam (scratch buffers, no temporaries) is adam_step, bit for bit."""
    from minivae.optim import adam_step_in_buffers
    rng = np.random.default_rng(5)
    theta0 = rng.standard_normal(1000).astype(dtype)
    textbook, buffered = theta0.copy(), theta0.copy()
    s1, s2 = init_state("adam", textbook), init_state("adam", buffered)
    for t in range(1, 26):
        grad = (rng.standard_normal(1000) * 10.0 ** rng.integers(-6, 3, 1000)).astype(grad_dtype)
        s1 = adam_step(textbook, grad, s1, 0.003, beta1=0.8, beta2=0.99, eps=1e-6)
        s2 = adam_step_in_buffers(buffered, grad, s2, 0.003, beta1=0.8, beta2=0.99, eps=1e-6)
        assert s1.t == s2.t == t
        np.testing.assert_array_equal(buffered, textbook)
        np.testing.assert_array_equal(s2.m, s1.m)
        np.testing.assert_array_equal(s2.v, s1.v)
    assert buffered.dtype == dtype and not np.array_equal(buffered, theta0)
### END INSTRUCTOR
