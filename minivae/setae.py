r"""A tiny set autoencoder with an NVIB latent: how many mixture components does a set need?

The data are sets of $n$ points in the plane drawn around $k \in \{1, \ldots, 5\}$ cluster
centres (:func:`make_sets`). The model (every op from :mod:`minivae.nvib` and
:mod:`minivae.nn`, every gradient by hand):

    x_j (n, 2) ─features e_j = (x_j, |x_j|²/2, r_j)─▶ self-attention ─▶ tanh layer ─▶ mu_j, log σ²_j, log α_j
        ─▶ NVIB: mixture of n + 1 components (prior included), sampled in training
        ─▶ decoder: x̂_j = denoising attention of the noisy query u_j = x_j + σ_u ξ_j

* **Encoder.** One layer of scaled dot-product self-attention over the set, a tanh
  layer, and affine heads, all per element with shared weights (so the encoder
  is permutation-equivariant). Two input features make a small attention layer
  enough. $\tfrac12\lVert x_j\rVert^2$ lets a dot product express a distance
  ($x_j \cdot x_k - \tfrac12\lVert x_k\rVert^2 = -\tfrac12\lVert x_j - x_k\rVert^2 + \tfrac12\lVert x_j\rVert^2$, the same
  norm bias denoising attention has). $r_j \sim \mathrm U(0, 1)$ is a random
  tie-breaking code, like a transformer's position code. Without it the points of
  one cluster are interchangeable, and a permutation-equivariant encoder must give
  them all the same pseudo-count. With it, the encoder can keep one point per
  cluster (for example the one with the largest $r_j$ among its neighbours) and
  drop the rest.
* **Latent.** The latent dimension equals the data's, $K = 2$: the NVIB mixture
  lives in the plane, and a figure can draw it.
* **Decoder.** Each point is reconstructed from a corrupted copy of itself,
  $u_j = x_j + \sigma_u\xi_j$, by denoising attention under the latent mixture with query
  variance $\sigma_u^2$, the corruption's own variance. The output is then the Bayes
  posterior mean of the point given the query and the mixture. The decoder has no
  parameters. The corruption ($\sigma_u = 0.3$, against a cluster spread of 0.08) is
  too large to identify a single point, so the mixture must say where the clusters
  are, and one component per cluster is enough.

The loss per set is the negative of a $\beta$-ELBO with a Gaussian likelihood of fixed
scale $\tau$, $\sum_j \lVert\hat x_j - x_j\rVert^2/(2\tau^2) + \beta(\mathrm{KL}_{\mathcal N} + \mathrm{KL}_{\mathrm{Dir}})$, with the
prior $\mathrm{Dir}(b, \ldots, b)$, $b = \alpha_p/(n + 1)$ (a Dirichlet process of concentration $\alpha_p$,
truncated to $n + 1$ atoms). Splitting a cluster's weight over several components
leaves the reconstruction unchanged (a sum of Gammas of one scale is a Gamma), so
only the KL decides: its $\sum_i(\tfrac12 - b)\log\alpha_i$ growth charges every extra
component. Taught in lesson 13.
"""
from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass
from types import MappingProxyType
from typing import Mapping, NamedTuple

import numpy as np

from . import gaussian, nvib
from .nn import affine_backward, affine_forward, tanh_backward, tanh_forward
from .optim import AdamState, adam_step
from .vae import param_views

__all__ = ["SetData", "make_sets", "SetAEConfig", "SetAE", "SetNoise", "SetLoss", "SetEval",
           "draw_set_noise", "train_setae", "evaluate_setae", "oracle_recon_error"]

LOG_ALPHA_LIMIT = 10.0  # log pseudo-counts are clipped to [-10, 10]: alpha in [4.5e-5, 2.2e4]


