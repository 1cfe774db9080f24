r"""The variational autoencoder, assembled from the hand-derived ops.

    x ──enc MLP──▶ h ──▶ (mu, log_var) ──reparam(eps)──▶ z ──dec MLP──▶ out ──▶ log p(x | z)
                          └───────── closed-form KL(q(z|x) || N(0, I)) ─────────┘

The loss is the mean over the batch of the negative ELBO, in nats per example:

$$ L = \frac1N \sum_n \Big[ -\frac1S\sum_s \log p(x_n \mid z_{s,n}) + \beta\,\mathrm{KL}_n \Big], $$

or, with ``objective="iwae"``, minus the importance-weighted bound
$\mathcal L_S = \log \frac1S \sum_s p(x, z_s)/q(z_s \mid x)$ (Burda et al. 2015).
A context vector $c$ (e.g. a one-hot class) may be fed to both encoder and
decoder: the conditional VAE $q(z \mid x, c)$, $p(x \mid z, c)$ (lesson 8).

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
from .objectives import (elbo_kl_form, free_bits_backward, free_bits_forward, iw_bound_backward,
                         iw_bound_forward)

__all__ = ["VAE", "LossAndGrads", "Terms", "param_views"]

DTYPES = ("float32", "float64")


class LossAndGrads(NamedTuple):
    """What :meth:`VAE.loss_and_grads` returns."""
    loss: float                   # mean over the batch of -ELBO_beta (or -L_S for "iwae"), nats/example
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
        Hidden widths of the encoder. ``()`` gives a linear encoder and decoder
        (the probabilistic-PCA model).
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
        The fixed $\sigma$ of "gaussian" or $b$ of "laplace" (positive; unused by the others).
    c_dim : int
        C, the size of a context vector fed to encoder and decoder (0: none).
    decoder_hidden : sequence of int or None
        Hidden widths of the decoder; None mirrors ``hidden``.
    """

    def __init__(self, x_dim: int = 784, hidden: Sequence[int] = (400,), z_dim: int = 20,
                 likelihood: str = "bernoulli", activation: str = "relu", seed: int = 0,
                 dtype: str = "float32", obs_scale: float = 1.0, c_dim: int = 0,
                 decoder_hidden: Sequence[int] | None = None):
        hidden = _widths(hidden)
        decoder_hidden = hidden[::-1] if decoder_hidden is None else _widths(decoder_hidden)
        for name, v in [("x_dim", x_dim), ("z_dim", z_dim)] + [("hidden", h) for h in hidden + decoder_hidden]:
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not isinstance(c_dim, (int, np.integer)) or isinstance(c_dim, bool) or c_dim < 0:
            raise ValueError(f"c_dim must be an integer >= 0, got {c_dim!r}")
        if activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {activation!r}; choose one of {', '.join(ACTIVATIONS)}")
        if str(dtype) not in DTYPES:
            raise ValueError(f"dtype must be one of {', '.join(DTYPES)}, got {dtype!r}")
        self.x_dim, self.hidden, self.z_dim = int(x_dim), tuple(int(h) for h in hidden), int(z_dim)
        self.decoder_hidden, self.c_dim = tuple(int(h) for h in decoder_hidden), int(c_dim)
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
            bound = 1.0 / np.sqrt(self._fan_in(name))
            p[...] = rng.uniform(-bound, bound, size=p.shape)

    # ------------------------------------------------------------ parameters
    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        D, K, C = self.x_dim, self.z_dim, self.c_dim
        P = self.likelihood.params_per_dim * D
        shapes: dict[str, tuple[int, ...]] = {}

        def layer(name, fan_in, fan_out):
            shapes[name + ".W"], shapes[name + ".b"] = (fan_in, fan_out), (fan_out,)

        widths = (D + C,) + self.hidden
        for i in range(len(self.hidden)):
            layer(f"enc.{i}", widths[i], widths[i + 1])
        layer("enc.mu", widths[-1], K)
        layer("enc.log_var", widths[-1], K)
        widths = (K + C,) + self.decoder_hidden
        for i in range(len(self.decoder_hidden)):
            layer(f"dec.{i}", widths[i], widths[i + 1])
        layer("dec.out", widths[-1], P)
        return shapes

    def _fan_in(self, name: str) -> int:
        """Inputs of the layer that owns parameter ``name`` (sets its init scale)."""
        return self.shapes[name.rsplit(".", 1)[0] + ".W"][0]

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Name -> view into a flat buffer of ``n_params`` entries (params, grads, moments)."""
        return param_views(self.shapes, flat)

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        """Read-only mapping name -> array (views of ``flat``; edit values in place)."""
        return MappingProxyType(self._params)

    def config(self) -> dict:
        """The constructor's arguments: ``type(vae)(**vae.config())`` rebuilds the architecture."""
        return dict(x_dim=self.x_dim, hidden=list(self.hidden), z_dim=self.z_dim,
                    likelihood=self.likelihood_name, activation=self.activation,
                    seed=self.seed, dtype=str(self.dtype), obs_scale=self.obs_scale,
                    c_dim=self.c_dim, decoder_hidden=list(self.decoder_hidden))

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

    def _as_z(self, z) -> np.ndarray:
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim < 2 or z.shape[-1] != self.z_dim:
            raise ValueError(f"z must have shape (..., N, {self.z_dim}), got {z.shape}")
        return z

    def _as_c(self, c, n: int) -> np.ndarray | None:
        if self.c_dim == 0:
            if c is not None:
                raise ValueError("this VAE takes no context c (c_dim=0)")
            return None
        if c is None:
            raise ValueError(f"this conditional VAE needs a context c of shape (N, {self.c_dim})")
        c = np.asarray(c, dtype=self.dtype)
        if c.shape != (n, self.c_dim):
            raise ValueError(f"c must have shape ({n}, {self.c_dim}), got {c.shape}")
        return c

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

    def encode(self, x, c=None) -> tuple[np.ndarray, np.ndarray]:
        """x (N, D) [, c (N, C)] -> mu (N, K), log_var (N, K): the parameters of q(z | x)."""
        x = self._as_x(x)
        return self._posterior(x, self._as_c(c, len(x)))[:2]

    def _posterior(self, x: np.ndarray, c: np.ndarray | None = None):
        """The encoder's heads, log_var clipped to the safe range (see
        :func:`minivae.gaussian.clamp_log_var_forward`): mu, log_var (N, K), cache."""
        mu, raw, enc_cache = self._encode(x, c)                            # (N, K) each
        log_var, c_clamp = gaussian.clamp_log_var_forward(raw)
        return mu, log_var, (enc_cache, c_clamp)

    def _posterior_backward(self, dmu: np.ndarray, dlog_var: np.ndarray, cache, grads: dict) -> None:
        enc_cache, c_clamp = cache
        self._encode_backward(dmu, gaussian.clamp_log_var_backward(dlog_var, c_clamp), enc_cache, grads)

    def _encode(self, x: np.ndarray, c: np.ndarray | None = None):
        xc = x if c is None else np.concatenate([x, c], axis=1)  # (N, D + C)
        h, caches = self._mlp_forward(xc, "enc", len(self.hidden))  # (N, H)
        mu, c_mu = affine_forward(h, self._params["enc.mu.W"], self._params["enc.mu.b"])  # (N, K)
        log_var, c_lv = affine_forward(h, self._params["enc.log_var.W"], self._params["enc.log_var.b"])
        return mu, log_var, (caches, c_mu, c_lv)

    def _encode_backward(self, dmu: np.ndarray, dlog_var: np.ndarray, cache, grads: dict) -> None:
        """Gradients of the encoder's parameters from dmu, dlog_var (N, K); none for the data."""
        caches, c_mu, c_lv = cache
        deep = bool(self.hidden)  # with no hidden layer the heads read the data: no dx needed
        dh = affine_backward(dmu, c_mu, out=(grads["enc.mu.W"], grads["enc.mu.b"]), input_grad=deep)[0]
        dh_lv = affine_backward(dlog_var, c_lv, out=(grads["enc.log_var.W"], grads["enc.log_var.b"]),
                                input_grad=deep)[0]
        if deep:
            self._mlp_backward(dh + dh_lv, caches, "enc", grads, input_grad=False)

    def decode(self, z, c=None) -> np.ndarray | tuple[np.ndarray, np.ndarray]:
        """z (..., N, K) [, c (N, C)] -> the likelihood's parameters, (..., N, D): logits
        (bernoulli, categorical), mean (gaussian), location (laplace), or a
        (mean, log_var) pair (gaussian_learned; log_var in the safe range)."""
        z = self._as_z(z)
        out = self._decode(z, self._as_c(c, z.shape[-2]))[0]
        if self.likelihood.params_per_dim == 1:
            return out
        mean, raw = np.split(out, 2, axis=-1)
        return mean, gaussian.clamp_log_var_forward(raw)[0]

    def decode_mean(self, z, c=None) -> np.ndarray:
        """z (..., N, K) [, c (N, C)] -> E[x | z] (..., N, D): pixel probabilities for
        bernoulli, the mean otherwise."""
        z = self._as_z(z)
        return self.likelihood.mean(self._decode(z, self._as_c(c, z.shape[-2]))[0])

    def log_px_z(self, x, z, c=None) -> np.ndarray:
        """log p(x | z) [, context c]: x (N, D), z (..., N, K) -> (..., N), in nats."""
        x = self._as_x(x)
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim < 2 or z.shape[-2:] != (len(x), self.z_dim):
            raise ValueError(f"z must have shape (..., {len(x)}, {self.z_dim}), got {z.shape}")
        return self.likelihood.forward(x, self._decode(z, self._as_c(c, len(x)))[0])[0]

    def _decode(self, z: np.ndarray, c: np.ndarray | None = None):
        lead = z.shape[:-1]
        if c is not None:  # the same context for every sample of an example
            z = np.concatenate([z, np.broadcast_to(c, lead + c.shape[-1:])], axis=-1)  # (..., N, K + C)
        h, caches = self._mlp_forward(z.reshape(-1, z.shape[-1]), "dec", len(self.decoder_hidden))
        out, c_out = affine_forward(h, self._params["dec.out.W"], self._params["dec.out.b"])  # (S*N, P)
        return out.reshape(lead + (out.shape[-1],)), (caches, c_out, lead)

    def _decode_backward(self, dout: np.ndarray, cache, grads: dict) -> np.ndarray:
        """dout (..., N, P) -> dz (..., N, K), filling the decoder's gradients."""
        caches, c_out, lead = cache
        dh = affine_backward(dout.reshape(-1, dout.shape[-1]), c_out,
                             out=(grads["dec.out.W"], grads["dec.out.b"]))[0]  # (S*N, H)
        dz = self._mlp_backward(dh, caches, "dec", grads)                  # (S*N, K + C)
        return dz[:, :self.z_dim].reshape(lead + (self.z_dim,))

    # ------------------------------------------------------------ the objective
    def _forward(self, x: np.ndarray, eps: np.ndarray, c: np.ndarray | None = None):
        mu, log_var, enc_cache = self._posterior(x, c)                      # (N, K) each
        z, c_rep = gaussian.reparameterize_forward(mu, log_var, eps)        # (S, N, K)
        out, dec_cache = self._decode(z, c)                                 # (S, N, P)
        log_px_z, c_lik = self.likelihood.forward(x, out)                   # (S, N)
        kl, c_kl = gaussian.kl_std_normal_forward(mu, log_var)              # (N,)
        terms = Terms(log_px_z, kl, mu, log_var, z)
        return terms, (enc_cache, c_rep, dec_cache, c_lik, c_kl)

    def terms(self, x, eps, c=None) -> Terms:
        """Per-example ELBO pieces for a batch, no gradients. x (N, D), eps (N, K) or (S, N, K)."""
        x = self._as_x(x)
        return self._forward(x, self._as_eps(eps, len(x)), self._as_c(c, len(x)))[0]

    def elbo(self, x, eps, beta: float = 1.0, c=None) -> np.ndarray:
        r"""Per-example $\mathrm{ELBO}_\beta$, (N,), in nats (averaged over the S samples of eps)."""
        t = self.terms(x, eps, c)
        return elbo_kl_form(t.log_px_z, t.kl, beta)

    def loss_and_grads(self, x, eps, beta: float = 1.0, grads: dict[str, np.ndarray] | None = None,
                       c=None, objective: str = "elbo", free_bits: float = 0.0) -> LossAndGrads:
        r"""Mean negative ELBO (or IWAE bound) over the batch and its gradient to every parameter.

        x (N, D); eps (N, K) or (S, N, K), standard normal noise passed in (the
        ELBO then averages over the S samples); beta weighs the KL; c (N, C) is
        the context of a conditional VAE. ``objective="iwae"`` minimizes
        $-\mathcal L_S$ instead (S = eps.shape[0]; beta and free bits do not apply).
        ``free_bits`` = $\lambda$ > 0 replaces the KL term by
        $\sum_k \max(\lambda, \overline{\mathrm{KL}}_k)$ (see :func:`minivae.objectives.free_bits_forward`).
        ``grads``, if given, is a dict of preallocated arrays (e.g. ``vae.views(buffer)``)
        that receives the gradients; otherwise fresh arrays are returned.
        """
        beta, free_bits = float(beta), float(free_bits)  # NumPy scalars would promote float32 arrays
        if objective not in ("elbo", "iwae"):
            raise ValueError(f"objective must be 'elbo' or 'iwae', got {objective!r}")
        if objective == "iwae" and (beta != 1.0 or free_bits):
            raise ValueError("the iwae objective takes neither beta != 1 nor free bits")
        x = self._as_x(x)
        eps = self._as_eps(eps, len(x))
        c = self._as_c(c, len(x))
        S, N = eps.shape[:2]
        if grads is None:
            grads = self.views(np.empty(self.n_params, dtype=self.dtype))
        t, (enc_cache, c_rep, dec_cache, c_lik, c_kl) = self._forward(x, eps, c)
        recon = -float(t.log_px_z.mean())
        kl = float(t.kl.mean())
        if objective == "iwae":
            loss, dlog_px_z, dz, dmu, dlog_var = self._iwae_terms(t, c_rep)
        else:
            dlog_px_z = np.full((S, N), -1.0 / (S * N), dtype=self.dtype)  # dloss/dlog p(x|z_s)
            loss, dmu, dlog_var = self._kl_term(t, c_kl, beta, free_bits)
            loss += recon
            dz = 0.0
        ### BEGIN SOLUTION task_elbo
        dout = self.likelihood.backward(dlog_px_z, c_lik)                    # (S, N, P)
        dz = dz + self._decode_backward(dout, dec_cache, grads)             # (S, N, K)
        dmu_rep, dlv_rep, _ = gaussian.reparameterize_backward(dz, c_rep)
        self._posterior_backward(dmu + dmu_rep, dlog_var + dlv_rep, enc_cache, grads)
        ### END SOLUTION
        return LossAndGrads(loss, grads, recon, kl)

    def _kl_term(self, t: Terms, c_kl, beta: float, free_bits: float):
        """beta * (KL or its free-bits form), and its gradients to mu, log_var (N, K)."""
        N = len(t.kl)
        if not free_bits:
            dmu, dlog_var = gaussian.kl_std_normal_backward(np.full(N, beta / N, dtype=self.dtype), c_kl)
            return beta * float(t.kl.mean()), dmu, dlog_var
        kl_dims, c_dims = gaussian.kl_std_normal_forward(t.mu[..., None], t.log_var[..., None])  # (N, K)
        value, c_fb = free_bits_forward(kl_dims, free_bits)
        dmu, dlog_var = gaussian.kl_std_normal_backward(free_bits_backward(beta, c_fb), c_dims)  # (N, K, 1)
        return beta * value, dmu[..., 0], dlog_var[..., 0]

    def _iwae_terms(self, t: Terms, c_rep):
        r"""$-\frac1N\sum_n \mathcal L_S(x_n)$ and its gradients: to $\log p(x\mid z_s)$, and
        to z, mu, log_var through $\log p(z_s) - \log q(z_s \mid x)$ (the decoder's path to z
        is added by the caller)."""
        S, N = t.log_px_z.shape
        zeros = np.zeros_like(t.log_var)
        log_pz, c_pz = gaussian.log_density_forward(t.z, zeros, zeros)          # (S, N)
        log_qz, c_qz = gaussian.log_density_forward(t.z, t.mu, t.log_var)      # (S, N)
        bound, c_iw = iw_bound_forward(t.log_px_z + log_pz - log_qz)          # (N,)
        dlog_w = iw_bound_backward(np.full(N, -1.0 / N, dtype=self.dtype), c_iw)  # (S, N)
        dz_p = gaussian.log_density_backward(dlog_w, c_pz)[0]
        dz_q, dmu_q, dlv_q = gaussian.log_density_backward(-dlog_w, c_qz)       # (S, N, K) each
        return -float(bound.mean()), dlog_w, dz_p + dz_q, dmu_q.sum(0), dlv_q.sum(0)


def param_views(shapes: Mapping[str, tuple[int, ...]], flat: np.ndarray) -> dict[str, np.ndarray]:
    """Name -> view of ``flat`` with that shape, the arrays laid end to end in ``shapes``' order."""
    out, i = {}, 0
    for name, shape in shapes.items():
        n = int(np.prod(shape))
        out[name] = flat[i:i + n].reshape(shape)
        i += n
    return out


def _widths(hidden) -> tuple:
    return (hidden,) if isinstance(hidden, (int, np.integer)) else tuple(hidden)
