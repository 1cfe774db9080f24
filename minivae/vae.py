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
from .likelihoods import get_likelihood
from .nn import ACTIVATIONS, ActCache, AffineCache, affine_backward, affine_forward
from .objectives import OBJECTIVES, TermGrads, Terms, elbo_kl_form

__all__ = ["VAE", "LossAndGrads", "Terms", "DTYPES", "param_views"]

#: the dtypes a model computes in: float64 for checks, float32 (the default) for training
DTYPES = ("float32", "float64")


class LossAndGrads(NamedTuple):
    """What :meth:`VAE.loss_and_grads` returns."""
    loss: float                   # mean over the batch of -ELBO_beta (or -L_S for "iwae"), nats/example
    grads: dict[str, np.ndarray]  # dloss/dparam, same keys and shapes as VAE.params
    recon: float                  # mean over the batch of -E_q[log p(x|z)] (distortion)
    kl: float                     # mean over the batch of KL(q(z|x) || p(z)) (rate)


class LayerCache(NamedTuple):
    """One hidden layer: the affine map, then the activation."""
    affine: AffineCache
    act: ActCache


class EncoderCache(NamedTuple):
    hidden: tuple[LayerCache, ...]  # the MLP's hidden layers, first to last
    mu: AffineCache                 # the mean head
    log_var: AffineCache            # the log-variance head (before the clip)


class PosteriorCache(NamedTuple):
    encoder: object                 # the encoder network's cache (EncoderCache for the MLP)
    clamp: gaussian.ClampCache      # the log-variance clip


class DecoderCache(NamedTuple):
    hidden: tuple[LayerCache, ...]
    out: AffineCache                # the output layer: the likelihood's parameters
    lead: tuple[int, ...]           # z's leading shape, (S, N)