class SetData(NamedTuple):
    x: np.ndarray        # (S, n, 2)  the points
    k: np.ndarray        # (S,)       number of clusters of each set
    labels: np.ndarray   # (S, n)     cluster of each point
    centers: np.ndarray  # (S, max_k, 2) cluster centres, NaN past k


def make_sets(rng: np.random.Generator, n_sets: int, n_points: int = 12, max_clusters: int = 5,
              spread: float = 0.08, box: float = 1.5, min_sep: float = 0.9) -> SetData:
    r"""``n_sets`` sets of ``n_points`` points in the plane, each from $k \sim \mathrm U\{1..\text{max\_clusters}\}$ clusters.

    Centres are uniform in $[-\text{box}, \text{box}]^2$, at least ``min_sep`` apart (redrawn until
    they are); every cluster gets at least one point, the rest go to uniformly
    random clusters; a point is its centre plus $\mathcal N(0, \text{spread}^2 I)$.
    """
    if not 1 <= max_clusters <= n_points:
        raise ValueError(f"need 1 <= max_clusters <= n_points, got {max_clusters}, {n_points}")
    k = rng.integers(1, max_clusters + 1, size=n_sets)                     # (S,)
    centers = np.full((n_sets, max_clusters, 2), np.nan)
    labels = np.empty((n_sets, n_points), dtype=np.int64)
    for s in range(n_sets):
        while True:
            c = rng.uniform(-box, box, size=(k[s], 2))
            dist = np.linalg.norm(c[:, None] - c[None], axis=-1) + np.eye(k[s]) * min_sep
            if dist.min() >= min_sep:
                break
        centers[s, :k[s]] = c
        lab = np.concatenate([np.arange(k[s]), rng.integers(0, k[s], size=n_points - k[s])])
        labels[s] = rng.permutation(lab)
    x = np.take_along_axis(centers, labels[..., None], axis=1) + spread * rng.standard_normal((n_sets, n_points, 2))
    return SetData(x, k, labels, centers)


@dataclass(frozen=True)
class SetAEConfig:
    """Everything that defines a run: data, model, objective, optimizer."""
    n_points: int = 12        # n, points per set
    max_clusters: int = 5
    spread: float = 0.08      # cluster standard deviation
    query_std: float = 0.3    # sigma_u: corruption of the decoder's queries
    recon_scale: float = 0.15  # tau: scale of the Gaussian reconstruction likelihood
    att_dim: int = 8          # A, width of queries, keys and values
    hidden: int = 32          # H, the tanh layer
    beta: float = 1.0
    alpha0: float = 1.0       # pseudo-count of the prior component
    prior_alpha: float = 0.5  # alpha_p: total pseudo-count of the prior Dirichlet
    kernel_init: bool = True  # start the attention as a neighbourhood attention (see SetAE)
    kernel_width: float = 0.3  # h of that neighbourhood
    priority_scale: float = 10.0  # gamma: how sharply it prefers large codes
    lr: float = 1e-2
    steps: int = 20_000
    batch: int = 64
    pool: int = 8192          # training sets, drawn once
    seed: int = 0

    def quick(self) -> "SetAEConfig":
        """The same run, small: a few seconds."""
        return dataclasses.replace(self, steps=min(self.steps, 1500), pool=min(self.pool, 2048))


class SetNoise(NamedTuple):
    """All the randomness of one pass."""
    r: np.ndarray               # (N, n)  tie-breaking codes, U(0, 1)
    xi: np.ndarray              # (N, n, 2) query corruption, N(0, I)
    latent: nvib.NVIBNoise | None  # None: evaluation (the mean mixture)


def draw_set_noise(rng: np.random.Generator, N: int, n: int, train: bool = True) -> SetNoise:
    """Fresh :class:`SetNoise` for N sets of n points (``train=False``: no latent noise)."""
    r = rng.uniform(size=(N, n))
    xi = rng.standard_normal((N, n, 2))
    return SetNoise(r, xi, nvib.draw_noise(rng, N, n, 2) if train else None)


