r"""The variational autoencoder, assembled from the hand-derived ops.

    x ──enc MLP──▶ h ──▶ (mu, log_var) ──reparam(eps)──▶ z ──dec MLP──▶ out ──▶ log p(x | z)
                          └───────── closed-form KL(q(z|x) || N(0, I)) ─────────┘

The loss is the mean over the batch of the negative ELBO, in nats per example:

$$ L = \frac1N \sum_n \Big[ -\frac1S\sum_s \log p(x_n \mid z_{s,n}) + \beta\,\mathrm{KL}_n \Big]. $$

The backward pass runs the caches in reverse; nothing here is differentiated
automatically. Parameters live in one flat buffer and ``params`` maps stable
names (``"enc.0.W"``, ``"enc.mu.b"``, ``"dec.out.W"``, ...) to views of it, so an
optimizer can update every parameter with a few whole-array operations.
Taught in lesson 6.
"""
from __future__ import annotations

from types import MappingProxyType
from typing import Mapping, NamedTuple, Sequence

import numpy as np

from . import gaussian
from .likelihoods import LIKELIHOODS, get_likelihood
from .nn import ACTIVATIONS, affine_backward, affine_forward
from .objectives import elbo_kl_form

__all__ = ["VAE", "LossAndGrads", "Terms"]

DTYPES = ("float32", "float64")


class LossAndGrads(NamedTuple):
    """What :meth:`VAE.loss_and_grads` returns."""
    loss: float                   # mean over the batch of -ELBO_beta, nats/example
    grads: dict[str, np.ndarray]  # dloss/dparam, same keys and shapes as VAE.params
    recon: float                  # mean over the batch of -E_q[log p(x|z)] (distortion)
    kl: float                     # mean over the batch of KL(q(z|x) || p(z)) (rate)


class Terms(NamedTuple):
    """Per-example pieces of the ELBO for one batch, from :meth:`VAE.terms`."""
    log_px_z: np.ndarray  # (S, N)     log p(x | z_s)
    kl: np.ndarray        # (N,)       KL(q(z|x) || N(0, I))
    mu: np.ndarray        # (N, K)
    log_var: np.ndarray   # (N, K)
    z: np.ndarray         # (S, N, K)