class ForwardCache(NamedTuple):
    """Everything the model's backward pass needs, in the order the forward pass made it."""
    posterior: PosteriorCache
    reparam: gaussian.ReparamCache
    decoder: object                 # DecoderCache for the MLP
    likelihood: object              # the likelihood's cache
    kl: gaussian.KLCache


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
    def _put(self, grads: dict, layer: str, dW: np.ndarray, db: np.ndarray) -> None:
        """Store a layer's gradients in ``grads``: copied into the arrays it holds (views of a
        caller's flat buffer), or else kept as they are."""
        for name, g in ((layer + ".W", dW), (layer + ".b", db)):
            if name in grads:
                grads[name][...] = g
            else:
                grads[name] = g

    def _mlp_forward(self, h: np.ndarray, prefix: str, n_layers: int):
        """h (M, D_in) through the hidden layers ``prefix.0 .. prefix.{n-1}`` -> (M, H), caches."""
        caches = []
        for i in range(n_layers):
            a, affine = affine_forward(h, self._params[f"{prefix}.{i}.W"], self._params[f"{prefix}.{i}.b"])
            h, act = self._act_forward(a)
            caches.append(LayerCache(affine, act))
        return h, tuple(caches)

    def _mlp_backward(self, dh: np.ndarray, caches: tuple[LayerCache, ...], prefix: str, grads: dict,
                      reads_data: bool = False) -> np.ndarray | None:
        """dh (M, H) back through the hidden layers -> the input's gradient (None when the
        first layer ``reads_data``: nobody needs the data's gradient)."""
        for i in reversed(range(len(caches))):
            affine = caches[i].affine
            if i == 0 and reads_data:
                affine = _skip_input_gradient(affine)
            dh, dW, db = affine_backward(self._act_backward(dh, caches[i].act), affine)
            self._put(grads, f"{prefix}.{i}", dW, db)
        return None if reads_data and caches else dh

    def _encoder_forward(self, x: np.ndarray, c: np.ndarray | None):
        """x (N, D) [, c (N, C)] -> mu (N, K), the raw log-variance (N, K), EncoderCache."""
        xc = x if c is None else np.concatenate([x, c], axis=1)            # (N, D + C)
        h, hidden = self._mlp_forward(xc, "enc", len(self.hidden))         # (N, H)
        heads = [affine_forward(h, self._params[f"enc.{k}.W"], self._params[f"enc.{k}.b"]) for k in ("mu", "log_var")]
        (mu, mu_cache), (raw, log_var_cache) = heads                       # (N, K) each
        return mu, raw, EncoderCache(hidden, mu_cache, log_var_cache)

    def _encoder_backward(self, dmu: np.ndarray, draw: np.ndarray, cache: EncoderCache, grads: dict) -> None:
        """dmu, draw (N, K) -> the encoder's gradients, in ``grads`` (none for the data)."""
        deep = bool(self.hidden)  # with no hidden layer the heads read the data
        head = (lambda affine: affine) if deep else _skip_input_gradient
        dh_mu, dW, db = affine_backward(dmu, head(cache.mu))                    # (N, H)
        self._put(grads, "enc.mu", dW, db)
        dh_log_var, dW, db = affine_backward(draw, head(cache.log_var))          # (N, H)
        self._put(grads, "enc.log_var", dW, db)
        if deep:  # both heads read h
            self._mlp_backward(dh_mu + dh_log_var, cache.hidden, "enc", grads, reads_data=True)

    def _posterior_forward(self, x: np.ndarray, c: np.ndarray | None = None):
        """The encoder, its log-variance clipped to the safe range (see
        :func:`minivae.gaussian.clamp_log_var_forward`): mu, log_var (N, K), PosteriorCache."""
        mu, raw, encoder = self._encoder_forward(x, c)                     # (N, K) each
        log_var, clamp = gaussian.clamp_log_var_forward(raw)
        return mu, log_var, PosteriorCache(encoder, clamp)

    def _posterior_backward(self, dmu: np.ndarray, dlog_var: np.ndarray, cache: PosteriorCache,
                            grads: dict) -> None:
        """dmu, dlog_var (N, K) -> the encoder's gradients, in ``grads``."""
        self._encoder_backward(dmu, gaussian.clamp_log_var_backward(dlog_var, cache.clamp), cache.encoder, grads)

    def _decoder_forward(self, z: np.ndarray, c: np.ndarray | None = None):
        """z (..., N, K) [, c (N, C)] -> the likelihood's parameters (..., N, P), DecoderCache."""
        lead = z.shape[:-1]
        if c is not None:  # the same context for every sample of an example
            z = np.concatenate([z, np.broadcast_to(c, lead + c.shape[-1:])], axis=-1)  # (..., N, K + C)
        h, hidden = self._mlp_forward(z.reshape(-1, z.shape[-1]), "dec", len(self.decoder_hidden))
        out, out_cache = affine_forward(h, self._params["dec.out.W"], self._params["dec.out.b"])  # (S*N, P)
        return out.reshape(lead + (out.shape[-1],)), DecoderCache(hidden, out_cache, lead)

    def _decoder_backward(self, dout: np.ndarray, cache: DecoderCache, grads: dict) -> np.ndarray:
        """dout (..., N, P) -> dz (..., N, K), filling the decoder's gradients."""
        dh, dW, db = affine_backward(dout.reshape(-1, dout.shape[-1]), cache.out)  # (S*N, H)
        self._put(grads, "dec.out", dW, db)
        dz = self._mlp_backward(dh, cache.hidden, "dec", grads)                    # (S*N, K + C)
        return dz[:, :self.z_dim].reshape(cache.lead + (self.z_dim,))

    # ------------------------------------------------------------ public encode / decode
    def encode(self, x, c=None) -> tuple[np.ndarray, np.ndarray]:
        """x (N, D) [, c (N, C)] -> mu (N, K), log_var (N, K): the parameters of q(z | x)."""
        x = self._as_x(x)
        return self._posterior_forward(x, self._as_c(c, len(x)))[:2]

    def decode(self, z, c=None) -> np.ndarray | tuple[np.ndarray, ...]:
        """z (..., N, K) [, c (N, C)] -> the likelihood's parameters, (..., N, D): logits
        (bernoulli, categorical), mean (gaussian), location (laplace), or a
        (mean, log_var) pair (gaussian_learned; log_var in the safe range)."""
        z = self._as_z(z)
        return self.likelihood.params(self._decoder_forward(z, self._as_c(c, z.shape[-2]))[0])

    def decode_mean(self, z, c=None) -> np.ndarray:
        """z (..., N, K) [, c (N, C)] -> E[x | z] (..., N, D): pixel probabilities for
        bernoulli, the mean otherwise."""
        z = self._as_z(z)
        return self.likelihood.mean(self._decoder_forward(z, self._as_c(c, z.shape[-2]))[0])

    def log_px_z(self, x, z, c=None) -> np.ndarray:
        """log p(x | z) [, context c]: x (N, D), z (..., N, K) -> (..., N), in nats."""
        x = self._as_x(x)
        z = np.asarray(z, dtype=self.dtype)
        if z.ndim < 2 or z.shape[-2:] != (len(x), self.z_dim):
            raise ValueError(f"z must have shape (..., {len(x)}, {self.z_dim}), got {z.shape}")
        return self.likelihood.forward(x, self._decoder_forward(z, self._as_c(c, len(x)))[0])[0]

    # ------------------------------------------------------------ the model, forward and backward
    def _forward(self, x: np.ndarray, eps: np.ndarray, c: np.ndarray | None = None):
        """x (N, D), eps (S, N, K) [, c (N, C)] -> the ELBO's pieces (Terms), ForwardCache."""
        mu, log_var, posterior = self._posterior_forward(x, c)            # (N, K) each
        z, reparam = gaussian.reparameterize_forward(mu, log_var, eps)     # (S, N, K)
        out, decoder = self._decoder_forward(z, c)                         # (S, N, P)
        log_px_z, likelihood = self.likelihood.forward(x, out)             # (S, N)
        kl, kl_cache = gaussian.kl_std_normal_forward(mu, log_var)          # (N,)
        return Terms(log_px_z, kl, mu, log_var, z), ForwardCache(posterior, reparam, decoder, likelihood, kl_cache)

    def _backward(self, dterms: TermGrads, cache: ForwardCache, grads: dict) -> None:
        r"""The gradient of a loss to every parameter, from its gradients to the ELBO's pieces.

        ``dterms`` holds $\partial L / \partial \log p(x \mid z_s)$ (S, N) and the direct
        gradients to z (S, N, K), mu and log_var (N, K) that the objective's other terms
        contribute (the KL's, or those of $\log p(z) - \log q(z \mid x)$); ``cache`` is
        :meth:`_forward`'s. Fills ``grads`` (name -> array of the parameter's shape).
        Checked end to end against finite differences of the loss.
        """
        ### BEGIN SOLUTION task_elbo
        # back through the likelihood and the decoder to z, then through z = mu + sigma * eps
        # to mu and log_var, where the objective's own gradients join, then through the encoder
        dout = self.likelihood.backward(dterms.log_px_z, cache.likelihood)    # (S, N, P)
        dz = dterms.z + self._decoder_backward(dout, cache.decoder, grads)    # (S, N, K)
        dmu, dlog_var, _ = gaussian.reparameterize_backward(dz, cache.reparam)  # (N, K) each
        self._posterior_backward(dterms.mu + dmu, dterms.log_var + dlog_var, cache.posterior, grads)
        ### END SOLUTION

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
        the context of a conditional VAE. ``objective`` is a name of
        :data:`minivae.objectives.OBJECTIVES`: "elbo", or "iwae", which minimizes
        $-\mathcal L_S$ instead (S = eps.shape[0]; beta and free bits do not apply).
        ``free_bits`` = $\lambda$ > 0 replaces the KL term by
        $\sum_k \max(\lambda, \overline{\mathrm{KL}}_k)$ (see :func:`minivae.objectives.free_bits_forward`).
        ``grads``, if given, is a dict of preallocated arrays (e.g. ``vae.views(buffer)``)
        that receives the gradients; otherwise the backward pass's own arrays are returned,
        in the parameters' order.
        """
        beta, free_bits = float(beta), float(free_bits)  # NumPy scalars would promote float32 arrays
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; choose one of {', '.join(OBJECTIVES)}")
        if not OBJECTIVES[objective].takes_beta and (beta != 1.0 or free_bits):
            raise ValueError(f"the {objective} objective takes neither beta != 1 nor free bits")
        x = self._as_x(x)
        eps = self._as_eps(eps, len(x))
        c = self._as_c(c, len(x))
        fresh = grads is None
        grads = {} if fresh else grads
        terms, cache = self._forward(x, eps, c)
        loss, dterms = OBJECTIVES[objective].loss(terms, cache.kl, beta, free_bits)
        self._backward(dterms, cache, grads)
        if fresh:
            grads = {name: grads[name] for name in self.shapes}
        return LossAndGrads(loss, grads, -float(terms.log_px_z.mean()), float(terms.kl.mean()))


def _skip_input_gradient(cache: AffineCache) -> AffineCache:
    """The cache of a layer that reads data, for :func:`minivae.nn.affine_backward`: its W
    emptied to shape (0, H), so the input's gradient, which nobody needs, is an empty
    product (N, 0) instead of a costly one. dW and db come out unchanged."""
    return cache._replace(W=cache.W[:0])


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