class SetLoss(NamedTuple):
    loss: float                   # mean over sets of recon + beta (kl_gauss + kl_dir)
    grads: dict[str, np.ndarray]  # same keys as SetAE.params
    recon: float                  # mean over sets of sum_j |x_hat_j - x_j|^2 / (2 tau^2)
    sq_error: float               # mean over points of |x_hat_j - x_j|^2
    kl_gauss: float
    kl_dir: float


class Forward(NamedTuple):
    """What one pass computes (arrays for the figures and the measurements)."""
    x_hat: np.ndarray      # (N, n, 2)
    mu: np.ndarray         # (N, n, 2)
    log_var: np.ndarray    # (N, n, 2)
    log_alpha: np.ndarray  # (N, n)
    z: np.ndarray          # (N, n+1, 2) mixture means (index 0: prior)
    var: np.ndarray        # (N, n+1, 2)
    pi: np.ndarray         # (N, n+1)
    kl_gauss: np.ndarray   # (N,)
    kl_dir: np.ndarray     # (N,)
    caches: tuple


class SetAE:
    """The set autoencoder; parameters in one flat float buffer, named views in ``params``."""

    def __init__(self, cfg: SetAEConfig = SetAEConfig(), dtype="float64"):
        self.cfg = cfg
        self.dtype = np.dtype(dtype)
        F, A, H = 4, cfg.att_dim, cfg.hidden         # features per point: x (2), |x|^2/2, r
        G = F + A                                   # features after attention
        self.shapes = {"att.q.W": (F, A), "att.q.b": (A,), "att.k.W": (F, A),
                       "att.v.W": (F, A), "att.v.b": (A,), "enc.W": (G, H), "enc.b": (H,),
                       "head.W": (G + H, 5), "head.b": (5,)}   # 5 = mu (2), log_var (2), log_alpha
        self.n_params = sum(int(np.prod(s)) for s in self.shapes.values())
        self.flat = np.empty(self.n_params, self.dtype)
        self._params = self.views(self.flat)
        rng = np.random.default_rng(cfg.seed)
        for name, p in self._params.items():
            fan_in = self.shapes[name][0] if name.endswith(".W") else self.shapes[name.replace(".b", ".W")][0]
            p[...] = rng.uniform(-1, 1, p.shape) / np.sqrt(fan_in)
        if cfg.kernel_init:
            self._init_neighbourhood_attention(cfg.kernel_width, cfg.priority_scale)
        head_b = self._params["head.b"]
        head_b[2:4] = -3.0     # start with small variances ...
        head_b[4] = 0.0        # ... and pseudo-counts of 1

    def _init_neighbourhood_attention(self, width: float, priority: float) -> None:
        r"""Start the attention as a soft "highest code among my neighbours" detector.

        With $q_j = s\,(x_j, 1, 1)$ and $k_k = s\,(x_k, -\tfrac12\lVert x_k\rVert^2, c\, r_k)$ in the first four
        coordinates (the rest start at 0), $q_j\cdot k_k/\sqrt A = -\lVert x_j - x_k\rVert^2/(2h^2) + \gamma r_k$
        + (a term constant in $k$), for $s^2 = \sqrt A/h^2$ and $c = \gamma h^2$: a Gaussian neighbourhood
        of width $h$, tilted towards large codes $r_k$. The value's first coordinate is $r_k$,
        so the output $y_{j,0}$ is about the largest code near $x_j$.
        """
        p, A = self._params, self.cfg.att_dim
        if A < 4:
            raise ValueError(f"the neighbourhood initialization needs att_dim >= 4, got {A}")
        s = np.sqrt(np.sqrt(A)) / width
        for name in ("att.q.W", "att.q.b", "att.k.W", "att.v.W", "att.v.b"):
            p[name][...] = 0.0
        p["att.q.W"][0, 0] = p["att.q.W"][1, 1] = s      # features: x (0, 1), |x|^2/2 (2), r (3)
        p["att.q.b"][2] = p["att.q.b"][3] = s
        p["att.k.W"][0, 0] = p["att.k.W"][1, 1] = s
        p["att.k.W"][2, 2] = -s
        p["att.k.W"][3, 3] = s * priority * width ** 2
        p["att.v.W"][3, 0] = 1.0

    def views(self, flat: np.ndarray) -> dict[str, np.ndarray]:
        """Name -> view into a flat buffer of ``n_params`` entries."""
        return param_views(self.shapes, flat)

    @property
    def params(self) -> Mapping[str, np.ndarray]:
        return MappingProxyType(self._params)

    # ------------------------------------------------------------ forward
    def forward(self, x: np.ndarray, noise: SetNoise) -> Forward:
        """One pass. x (N, n, 2); training mode when ``noise.latent`` is given, else evaluation."""
        x = np.asarray(x, self.dtype)
        if x.ndim != 3 or x.shape[-1] != 2:
            raise ValueError(f"x must be (N, n, 2) sets of points in the plane, got {x.shape}")
        if noise.r.shape != x.shape[:2] or noise.xi.shape != x.shape:
            raise ValueError(f"noise r must be {x.shape[:2]} and xi {x.shape}, got {noise.r.shape}, {noise.xi.shape}")
        p, cfg = self._params, self.cfg
        N, n, _ = x.shape
        e = np.concatenate([x, 0.5 * np.sum(x * x, axis=-1, keepdims=True), noise.r[..., None]], axis=-1)  # (N, n, 4)
        e2 = e.reshape(N * n, 4)                                               # (N n, 4)
        q, c_q = affine_forward(e2, p["att.q.W"], p["att.q.b"])
        k, c_k = affine_forward(e2, p["att.k.W"], np.zeros(cfg.att_dim))  # no key bias: softmax ignores q.b_k
        v, c_v = affine_forward(e2, p["att.v.W"], p["att.v.b"])
        A = cfg.att_dim
        y, c_att = nvib.attention_forward(q.reshape(N, n, A), k.reshape(N, n, A), v.reshape(N, n, A))  # (N, n, A)
        g = np.concatenate([e2, y.reshape(N * n, A)], axis=1)                  # (N n, 4 + A)
        pre, c_enc = affine_forward(g, p["enc.W"], p["enc.b"])
        h, c_tanh = tanh_forward(pre)                                          # (N n, H)
        f = np.concatenate([g, h], axis=1)                                     # (N n, 4 + A + H)
        out, c_head = affine_forward(f, p["head.W"], p["head.b"])              # (N n, 5)
        out = out.reshape(N, n, 5)
        mu = out[..., 0:2]                                                     # (N, n, 2)
        log_var, c_lv = gaussian.clamp_log_var_forward(out[..., 2:4])          # (N, n, 2)
        la_raw = out[..., 4]                                                   # (N, n)
        la_inside = np.abs(la_raw) <= LOG_ALPHA_LIMIT
        log_alpha = np.clip(la_raw, -LOG_ALPHA_LIMIT, LOG_ALPHA_LIMIT)

        (z, var, pi), c_nvib = nvib.nvib_forward(mu, log_var, log_alpha, noise.latent, cfg.alpha0)
        qv = cfg.query_std ** 2
        u = x + cfg.query_std * noise.xi                                       # (N, n, 2) noisy queries
        x_hat, c_dec = nvib.denoising_attention_forward(u, z, var, pi, qv)     # (N, n, 2)

        kl_g, c_klg = nvib.kl_gaussian_weighted_forward(mu, log_var, log_alpha, cfg.alpha0)
        alpha_all = nvib.dp_posterior(mu, log_var, log_alpha, cfg.alpha0).alpha              # (N, n+1)
        kl_d, c_kld = nvib.kl_dirichlet_forward(alpha_all, cfg.prior_alpha / (n + 1))
        caches = (c_q, c_k, c_v, c_att, c_enc, c_tanh, c_head, c_lv, la_inside, c_nvib, c_dec, c_klg,
                  c_kld, alpha_all, e2.shape)
        return Forward(x_hat, mu, log_var, log_alpha, z, var, pi, kl_g, kl_d, caches)

    def loss_and_grads(self, x: np.ndarray, noise: SetNoise) -> SetLoss:
        """Mean over the N sets of the loss, and its gradient for every parameter."""
        x = np.asarray(x, self.dtype)
        fw = self.forward(x, noise)
        cfg, p = self.cfg, self._params
        N, n, _ = x.shape
        err = fw.x_hat - x                                                     # (N, n, 2)
        recon = np.sum(err * err, axis=(1, 2)) / (2 * cfg.recon_scale ** 2)   # (N,)
        loss = float(np.mean(recon + cfg.beta * (fw.kl_gauss + fw.kl_dir)))

        (c_q, c_k, c_v, c_att, c_enc, c_tanh, c_head, c_lv, la_inside, c_nvib, c_dec, c_klg,
         c_kld, alpha_all, e2_shape) = fw.caches
        grads = {}
        dx_hat = err / (N * cfg.recon_scale ** 2)                              # (N, n, 2)
        _, dz, dvar, dpi, _ = nvib.denoising_attention_backward(dx_hat, c_dec)
        dmu, dlog_var, dlog_alpha = nvib.nvib_backward((dz, dvar, dpi), c_nvib)
        dkl = np.full(N, cfg.beta / N)
        dmu_g, dlv_g, dla_g = nvib.kl_gaussian_weighted_backward(dkl, c_klg)
        dalpha_all, _ = nvib.kl_dirichlet_backward(dkl, c_kld)
        dmu = dmu + dmu_g
        dlog_var = dlog_var + dlv_g
        dlog_alpha = dlog_alpha + dla_g + dalpha_all[:, 1:] * alpha_all[:, 1:]

        dout = np.concatenate([dmu, gaussian.clamp_log_var_backward(dlog_var, c_lv),
                               (dlog_alpha * la_inside)[..., None]], axis=-1).reshape(N * n, 5)
        df, grads["head.W"], grads["head.b"] = affine_backward(dout, c_head)
        G = e2_shape[1] + cfg.att_dim
        dg = df[:, :G].copy()
        dpre = tanh_backward(df[:, G:], c_tanh)
        dg_enc, grads["enc.W"], grads["enc.b"] = affine_backward(dpre, c_enc)
        dg += dg_enc
        A = cfg.att_dim
        dq, dk, dv = nvib.attention_backward(dg[:, e2_shape[1]:].reshape(N, n, A), c_att)
        _, grads["att.q.W"], grads["att.q.b"] = affine_backward(dq.reshape(N * n, A), c_q)
        _, grads["att.k.W"], _ = affine_backward(dk.reshape(N * n, A), c_k)
        _, grads["att.v.W"], grads["att.v.b"] = affine_backward(dv.reshape(N * n, A), c_v)
        return SetLoss(loss, {name: grads[name] for name in self.shapes}, float(np.mean(recon)),
                       float(np.mean(err * err) * 2), float(np.mean(fw.kl_gauss)), float(np.mean(fw.kl_dir)))