class VAE:
    r"""A VAE with MLP encoder and decoder and a diagonal Gaussian posterior.

    Parameters
    ----------
    x_dim : int
        D, the data dimension (784 for MNIST).
    hidden : sequence of int
        Hidden widths of the encoder; the decoder mirrors them. ``()`` gives a
        linear encoder and decoder (the probabilistic-PCA model).
    z_dim : int
        K, the latent dimension.
    likelihood : str
        One of :data:`minivae.likelihoods.LIKELIHOODS`.
    activation : str
        One of :data:`minivae.nn.ACTIVATIONS`.
    seed : int
        Seeds the initialization (PyTorch's default: uniform in $\pm 1/\sqrt{\text{fan-in}}$).
    dtype : "float32" or "float64"
        Every array and every computation uses it; float64 for gradient checks.
    obs_scale : float
        The fixed $\sigma$ of "gaussian" or $b$ of "laplace" (ignored otherwise).
    """

    def __init__(self, x_dim: int = 784, hidden: Sequence[int] = (400,), z_dim: int = 20,
                 likelihood: str = "bernoulli", activation: str = "relu", seed: int = 0,
                 dtype: str = "float32", obs_scale: float = 1.0):
        hidden = (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
        for name, v in [("x_dim", x_dim), ("z_dim", z_dim)] + [("hidden", h) for h in hidden]:
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.x_dim, self.hidden, self.z_dim = int(x_dim), tuple(int(h) for h in hidden), int(z_dim)
        self.likelihood_name, self.activation, self.seed = likelihood, activation, int(seed)
        self.obs_scale = float(obs_scale)
        self.dtype = np.dtype(str(dtype))
        self.likelihood = get_likelihood(likelihood, obs_scale)
        self._act_forward, self._act_backward = ACTIVATIONS[activation]

        self.shapes = self._param_shapes()
        self.n_params = sum(int(np.prod(s)) for s in self.shapes.values())
        self.flat = np.empty(self.n_params, dtype=self.dtype)  # every parameter, contiguous
        self._params = self.views(self.flat)
        rng = np.random.default_rng(seed)
        for name, p in self._params.items():
            fan_in = self.shapes[name.rsplit(".", 1)[0] + ".W"][0]
            bound = 1.0 / np.sqrt(fan_in)
            p[...] = rng.uniform(-bound, bound, size=p.shape)

    # ------------------------------------------------------------ parameters
    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        D, K, P = self.x_dim, self.z_dim, self.likelihood.params_per_dim * self.x_dim
        shapes: dict[str, tuple[int, ...]] = {}

        def layer(name, fan_in, fan_out):
            shapes[name + ".W"], shapes[name + ".b"] = (fan_in, fan_out), (fan_out,)

        widths = (D,) + self.hidden
        for i in range(len(self.hidden)):
            layer(f"enc.{i}", widths[i], widths[i + 1])
        layer("enc.mu", widths[-1], K)
        layer("enc.log_var", widths[-1], K)
        widths = (K,) + self.hidden[::-1]
        for i in range(len(self.hidden)):
            layer(f"dec.{i}", widths[i], widths[i + 1])
        layer("dec.out", widths[-1], P)
        return shapes

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Name -> view into a flat buffer of ``n_params`` entries (params, grads, moments)."""
        out, i = {}, 0
        for name, shape in self.shapes.items():
            n = int(np.prod(shape))
            out[name] = flat[i:i + n].reshape(shape)
            i += n
        return out

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        """Read-only mapping name -> array (views of ``flat``; edit values in place)."""
        return MappingProxyType(self._params)

    def config(self) -> dict:
        """The constructor's arguments: ``VAE(**vae.config())`` rebuilds the architecture."""
        return dict(x_dim=self.x_dim, hidden=list(self.hidden), z_dim=self.z_dim,
                    likelihood=self.likelihood_name, activation=self.activation,
                    seed=self.seed, dtype=str(self.dtype), obs_scale=self.obs_scale)

    # ------------------------------------------------------------ checks
    def _as_x(self, x) -> np.ndarray:
        x = np.asarray(x, dtype=self.dtype)
        if x.ndim != 2 or x.shape[1] != self.x_dim:
            raise ValueError(f"x must have shape (N, {self.x_dim}), got {x.shape}")
        return x

    def _as_eps(self, eps, n: int) -> np.ndarray:
        eps = np.asarray(eps, dtype=self.dtype)
        if eps.ndim == 2:
            eps = eps[None]  # (1, N, K)
        if eps.ndim != 3 or eps.shape[1:] != (n, self.z_dim):
            raise ValueError(f"eps must have shape (N, K) = ({n}, {self.z_dim}) or (S, {n}, {self.z_dim}), "
                             f"got {np.shape(eps)}")
        return eps

    # ------------------------------------------------------------ network pieces
    def _mlp_forward(self, h: np.ndarray, prefix: str, n_layers: int):
        caches = []
        for i in range(n_layers):
            a, c_aff = affine_forward(h, self._params[f"{prefix}.{i}.W"], self._params[f"{prefix}.{i}.b"])
            h, c_act = self._act_forward(a)
            caches.append((c_aff, c_act))
        return h, caches

    def _mlp_backward(self, dh: np.ndarray, caches, prefix: str, grads: dict,
                      input_grad: bool = True) -> np.ndarray | None:
        for i in reversed(range(len(caches))):
            c_aff, c_act = caches[i]
            dh = affine_backward(self._act_backward(dh, c_act), c_aff,
                                 out=(grads[f"{prefix}.{i}.W"], grads[f"{prefix}.{i}.b"]),
                                 input_grad=input_grad or i > 0)[0]
        return dh

    def encode(self, x) -> tuple[np.ndarray, np.ndarray]:
        """x (N, D) -> mu (N, K), log_var (N, K): the parameters of q(z | x)."""
        return self._encode(self._as_x(x))[:2]

    def _encode(self, x: np.ndarray):
        h, caches = self._mlp_forward(x, "enc", len(self.hidden))  # (N, H)
        mu, c_mu = affine_forward(h, self._params["enc.mu.W"], self._params["enc.mu.b"])  # (N, K)
        log_var, c_lv = affine_forward(h, self._params["enc.log_var.W"], self._params["enc.log_var.b"])
        return mu, log_var, (caches, c_mu, c_lv)

    def decode(self, z) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """z (..., K) -> the likelihood's parameters, (..., D): logits (bernoulli,
        categorical), mean (gaussian), location (laplace), or a (mean, log_var)
        pair (gaussian_learned)."""
        out = self._decode(np.asarray(z, dtype=self.dtype))[0]
        return tuple(np.split(out, 2, axis=-1)) if self.likelihood.params_per_dim == 2 else out

    def decode_mean(self, z) -> np.ndarray:
        """z (..., K) -> E[x | z] (..., D): pixel probabilities for bernoulli, the mean otherwise."""
        return self.likelihood.mean(self._decode(np.asarray(z, dtype=self.dtype))[0])

    def _decode(self, z: np.ndarray):
        lead = z.shape[:-1]
        h, caches = self._mlp_forward(z.reshape(-1, self.z_dim), "dec", len(self.hidden))  # (S*N, H)
        out, c_out = affine_forward(h, self._params["dec.out.W"], self._params["dec.out.b"])  # (S*N, P)
        return out.reshape(lead + (out.shape[-1],)), (caches, c_out)

    # ------------------------------------------------------------ the objective
    def _forward(self, x: np.ndarray, eps: np.ndarray):
        mu, log_var, enc_cache = self._encode(x)                          # (N, K) each
        z, c_rep = gaussian.reparameterize_forward(mu, log_var, eps)        # (S, N, K)
        out, dec_cache = self._decode(z)                                    # (S, N, P)
        log_px_z, c_lik = self.likelihood.forward(x, out)                   # (S, N)
        kl, c_kl = gaussian.kl_std_normal_forward(mu, log_var)              # (N,)
        terms = Terms(log_px_z, kl, mu, log_var, z)
        return terms, (enc_cache, c_rep, dec_cache, c_lik, c_kl)

    def terms(self, x, eps) -> Terms:
        """Per-example ELBO pieces for a batch, no gradients. x (N, D), eps (N, K) or (S, N, K)."""
        x = self._as_x(x)
        return self._forward(x, self._as_eps(eps, len(x)))[0]

    def elbo(self, x, eps, beta: float = 1.0) -> np.ndarray:
        r"""Per-example $\mathrm{ELBO}_\beta$, (N,), in nats (averaged over the S samples of eps)."""
        t = self.terms(x, eps)
        return elbo_kl_form(t.log_px_z, t.kl, beta)

    def loss_and_grads(self, x, eps, beta: float = 1.0,
                       grads: dict[str, np.ndarray] | None = None) -> LossAndGrads:
        r"""Mean negative ELBO over the batch and its gradient to every parameter.

        x (N, D); eps (N, K) or (S, N, K), standard normal noise passed in (the
        ELBO then averages over the S samples); beta weighs the KL. ``grads``,
        if given, is a dict of preallocated arrays (e.g. ``vae.views(buffer)``)
        that receives the gradients; otherwise fresh arrays are returned.
        """
        x = self._as_x(x)
        eps = self._as_eps(eps, len(x))
        S, N = eps.shape[:2]
        if grads is None:
            grads = self.views(np.empty(self.n_params, dtype=self.dtype))
        t, (enc_cache, c_rep, dec_cache, c_lik, c_kl) = self._forward(x, eps)
        recon = -float(t.log_px_z.mean())
        kl = float(t.kl.mean())
        loss = recon + beta * kl

        # backward: dloss/dlog_px_z = -1/(S N), dloss/dkl = beta/N
        dlog_px_z = np.full((S, N), -1.0 / (S * N), dtype=self.dtype)
        dout = self.likelihood.backward(dlog_px_z, c_lik)                    # (S, N, P)
        (dec_caches, c_out) = dec_cache
        dh = affine_backward(dout.reshape(S * N, -1), c_out,
                             out=(grads["dec.out.W"], grads["dec.out.b"]))[0]  # (S*N, H)
        dz = self._mlp_backward(dh, dec_caches, "dec", grads)               # (S*N, K)
        dmu, dlog_var, _ = gaussian.reparameterize_backward(dz.reshape(S, N, -1), c_rep)
        dmu_kl, dlv_kl = gaussian.kl_std_normal_backward(
            np.full(N, beta / N, dtype=self.dtype), c_kl)
        dmu += dmu_kl
        dlog_var += dlv_kl
        enc_caches, c_mu, c_lv = enc_cache
        deep = bool(self.hidden)  # with no hidden layer the heads read x itself: no dx needed
        dh_mu = affine_backward(dmu, c_mu, out=(grads["enc.mu.W"], grads["enc.mu.b"]), input_grad=deep)[0]
        dh_lv = affine_backward(dlog_var, c_lv, out=(grads["enc.log_var.W"], grads["enc.log_var.b"]),
                                input_grad=deep)[0]
        if deep:
            self._mlp_backward(dh_mu + dh_lv, enc_caches, "enc", grads, input_grad=False)
        return LossAndGrads(loss, grads, recon, kl)
