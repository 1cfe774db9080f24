"""What the grader runs: per assignment task, cases that call the task's functions on fixed inputs.

A case is a function ``run(m)`` of a namespace ``m`` holding minivae's modules (``m.nn``,
``m.gaussian``, ``m.likelihoods``, ``m.vae``, ``m.optim``, ``m.estimate``); it builds its
inputs from its own seed and returns the arrays its task computes, by name. The grader
runs every case twice: once in a confined process with the student's modules (which only
writes the outputs down), once with the reference (in a process that never imports the
student's code), and compares them. Visible cases repeat what the student copy's own tests
check; hidden ones (other sizes, seeds, dtypes and edge cases) are not in the copy.

This module imports NumPy only: the grader loads it by path into the confined process.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np


class Case(NamedTuple):
    task: str
    name: str
    hidden: bool
    run: Callable        # m -> {name: array}
    rtol: float = 1e-7
    atol: float = 1e-10


CASES: list[Case] = []


def case(task: str, name: str, hidden: bool = False, rtol: float = 1e-7, atol: float = 1e-10):
    def register(fn):
        CASES.append(Case(task, name, hidden, fn, rtol, atol))
        return fn
    return register


def _rng(name: str) -> np.random.Generator:
    return np.random.default_rng([ord(c) for c in name])


def _away_from_zero(rng, shape, dtype=np.float64):
    return (rng.choice([-1.0, 1.0], size=shape) * rng.uniform(0.1, 3.0, size=shape)).astype(dtype)


# ---------------------------------------------------------------- task_layers
def _affine(shape, dtype):
    def run(m):
        N, D, H = shape
        rng = _rng(f"affine{shape}{dtype}")
        x, W, b = (rng.standard_normal(s).astype(dtype) for s in ((N, D), (D, H), (H,)))
        _, cache = m.nn.affine_forward(x, W, b)
        dx, dW, db = m.nn.affine_backward(rng.standard_normal((N, H)).astype(dtype), cache)
        return {"dx": dx, "dW": dW, "db": db}
    return run


def _activation(name, shape, dtype, scale=1.0):
    def run(m):
        forward, backward = getattr(m.nn, f"{name}_forward"), getattr(m.nn, f"{name}_backward")
        rng = _rng(f"{name}{shape}{dtype}{scale}")
        x = _away_from_zero(rng, shape, dtype) * dtype(scale)
        _, cache = forward(x)
        return {"dx": backward(rng.standard_normal(shape).astype(dtype), cache)}
    return run


case("task_layers", "affine_backward, x (3, 4), W (4, 5)")(_affine((3, 4, 5), np.float64))
case("task_layers", "affine_backward, x (1, 1), W (1, 1)", hidden=True)(_affine((1, 1, 1), np.float64))
case("task_layers", "affine_backward, float32, x (7, 3), W (3, 2)", hidden=True, rtol=1e-5, atol=1e-6)(
    _affine((7, 3, 2), np.float32))
for _name in ("relu", "leaky_relu", "tanh", "sigmoid", "softplus"):
    case("task_layers", f"{_name}_backward, x (3, 4)")(_activation(_name, (3, 4), np.float64))
    case("task_layers", f"{_name}_backward, x (2, 3, 4), |x| up to 30", hidden=True)(
        _activation(_name, (2, 3, 4), np.float64, 10.0))
    case("task_layers", f"{_name}_backward, float32", hidden=True, rtol=1e-5, atol=1e-6)(
        _activation(_name, (5, 3), np.float32))


# ---------------------------------------------------------------- task_kl
def _kl_std(shape, dtype=np.float64, lv_scale=1.5):
    def run(m):
        rng = _rng(f"kl{shape}{dtype}{lv_scale}")
        mu = rng.standard_normal(shape).astype(dtype)
        log_var = rng.uniform(-lv_scale, lv_scale, shape).astype(dtype)
        kl, cache = m.gaussian.kl_std_normal_forward(mu, log_var)
        dmu, dlog_var = m.gaussian.kl_std_normal_backward(rng.standard_normal(shape[:-1]).astype(dtype), cache)
        return {"kl": kl, "dmu": dmu, "dlog_var": dlog_var}
    return run


def _kl_diag(shape, same=False):
    def run(m):
        rng = _rng(f"kldiag{shape}{same}")
        q = (rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape))
        p = q if same else (rng.standard_normal(shape), rng.uniform(-1.5, 1.5, shape))
        kl, cache = m.gaussian.kl_diag_forward(*q, *p)
        grads = m.gaussian.kl_diag_backward(rng.standard_normal(shape[:-1]), cache)
        return {"kl": kl, **dict(zip(("dmu_q", "dlog_var_q", "dmu_p", "dlog_var_p"), grads))}
    return run


case("task_kl", "kl_std_normal, mu and log_var (3, 4)")(_kl_std((3, 4)))
case("task_kl", "kl_diag, all four (3, 4)")(_kl_diag((3, 4)))
case("task_kl", "kl_std_normal, leading axes (2, 3, 4)", hidden=True)(_kl_std((2, 3, 4)))
case("task_kl", "kl_std_normal, one KL per dimension (3, 4, 1)", hidden=True)(_kl_std((3, 4, 1)))
case("task_kl", "kl_std_normal, log_var up to +-30", hidden=True, rtol=1e-9)(_kl_std((4, 3), lv_scale=30.0))
case("task_kl", "kl_std_normal, float32", hidden=True, rtol=1e-5, atol=1e-5)(_kl_std((3, 4), np.float32))
case("task_kl", "kl_diag, leading axes (2, 3, 4)", hidden=True)(_kl_diag((2, 3, 4)))
case("task_kl", "kl_diag of q with itself", hidden=True, atol=0.0)(_kl_diag((5, 3), same=True))


# ---------------------------------------------------------------- task_reparam
def _reparam(eps_shape, dtype=np.float64, lv_scale=1.5):
    def run(m):
        rng = _rng(f"reparam{eps_shape}{dtype}{lv_scale}")
        N, K = eps_shape[-2:]
        mu, log_var = rng.standard_normal((N, K)).astype(dtype), rng.uniform(-lv_scale, lv_scale, (N, K)).astype(dtype)
        eps = rng.standard_normal(eps_shape).astype(dtype)
        z, cache = m.gaussian.reparameterize_forward(mu, log_var, eps)
        dmu, dlog_var, deps = m.gaussian.reparameterize_backward(rng.standard_normal(z.shape).astype(dtype), cache)
        return {"dmu": dmu, "dlog_var": dlog_var, "deps": deps}
    return run


case("task_reparam", "reparameterize_backward, eps (3, 4)")(_reparam((3, 4)))
case("task_reparam", "reparameterize_backward, eps (5, 3, 4)")(_reparam((5, 3, 4)))
case("task_reparam", "reparameterize_backward, eps (1, 3, 4)", hidden=True)(_reparam((1, 3, 4)))
case("task_reparam", "reparameterize_backward, float32, eps (2, 6, 3)", hidden=True, rtol=1e-5, atol=1e-6)(
    _reparam((2, 6, 3), np.float32))
case("task_reparam", "reparameterize_backward, log_var up to +-20", hidden=True)(_reparam((4, 2, 3), lv_scale=20.0))


# ---------------------------------------------------------------- task_bernoulli
def _bernoulli(lead, scale, dtype=np.float64, grey=True):
    def run(m):
        rng = _rng(f"bernoulli{lead}{scale}{dtype}{grey}")
        x = (rng.random((3, 4)) < 0.5).astype(dtype)
        if grey:
            x[0] = rng.random(4)
        logits = (rng.uniform(-1, 1, (*lead, 3, 4)) * scale).astype(dtype)
        logp, cache = m.likelihoods.bernoulli_forward(x, logits)
        dlogits = m.likelihoods.bernoulli_backward(rng.standard_normal(logp.shape).astype(dtype), cache)
        return {"logp": logp, "dlogits": dlogits}
    return run


case("task_bernoulli", "bernoulli, logits (3, 4) up to +-8")(_bernoulli((), 8.0))
case("task_bernoulli", "bernoulli, logits (2, 3, 4)")(_bernoulli((2,), 8.0))
case("task_bernoulli", "bernoulli, logits up to +-1e4", hidden=True, rtol=1e-9)(_bernoulli((), 1e4))
case("task_bernoulli", "bernoulli, float32 logits up to +-1e4", hidden=True, rtol=1e-5, atol=1e-3)(
    _bernoulli((2,), 1e4, np.float32))
case("task_bernoulli", "bernoulli, binary x, logits up to +-30", hidden=True)(_bernoulli((3,), 30.0, grey=False))


# ---------------------------------------------------------------- task_elbo
def _elbo(likelihood="bernoulli", activation="relu", S=1, c_dim=0, objective="elbo", free_bits=0.0,
          beta=1.0, hidden=(5, 4)):
    def run(m):
        rng = _rng(f"elbo{likelihood}{activation}{S}{c_dim}{objective}{free_bits}{beta}{hidden}")
        D, K, N = 6, 3, 4
        vae = m.vae.VAE(x_dim=D, hidden=hidden, z_dim=K, likelihood=likelihood, activation=activation, seed=1,
                        dtype="float64", obs_scale=0.7, c_dim=c_dim)
        if likelihood == "bernoulli":
            x = (rng.random((N, D)) < 0.5).astype(float)
        elif likelihood == "categorical":
            x = rng.multinomial(3, np.full(D, 1 / D), size=N).astype(float)
        else:
            x = rng.standard_normal((N, D))
        c = np.eye(c_dim)[rng.integers(0, c_dim, N)] if c_dim else None
        out = vae.loss_and_grads(x, rng.standard_normal((S, N, K)), beta=beta, c=c, objective=objective,
                                 free_bits=free_bits)
        return {"loss": np.array(out.loss), **{f"grad {k}": v for k, v in out.grads.items()}}
    return run


case("task_elbo", "loss_and_grads, bernoulli, relu, S = 1", rtol=1e-6)(_elbo())
case("task_elbo", "loss_and_grads, gaussian, tanh, S = 3, beta 0.7", rtol=1e-6)(
    _elbo("gaussian", "tanh", 3, beta=0.7))
case("task_elbo", "loss_and_grads, gaussian_learned, softplus, S = 2", hidden=True, rtol=1e-6)(
    _elbo("gaussian_learned", "softplus", 2))
case("task_elbo", "loss_and_grads, categorical, sigmoid", hidden=True, rtol=1e-6)(
    _elbo("categorical", "sigmoid", 1))
case("task_elbo", "loss_and_grads, bernoulli, conditional, leaky_relu, S = 4", hidden=True, rtol=1e-6)(
    _elbo(activation="leaky_relu", S=4, c_dim=3))
case("task_elbo", "loss_and_grads, bernoulli, relu, IWAE, S = 5", hidden=True, rtol=1e-6)(_elbo(S=5, objective="iwae"))
case("task_elbo", "loss_and_grads, bernoulli, tanh, free bits, beta 2", hidden=True, rtol=1e-6)(
    _elbo(activation="tanh", S=2, free_bits=0.05, beta=2.0))
case("task_elbo", "loss_and_grads, gaussian, linear (hidden = ())", hidden=True, rtol=1e-6)(
    _elbo("gaussian", S=5, hidden=()))


# ---------------------------------------------------------------- task_adam
THETA0 = (0.5, -1.25, 2.0)
GRADS = [(0.3, -0.7, 1.1), (-0.2, 0.05, 0.9), (1.5, -2.0, 0.01)]


def _adam(betas=(0.9, 0.999), dtype=np.float64, n_random=0):
    def run(m):
        rng = _rng(f"adam{betas}{dtype}{n_random}")
        if n_random:
            param = rng.standard_normal(n_random).astype(dtype)
            grads = [rng.standard_normal(n_random).astype(dtype) for _ in range(20)]
        else:
            param, grads = np.array(THETA0, dtype), [np.array(g, dtype) for g in GRADS]
        state = m.optim.init_state("adam", param)
        for g in grads:
            state = m.optim.adam_step(param, g, state, 0.01, beta1=betas[0], beta2=betas[1], eps=1e-8)
        return {"param": param, "m": state.m, "v": state.v, "t": np.array(state.t)}
    return run


case("task_adam", "adam_step, three steps by hand, betas (0.9, 0.999)", rtol=1e-10)(_adam())
case("task_adam", "adam_step, three steps, betas (0.5, 0.75)", hidden=True, rtol=1e-10)(_adam((0.5, 0.75)))
case("task_adam", "adam_step, 20 steps on 1000 float32 parameters", hidden=True, rtol=1e-4, atol=1e-6)(
    _adam(dtype=np.float32, n_random=1000))


# ---------------------------------------------------------------- task_iw
def _iw(S, rows, likelihood="gaussian", obs_scale=1.0, n=5):
    def run(m):
        rng = _rng(f"iw{S}{rows}{likelihood}{obs_scale}{n}")
        vae = m.vae.VAE(x_dim=6, hidden=(5,), z_dim=2, activation="tanh", dtype="float64", seed=0,
                        likelihood=likelihood, obs_scale=obs_scale)
        x = rng.standard_normal((n, 6))
        est = m.estimate.estimate_log_px(vae, x, S, np.random.default_rng(7), rows=rows)
        return {"log_px": est.log_px, "se": est.se, "ess": est.ess}
    return run


case("task_iw", "estimate_log_px, S = 50, one chunk", rtol=1e-9)(_iw(50, 10_000))
case("task_iw", "estimate_log_px, S = 50, chunks of 7 rows", hidden=True, rtol=1e-9)(_iw(50, 7))
case("task_iw", "estimate_log_px, log-weights near -1e6", hidden=True, rtol=1e-9)(_iw(100, 30, obs_scale=1e-3, n=2))
case("task_iw", "estimate_log_px, S = 1", hidden=True, rtol=1e-9)(_iw(1, 64))
