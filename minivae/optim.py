r"""First-order optimizers with explicit state: SGD, SGD with momentum, Adam.

Each step updates the parameter array in place and returns the new state;
:func:`step` applies whichever optimizer made the state to a model's flat
parameter array (``vae.flat``), from a flat gradient or the list of its gradient
arrays, block by block. The state is a ``NamedTuple``: its arrays are updated in
place, its step counter is returned anew. Nothing is hidden in a dict.

* SGD: $\theta \leftarrow \theta - \eta g$
* momentum (heavy ball): $v \leftarrow \mu v + g,\ \theta \leftarrow \theta - \eta v$
* Adam (Kingma & Ba 2015): $m \leftarrow \beta_1 m + (1-\beta_1) g$,
  $v \leftarrow \beta_2 v + (1-\beta_2) g^2$,
  $\theta \leftarrow \theta - \eta\, \hat m / (\sqrt{\hat v} + \epsilon)$ with
  $\hat m = m / (1-\beta_1^t)$, $\hat v = v / (1 - \beta_2^t)$.

Taught in lesson 6.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["SGDState", "MomentumState", "AdamState", "sgd_step", "momentum_step", "adam_step",
           "init_state", "state_arrays", "step", "OPTIMIZERS"]


class SGDState(NamedTuple):
    t: int = 0  # steps taken


class MomentumState(NamedTuple):
    velocity: np.ndarray  # like the parameters
    t: int = 0


class AdamState(NamedTuple):
    m: np.ndarray    # first moment, like the parameters
    v: np.ndarray    # second moment
    t: int = 0       # steps taken


def sgd_step(param: np.ndarray, grad: np.ndarray, state: SGDState, lr: float) -> SGDState:
    r"""$\theta \leftarrow \theta - \eta g$, in place."""
    param -= lr * grad
    return SGDState(state.t + 1)


def momentum_step(param: np.ndarray, grad: np.ndarray, state: MomentumState, lr: float,
                  momentum: float = 0.9) -> MomentumState:
    r"""$v \leftarrow \mu v + g$, $\theta \leftarrow \theta - \eta v$, both in place."""
    v = state.velocity
    v *= momentum
    v += grad
    param -= lr * v
    return MomentumState(v, state.t + 1)


def adam_step(param: np.ndarray, grad: np.ndarray, state: AdamState, lr: float,
              beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> AdamState:
    r"""One step of Adam (Kingma & Ba 2015, Algorithm 1), in place on ``param``, ``state.m`` and ``state.v``.

    param, grad, state.m and state.v have one shape; ``state.t`` steps were taken before
    this one. Updates the moments and the parameters in place by the rule in the
    module's docstring and returns the state after the step (the same arrays, ``t + 1``).
    """
    m, v, t = state.m, state.v, state.t + 1  # the moments (updated in place) and this step's number
    ### BEGIN SOLUTION task_adam
    # m and v: moving averages of g and g^2. Algorithm 1 then divides them by their bias,
    # m_hat = m / (1 - beta1^t) and v_hat = v / (1 - beta2^t), and steps by
    # lr * m_hat / (sqrt(v_hat) + eps). Here in the paper's own cheaper order (the end of its
    # section 2): both corrections folded into scalars, eps scaled to match exactly.
    m *= beta1
    m += (1 - beta1) * grad
    v *= beta2
    v += (1 - beta2) * grad**2
    correction = math.sqrt(1 - beta2**t)
    param -= (lr * correction / (1 - beta1**t)) * m / (np.sqrt(v) + eps * correction)
    ### END SOLUTION
    return AdamState(m, v, t)


OPTIMIZERS = ("adam", "momentum", "sgd")


def init_state(name: str, param: np.ndarray):
    """A fresh state of optimizer ``name`` for the parameter array ``param``."""
    if name == "adam":
        return AdamState(np.zeros_like(param), np.zeros_like(param), 0)
    if name == "momentum":
        return MomentumState(np.zeros_like(param))
    if name == "sgd":
        return SGDState()
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def state_arrays(state) -> dict[str, np.ndarray]:
    """The arrays that are the optimizer's state (what a checkpoint must keep)."""
    return {k: v for k, v in state._asdict().items() if isinstance(v, np.ndarray)}


