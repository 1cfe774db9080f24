r"""Diagnostics of a trained encoder: which latent dimensions carry information.

* Active units (Burda, Grosse & Salakhutdinov 2015): dimension $k$ is active when
  $A_k = \mathrm{Cov}_x\big(\mathbb E_{q(z\mid x)}[z_k]\big) = \mathrm{Var}_x(\mu_k(x)) > 0.01$:
  its posterior mean moves with the input. An inactive dimension has collapsed to
  the prior and costs no KL.
* KL per dimension: the closed-form KL of a diagonal Gaussian to $\mathcal N(0, I)$ is a
  sum over the dimensions, $\mathrm{KL} = \sum_k \mathrm{KL}_k$; the data average of
  $\mathrm{KL}_k$ is the rate dimension $k$ spends.

Taught in lessons 7 and 9.
"""
from __future__ import annotations

import numpy as np

from .gaussian import kl_std_normal_forward

__all__ = ["ACTIVE_THRESHOLD", "activity", "active_units", "kl_per_dimension", "nearest_mean_accuracy"]

ACTIVE_THRESHOLD = 0.01


def activity(mu: np.ndarray) -> np.ndarray:
    r"""$A_k = \mathrm{Var}_n(\mu_{n,k})$.  mu (N, K) posterior means over a data set -> (K,)."""
    return np.var(np.asarray(mu, np.float64), axis=0)


def active_units(mu: np.ndarray, threshold: float = ACTIVE_THRESHOLD) -> int:
    """The number of dimensions whose activity exceeds ``threshold``.  mu (N, K) -> int."""
    return int(np.sum(activity(mu) > threshold))


def kl_per_dimension(mu: np.ndarray, log_var: np.ndarray) -> np.ndarray:
    """Mean over examples of each dimension's KL to N(0, 1), in nats.  (N, K) each -> (K,).
    Sums to the mean total KL."""
    mu, log_var = np.asarray(mu, np.float64), np.asarray(log_var, np.float64)
    per_dim = kl_std_normal_forward(mu[..., None], log_var[..., None])[0]  # (N, K): one "vector" per dim
    return per_dim.mean(axis=0)


def nearest_mean_accuracy(train_feats: np.ndarray, train_labels: np.ndarray,
                          test_feats: np.ndarray, test_labels: np.ndarray) -> float:
    """How well codes separate classes: classify each test row by the nearest class
    mean of the training rows. (N, F), (N,), (M, F), (M,) -> accuracy in [0, 1]."""
    classes = np.unique(train_labels)
    means = np.stack([train_feats[train_labels == k].mean(axis=0) for k in classes])  # (C, F)
    dist = ((test_feats[:, None, :] - means[None]) ** 2).sum(axis=-1)                  # (M, C)
    return float(np.mean(classes[dist.argmin(axis=1)] == test_labels))
