r"""Layers of the encoder and decoder MLPs: affine maps and activations.

Each op is a pair: ``forward(inputs) -> (y, cache)`` and
``backward(dy, cache) -> gradients`` in the order of forward's inputs, where
``dname`` is $\partial L / \partial \mathrm{name}$ for whatever scalar $L$ is
being differentiated. Caches are immutable ``NamedTuple``s; no op mutates its
inputs. Taught in lessons 1 and 6.
"""
from __future__ import annotations

from typing import Callable, NamedTuple

import numpy as np

__all__ = [
    "affine_forward", "affine_backward",
    "relu_forward", "relu_backward",
    "leaky_relu_forward", "leaky_relu_backward",
    "tanh_forward", "tanh_backward",
    "sigmoid", "sigmoid_forward", "sigmoid_backward",
    "softplus", "softplus_forward", "softplus_backward",
    "ACTIVATIONS",
]


class AffineCache(NamedTuple):
    x: np.ndarray  # (N, D)
    W: np.ndarray  # (D, H)


def affine_forward(x: np.ndarray, W: np.ndarray, b: np.ndarray):
    r"""$y = xW + b$.

    x (N, D), W (D, H), b (H,) -> y (N, H).
    """
    return x @ W + b, AffineCache(x, W)


def affine_backward(dy: np.ndarray, cache: AffineCache):
    r"""The gradients of $L$ to the affine map's input, weights and bias, given $\bar y = \partial L / \partial y$.

    dy (N, H), the cache of :func:`affine_forward` -> dx (N, D), dW (D, H), db (H,),
    each of its input's shape and dtype. Checked against finite differences.
    """
    ### BEGIN SOLUTION task_layers
    # y_nh = sum_d x_nd W_dh + b_h, so dL/dx_nd = sum_h dy_nh W_dh, dL/dW_dh = sum_n x_nd dy_nh
    # and dL/db_h = sum_n dy_nh: $\bar x = \bar y W^\top$, $\bar W = x^\top \bar y$, $\bar b = \sum_n \bar y_n$.
    dx = dy @ cache.W.T
    dW = cache.x.T @ dy
    db = np.sum(dy, axis=0)
    ### END SOLUTION
    return dx, dW, db


# Activations: elementwise, any shape. Each cache keeps what its derivative needs. Each
# backward takes dy of the activation's shape and returns dx of that shape and dtype.

class ActCache(NamedTuple):
    a: np.ndarray  # the array the derivative is computed from (input or output)


def relu_forward(x: np.ndarray):
    r"""$y = \max(x, 0)$."""
    y = np.maximum(x, 0)
    return y, ActCache(y)


def relu_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x$ for ReLU; at the kink $x = 0$ the subgradient 0 is taken. (The cache holds $y$.)"""
    ### BEGIN SOLUTION task_layers
    # $\bar x = \bar y\,[x > 0]$, and $x > 0$ exactly where $y > 0$
    return dy * (cache.a > 0)
    ### END SOLUTION


LEAKY_SLOPE = 0.01


def leaky_relu_forward(x: np.ndarray):
    r"""$y = x$ for $x > 0$, else $0.01\,x$."""
    return np.where(x > 0, x, LEAKY_SLOPE * x), ActCache(x)


def leaky_relu_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x$ for the leaky ReLU; at $x = 0$ the left slope is taken. (The cache holds $x$.)"""
    ### BEGIN SOLUTION task_layers
    # the slope is 1 for x > 0 and LEAKY_SLOPE elsewhere
    return np.where(cache.a > 0, dy, LEAKY_SLOPE * dy)
    ### END SOLUTION


def tanh_forward(x: np.ndarray):
    r"""$y = \tanh x$."""
    y = np.tanh(x)
    return y, ActCache(y)


def tanh_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x$ for $y = \tanh x$. (The cache holds $y$.)"""
    ### BEGIN SOLUTION task_layers
    # $\tanh' = 1 - \tanh^2$, written with the output y
    return dy * (1 - cache.a**2)
    ### END SOLUTION


def sigmoid(x: np.ndarray) -> np.ndarray:
    r"""$\sigma(x) = 1 / (1 + e^{-x})$, written as $\tfrac12 (1 + \tanh(x/2))$: no overflow
    for any finite $x$, exact 0/1 limits."""
    return 0.5 * (1 + np.tanh(0.5 * x))


def sigmoid_forward(x: np.ndarray):
    r"""$y = \sigma(x)$."""
    y = sigmoid(x)
    return y, ActCache(y)


def sigmoid_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x$ for $y = \sigma(x)$. (The cache holds $y$.)"""
    ### BEGIN SOLUTION task_layers
    # $\sigma' = \sigma (1 - \sigma)$, written with the output y
    return dy * cache.a * (1 - cache.a)
    ### END SOLUTION


def softplus(x: np.ndarray) -> np.ndarray:
    r"""$\log(1 + e^x) = \max(x, 0) + \log(1 + e^{-|x|})$: no overflow for any finite $x$."""
    return np.maximum(x, 0) + np.log1p(np.exp(-np.abs(x)))


def softplus_forward(x: np.ndarray):
    r"""$y = \log(1 + e^x)$."""
    return softplus(x), ActCache(x)


def softplus_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x$ for $y = \log(1 + e^x)$. (The cache holds $x$.)"""
    ### BEGIN SOLUTION task_layers
    # $\frac{d}{dx} \log(1 + e^x) = e^x / (1 + e^x) = \sigma(x)$
    return dy * sigmoid(cache.a)
    ### END SOLUTION


Forward = Callable[[np.ndarray], tuple]
Backward = Callable[[np.ndarray, ActCache], np.ndarray]

#: name -> (forward, backward); the names accepted by ``VAE(activation=...)``.
ACTIVATIONS: dict[str, tuple[Forward, Backward]] = {
    "relu": (relu_forward, relu_backward),
    "leaky_relu": (leaky_relu_forward, leaky_relu_backward),
    "tanh": (tanh_forward, tanh_backward),
    "sigmoid": (sigmoid_forward, sigmoid_backward),
    "softplus": (softplus_forward, softplus_backward),
}
