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
    y = x @ W
    y += b  # in place: one (N, H) array per layer, not two
    return y, AffineCache(x, W)


def affine_backward(dy: np.ndarray, cache: AffineCache, out: tuple | None = None,
                    input_grad: bool = True):
    r"""$\bar x = \bar y W^\top$, $\bar W = x^\top \bar y$, $\bar b = \sum_n \bar y_n$.

    dy (N, H) -> dx (N, D), dW (D, H), db (H,). Two options serve the training
    loop: ``out=(dW, db)`` writes the parameter gradients into preallocated
    arrays (no temporaries), and ``input_grad=False`` skips $\bar x$ (returned
    as None) for a layer whose input is data: that product is as large as the
    others and nobody needs it.
    """
    ### BEGIN SOLUTION task_layers
    dx = dy @ cache.W.T if input_grad else None
    if out is None:
        return dx, cache.x.T @ dy, dy.sum(axis=0)
    dW, db = out
    np.matmul(cache.x.T, dy, out=dW)
    np.sum(dy, axis=0, out=db)
    return dx, dW, db
    ### END SOLUTION


# Activations: elementwise, any shape. Each cache keeps what its derivative needs.

class ActCache(NamedTuple):
    a: np.ndarray  # the array the derivative is computed from (input or output)


def relu_forward(x: np.ndarray):
    r"""$y = \max(x, 0)$."""
    y = np.maximum(x, 0)
    return y, ActCache(y)


def relu_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x = \bar y \, [x > 0]$ (the subgradient 0 is taken at $x = 0$)."""
    ### BEGIN SOLUTION task_layers
    return dy * (cache.a > 0)
    ### END SOLUTION


LEAKY_SLOPE = 0.01


def leaky_relu_forward(x: np.ndarray):
    r"""$y = x$ for $x > 0$, else $0.01\,x$."""
    return np.where(x > 0, x, LEAKY_SLOPE * x), ActCache(x)


def leaky_relu_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x = \bar y$ for $x > 0$, else $0.01\,\bar y$."""
    ### BEGIN SOLUTION task_layers
    return np.where(cache.a > 0, dy, LEAKY_SLOPE * dy)
    ### END SOLUTION


def tanh_forward(x: np.ndarray):
    r"""$y = \tanh x$."""
    y = np.tanh(x)
    return y, ActCache(y)


def tanh_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x = \bar y (1 - y^2)$."""
    ### BEGIN SOLUTION task_layers
    return dy * (1 - cache.a * cache.a)
    ### END SOLUTION


def _new_like(x) -> np.ndarray:
    """An uninitialized float array shaped like ``x`` (float32 stays float32), for ``out=``.

    The elementwise functions below write every pass into one new array: on a
    (512, 784) batch a fresh temporary per pass costs more than the arithmetic
    (the allocator hands large blocks back to the OS and each reuse page-faults).
    """
    return np.empty(np.shape(x), np.result_type(x, 0.5))


def sigmoid(x: np.ndarray) -> np.ndarray:
    r"""$\sigma(x) = 1 / (1 + e^{-x})$, without overflow for any finite $x$.

    Written as $\tfrac12 (1 + \tanh(x/2))$: one transcendental ufunc, no branches,
    exact 0/1 limits.
    """
    y = np.multiply(x, 0.5, out=_new_like(x))
    np.tanh(y, out=y)
    y += 1
    y *= 0.5
    return y


def sigmoid_forward(x: np.ndarray):
    r"""$y = \sigma(x)$."""
    y = sigmoid(x)
    return y, ActCache(y)


def sigmoid_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x = \bar y\, y (1 - y)$."""
    ### BEGIN SOLUTION task_layers
    return dy * cache.a * (1 - cache.a)
    ### END SOLUTION


def softplus(x: np.ndarray) -> np.ndarray:
    r"""$\log(1 + e^x) = \max(x, 0) + \log(1 + e^{-|x|})$: stable for any finite $x$.

    Seven in-place passes over two arrays, with $\max(x, 0) = (x + |x|)/2$ (NumPy's
    ``maximum`` against a scalar is not vectorized: 5x slower than these two passes),
    beat ``np.logaddexp(0, x)``, which is not vectorized either: 15x faster in float32 here."""
    a = np.abs(x, out=_new_like(x))
    y = np.negative(a, out=_new_like(x))
    np.exp(y, out=y)
    np.log1p(y, out=y)   # log(1 + e^-|x|)
    a += x
    a *= 0.5             # max(x, 0)
    y += a
    return y


def softplus_forward(x: np.ndarray):
    r"""$y = \log(1 + e^x)$."""
    return softplus(x), ActCache(x)


def softplus_backward(dy: np.ndarray, cache: ActCache):
    r"""$\bar x = \bar y\, \sigma(x)$."""
    ### BEGIN SOLUTION task_layers
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