def step(param: np.ndarray, grad, state, lr: float, each=None):
    """One step of whichever optimizer made ``state`` (dispatch on its type), applied to a
    flat parameter array block by block, :data:`BLOCK` entries at a time.

    ``grad`` is an array of the parameters' shape, or, for a flat ``param``, a list of
    arrays that laid end to end make it up (a model's gradients in its parameters' order,
    ``[grads[k] for k in vae.shapes]``: no copy into one buffer needed; runs of small arrays,
    biases say, are copied into one block, as every block costs a dozen calls). Blocks change
    nothing in the result, since every update is elementwise; they make it faster: the
    arrays of one block and the update's temporaries stay in the core's cache for all of
    the update's passes, instead of streaming the whole arrays through memory once per
    pass. ``each(fn, blocks)``, if given, runs ``fn`` on every block (on worker threads,
    say; default: one after the other). The step number ``t`` advances once per call.
    """
    update = {AdamState: _ADAM, MomentumState: momentum_step}.get(type(state), sgd_step)
    if isinstance(grad, np.ndarray) and (param.ndim != 1 or len(param) <= BLOCK):
        return update(param, grad, state, lr)
    blocks, at, small = [], 0, []  # (where in param, that part of the gradient), in order

    def gather():  # consecutive small arrays (biases, say) make one block: each block costs some calls
        if small:
            blocks.append((slice(at - sum(map(len, small)), at), np.concatenate(small)))
            small.clear()

    for g in ([grad] if isinstance(grad, np.ndarray) else grad):
        g = g.reshape(-1)
        if sum(map(len, small)) + len(g) > BLOCK:
            gather()
        if len(g) >= BLOCK:
            blocks += [(slice(at + i, at + min(i + BLOCK, len(g))), g[i:i + BLOCK]) for i in range(0, len(g), BLOCK)]
        else:
            small.append(g)
        at += len(g)
    gather()
    if param.ndim != 1 or at != len(param):
        raise ValueError(f"the gradients hold {at} entries for a flat parameter array of shape {param.shape}")

    def one(block) -> int:
        where, g = block
        part = type(state)(*(a[where] if isinstance(a, np.ndarray) else a for a in state))  # views
        return update(param[where], g, part, lr).t

    t = (each(one, blocks) if each is not None else [one(b) for b in blocks])[-1]
    return state._replace(t=t)


_ADAM = adam_step  # the Adam that step() applies
### BEGIN INSTRUCTOR: this is task_adam's answer; the student copy trains with the student's adam_step


def adam_step_in_buffers(param: np.ndarray, grad: np.ndarray, state: AdamState, lr: float,
                         beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8) -> AdamState:
    """:func:`adam_step`'s arithmetic, operation for operation, written into two scratch arrays
    instead of a fresh temporary per operation: the same bits (tests/test_optim.py holds them
    equal), 10% less time for the update of a whole model (memory bound: every pass streams it)."""
    if grad.dtype != param.dtype:  # the textbook's mixed-precision temporaries are its own
        return adam_step(param, grad, state, lr, beta1, beta2, eps)
    m, v, t = state.m, state.v, state.t + 1
    a, b = np.empty_like(grad), np.empty_like(grad)
    m *= beta1
    m += np.multiply(1 - beta1, grad, out=a)
    v *= beta2
    a = np.square(grad, out=a)
    a *= 1 - beta2
    v += a
    correction = math.sqrt(1 - beta2**t)
    np.multiply(lr * correction / (1 - beta1**t), m, out=a)
    np.sqrt(v, out=b)
    b += eps * correction
    a /= b
    param -= a
    return AdamState(m, v, t)


_ADAM = adam_step_in_buffers
### END INSTRUCTOR


#: entries per block of :func:`step`: the five float32 arrays of an Adam block and the
#: update's temporaries (about 2.5 MiB) stay close to a core (its L2 cache on current x86 CPUs).
BLOCK = 1 << 16