def train_setae(cfg: SetAEConfig, progress: bool = False) -> tuple[SetAE, list[dict]]:
    """Train with Adam on a fixed pool of sets, fresh noise every step.

    Returns the model and a history of {"step", "loss", "sq_error", "kl_gauss", "kl_dir", "seconds"}
    (means over the last 100 steps, every 500 steps and at the end)."""
    rng = np.random.default_rng(cfg.seed)
    data = make_sets(rng, cfg.pool, cfg.n_points, cfg.max_clusters, cfg.spread)
    model = SetAE(cfg)
    grad_flat = np.empty_like(model.flat)
    grad_views = model.views(grad_flat)
    state = AdamState(np.zeros_like(model.flat), np.zeros_like(model.flat), 0)
    history, window, start = [], [], time.perf_counter()
    for step in range(1, cfg.steps + 1):
        idx = rng.integers(0, cfg.pool, size=cfg.batch)
        out = model.loss_and_grads(data.x[idx], draw_set_noise(rng, cfg.batch, cfg.n_points))
        if not np.isfinite(out.loss):
            raise FloatingPointError(f"the loss is {out.loss} at step {step}")
        for name, g in out.grads.items():
            grad_views[name][...] = g
        state = adam_step(model.flat, grad_flat, state, cfg.lr)
        window.append((out.loss, out.sq_error, out.kl_gauss, out.kl_dir))
        window = window[-100:]
        if step % 500 == 0 or step == cfg.steps:
            m = np.mean(window, axis=0)
            history.append({"step": step, "loss": m[0], "sq_error": m[1], "kl_gauss": m[2], "kl_dir": m[3],
                            "seconds": time.perf_counter() - start})
            if progress:
                print(f"step {step:6d}  loss {m[0]:8.3f}  sq error {m[1]:.4f}  KL gauss {m[2]:6.3f}  "
                      f"KL dir {m[3]:6.3f}  ({history[-1]['seconds']:.0f} s)")
    return model, history


