r"""First-order optimizers with explicit state: SGD, SGD with momentum, Adam.

Each step updates the parameter array in place (pass ``vae.flat`` and a flat
gradient buffer: a few whole-array operations update every parameter) and
returns the new state. The state is a ``NamedTuple``: its arrays are updated
in place, its step counter is returned anew. Nothing is hidden in a dict.

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
           "init_state", "step", "OPTIMIZERS"]


class SGDState(NamedTuple):
    t: int = 0  # steps taken


class MomentumState(NamedTuple):
    velocity: np.ndarray  # like the parameters
    t: int = 0


class AdamState(NamedTuple):
    m: np.ndarray  # first moment, like the parameters
    v: np.ndarray  # second moment
    t: int = 0     # steps taken


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
    r"""One Adam step, in place on ``param``, ``state.m`` and ``state.v``.

    The bias corrections are folded into two scalars,
    $\theta \leftarrow \theta - \eta \frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t} \frac{m}{\sqrt v + \epsilon\sqrt{1-\beta_2^t}}$,
    which is the update above rearranged, so no corrected copy of m or v is made.
    """
    t = state.t + 1
    m, v = state.m, state.v
    m += (1 - beta1) * (grad - m)
    v += (1 - beta2) * (grad * grad - v)
    c2 = math.sqrt(1 - beta2 ** t)
    denom = np.sqrt(v)
    denom += eps * c2
    param -= (lr * c2 / (1 - beta1 ** t)) * m / denom
    return AdamState(m, v, t)


OPTIMIZERS = ("adam", "momentum", "sgd")


def init_state(name: str, param: np.ndarray):
    """A fresh state of optimizer ``name`` for the parameter array ``param``."""
    if name == "adam":
        return AdamState(np.zeros_like(param), np.zeros_like(param))
    if name == "momentum":
        return MomentumState(np.zeros_like(param))
    if name == "sgd":
        return SGDState()
    raise ValueError(f"unknown optimizer {name!r}; choose one of {', '.join(OPTIMIZERS)}")


def step(param: np.ndarray, grad: np.ndarray, state, lr: float):
    """Dispatch on the state's type: one step of whichever optimizer made ``state``."""
    if isinstance(state, AdamState):
        return adam_step(param, grad, state, lr)
    if isinstance(state, MomentumState):
        return momentum_step(param, grad, state, lr)
    return sgd_step(param, grad, state, lr)