class SetEval(NamedTuple):
    active_by_k: dict[int, float]  # k -> mean number of kept components (prior excluded)
    sq_error_by_k: dict[int, float]  # k -> mean squared error per point, evaluation mode
    sq_error: float                # over all test sets
    query_sq_error: float          # the same for the corrupted query itself (x_hat = u)
    active: np.ndarray             # (S,) kept components per set
    forward: Forward


def evaluate_setae(model: SetAE, data: SetData, rng: np.random.Generator,
                   threshold: float = nvib.EVAL_THRESHOLD) -> SetEval:
    """Evaluation mode (the mean mixture, pseudo-counts below ``threshold`` dropped) on ``data``."""
    noise = draw_set_noise(rng, len(data.x), data.x.shape[1], train=False)
    fw = model.forward(data.x, noise)
    active = np.sum(np.exp(fw.log_alpha) >= threshold, axis=1)                 # (S,)
    sq = np.sum((fw.x_hat - data.x) ** 2, axis=-1)                             # (S, n)
    ks = sorted(set(data.k.tolist()))
    q_sq = model.cfg.query_std ** 2 * np.sum(noise.xi ** 2, axis=-1)           # (S, n)
    return SetEval({k: float(active[data.k == k].mean()) for k in ks},
                   {k: float(sq[data.k == k].mean()) for k in ks}, float(sq.mean()), float(q_sq.mean()),
                   active, fw)


def oracle_recon_error(data: SetData, query_std: float, rng: np.random.Generator) -> np.ndarray:
    """Squared error per point, averaged within each set, (S,), of the Bayes denoiser that knows the
    true mixture (the centres, the spread and the cluster sizes): about the best any latent can do
    with these queries."""
    S, n, _ = data.x.shape
    xi = rng.standard_normal(data.x.shape)
    u = data.x + query_std * xi
    kmax = data.centers.shape[1]
    counts = np.stack([(data.labels == c).sum(axis=1) for c in range(kmax)], axis=1).astype(float)  # (S, kmax)
    z = np.nan_to_num(data.centers)                                            # (S, kmax, 2)
    spread2 = float(np.var(data.x - np.take_along_axis(z, data.labels[..., None], axis=1)))
    y, _ = nvib.denoising_attention_forward(u, z, np.full((S, kmax), spread2), counts, query_std ** 2)
    return np.mean(np.sum((y - data.x) ** 2, axis=-1), axis=1)
