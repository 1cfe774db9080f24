r"""The figures of a training run: samples, reconstructions, curves, latent space (lesson 6).

The curves split the loss the way lesson 6 reads it, distortion plus rate:

$$ -\mathrm{ELBO}(x) = \underbrace{-\mathbb E_{q(z\mid x)} \log p(x \mid z)}_{\text{distortion}}
   + \underbrace{\mathrm{KL}\big(q(z \mid x) \,\|\, p(z)\big)}_{\text{rate}}. $$

The manifold decodes a grid of latent points at standard-normal quantiles,
$z_{ij} = \big(\Phi^{-1}(p_j),\ \Phi^{-1}(p_{n-1-i})\big)$ with $p$ evenly spaced in
$[0.05, 0.95]$, so that equal steps in the figure are equal steps of prior mass.

Every function takes plain NumPy arrays (never a model) and returns the
matplotlib ``Figure``; given ``path=``, it also writes the figure there as a PNG
(creating parent folders). Figures are built with matplotlib's object-oriented
API on an Agg canvas: no ``pyplot``, no global backend switch, no window, so a
script never blocks. In a notebook, :func:`minivae.lessons.show` saves a figure
and displays it under the cell.
"""
from __future__ import annotations

import math
from pathlib import Path
from statistics import NormalDist
from typing import Callable, Mapping, NamedTuple, Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = [
    "tile", "pca_2d", "pca_axes", "LatentPlane", "latent_plane", "save",
    "image_grid", "reconstructions", "training_curves",
    "latent_scatter", "manifold", "rate_distortion",
]

DPI = 100          # pixels per inch of every saved PNG
PX_PER_INCH = 30   # image pixels per figure inch before capping (about 3x upsampling at DPI)
MAX_INCHES = 8.0   # the longest side of an image figure


def tile(images: np.ndarray, shape: tuple[int, int] = (28, 28), ncol: int | None = None,
         pad: float = 1.0) -> np.ndarray:
    r"""Lay out flattened images on one canvas, row by row, with a 1-pixel gap.

    ``images`` (N, H*W), each row one image of ``shape`` = (H, W) in row-major
    order. Image ``i`` lands in grid cell ``(i // ncol, i % ncol)``; ``ncol``
    defaults to $\lceil \sqrt N \rceil$ and ``rows`` $= \lceil N / \mathrm{ncol} \rceil$.
    Returns the canvas (rows*(H+1) - 1, ncol*(W+1) - 1): blocks of H x W pixels
    separated by 1-pixel lines of value ``pad``; unused cells after the last
    image are filled with ``pad`` too. The input is not modified.
    """
    images = np.asarray(images)
    H, W = shape
    if images.ndim != 2 or images.shape[1] != H * W or images.shape[0] == 0:
        raise ValueError(f"tile expects images of shape (N >= 1, {H * W}) for shape {tuple(shape)}, "
                         f"got {images.shape}")
    N = images.shape[0]
    ncol = math.ceil(math.sqrt(N)) if ncol is None else int(ncol)
    if ncol < 1:
        raise ValueError(f"ncol must be at least 1, got {ncol}")
    rows = math.ceil(N / ncol)
    dtype = np.result_type(images.dtype, np.float32)
    cells = np.full((rows * ncol, H + 1, W + 1), pad, dtype=dtype)  # (rows*ncol, H+1, W+1)
    cells[:N, :H, :W] = images.reshape(N, H, W)                       # (N, H, W)
    canvas = cells.reshape(rows, ncol, H + 1, W + 1).transpose(0, 2, 1, 3)  # (rows, H+1, ncol, W+1)
    return canvas.reshape(rows * (H + 1), ncol * (W + 1))[:-1, :-1]   # drop the trailing gap


def pca_2d(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    r"""Project points onto their first two principal axes.

    With $\bar x$ the mean row and $X - \bar x = U S V^\top$ (thin SVD), returns
    ``proj`` (N, 2) $= (X - \bar x) V_{:, :2}$ and ``explained`` (2,), the
    fractions of total variance $s_k^2 / \sum_j s_j^2$ along those axes. ``x`` is
    (N, D) with N >= 2 and D >= 2. Each axis's sign is fixed so that its largest
    loading is positive, so the same data always gives the same picture. If all
    points coincide, ``explained`` is zero. :func:`pca_axes` gives the axes themselves.
    """
    center, axes, explained = pca_axes(x)
    return (np.asarray(x, dtype=np.float64) - center) @ axes.T, explained  # (N, 2), (2,)


def pca_axes(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    r"""The mean row $\bar x$ (D,), the first two principal axes $V_{:, :2}^\top$ (2, D)
    and the fractions of variance along them (2,), as :func:`pca_2d` uses them: a
    point $x$ projects to $(x - \bar x) V_{:, :2}$."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or min(x.shape) < 2:
        raise ValueError(f"pca_2d expects x of shape (N >= 2, D >= 2), got {x.shape}")
    center = x.mean(axis=0)                                  # (D,)
    _, s, vt = np.linalg.svd(x - center, full_matrices=False)  # s (min(N, D),), vt (min(N, D), D)
    axes = vt[:2]                                            # (2, D)
    signs = np.sign(axes[np.arange(2), np.abs(axes).argmax(axis=1)])
    axes = axes * signs[:, None]                             # (2, D)
    total = float(np.sum(s ** 2))
    explained = s[:2] ** 2 / total if total > 0 else np.zeros(2)  # (2,)
    return center, axes, explained


def _figure(figsize: tuple[float, float]) -> Figure:
    """A new figure on its own Agg canvas, with constrained layout."""
    fig = Figure(figsize=figsize, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _image_figsize(canvas: np.ndarray, extra_height: float = 0.0) -> tuple[float, float]:
    """Figure inches (width, height) for a tiled canvas (h, w).

    Proportional to the canvas, with the longest side between 3 and ``MAX_INCHES``
    and the shortest at least 1 inch (room for labels), plus ``extra_height``.
    """
    h, w = canvas.shape[0] / PX_PER_INCH, canvas.shape[1] / PX_PER_INCH
    s = min(max(h, w, 3.0), MAX_INCHES) / max(h, w)
    return max(w * s, 1.0), max(h * s, 1.0) + extra_height


def _show(ax: Axes, canvas: np.ndarray) -> None:
    """Draw a tiled canvas of pixel probabilities: gray, 0 black and 1 white, no ticks."""
    ax.imshow(canvas, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest")
    ax.set_xticks([])
    ax.set_yticks([])


def save(fig: Figure, path: str | Path | None, dpi: int = DPI) -> Figure:
    """Write ``fig`` as a PNG to ``path`` (creating parent folders) unless ``path`` is
    None; return the figure."""
    if path is not None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=dpi, format="png")
    return fig


def image_grid(images: np.ndarray, shape: tuple[int, int] = (28, 28), ncol: int | None = None,
               title: str | None = None, path: str | Path | None = None) -> Figure:
    """Images (N, H*W) of pixel probabilities in [0, 1] as one gray grid.

    For example samples from the prior, decoded to pixel means. The layout is
    that of :func:`tile`; values outside [0, 1] are clipped by the colormap.
    """
    canvas = tile(images, shape, ncol)  # (rows*(H+1) - 1, ncol*(W+1) - 1)
    fig = _figure(_image_figsize(canvas, extra_height=0.4 if title else 0.0))
    ax = fig.add_subplot()
    _show(ax, canvas)
    if title:
        ax.set_title(title)
    return save(fig, path)


def reconstructions(x: np.ndarray, x_recon: np.ndarray, shape: tuple[int, int] = (28, 28), n: int = 16,
                    path: str | Path | None = None) -> Figure:
    """The first ``n`` inputs x (N, H*W) above their reconstructions x_recon (N, H*W).

    Two rows, labelled "input" and "reconstruction", column j showing example j
    and its decoded mean. ``n`` is capped at N.
    """
    x, x_recon = np.asarray(x), np.asarray(x_recon)
    if x.shape != x_recon.shape:
        raise ValueError(f"x and x_recon must have the same shape, got {x.shape} and {x_recon.shape}")
    n = min(n, x.shape[0])
    H = shape[0]
    canvas = tile(np.concatenate([x[:n], x_recon[:n]]), shape, ncol=n)  # (2H + 1, n*(W+1) - 1)
    fig = _figure(_image_figsize(canvas, extra_height=0.3))
    ax = fig.add_subplot()
    _show(ax, canvas)
    ax.set_yticks([(H - 1) / 2, H + 1 + (H - 1) / 2], ["input", "reconstruction"])
    ax.tick_params(axis="y", length=0)
    return save(fig, path)


def _column(rows: Sequence[Mapping[str, float]], key: str) -> np.ndarray:
    """One metric over the epochs, (E,) float64, NaN where a row lacks it or holds None."""
    return np.array([np.nan if row.get(key) is None else float(row[key]) for row in rows], dtype=np.float64)


def training_curves(rows: Sequence[Mapping[str, float]], path: str | Path | None = None) -> Figure:
    """The training curves of a run: one row (a dict) per finished epoch.

    Each row holds ``epoch``, ``train_loss``, ``train_recon``, ``train_kl`` and
    optionally ``test_loss`` (missing, None or NaN where it was not measured).
    Panel (a) shows the train and test -ELBO, panel (b) the train distortion
    (reconstruction term) and rate (KL), all against the epoch, in nats per example.
    Epochs without a test value are skipped on the test curve.
    """
    epoch = _column(rows, "epoch")  # (E,)
    panels = {
        "(a) loss": [("train -ELBO", "train_loss"), ("test -ELBO", "test_loss")],
        "(b) distortion and rate (train)": [("reconstruction (distortion)", "train_recon"),
                                            ("KL (rate)", "train_kl")],
    }
    fig = _figure((10.0, 4.0))
    for ax, (title, curves) in zip(fig.subplots(1, 2), panels.items()):
        for label, key in curves:
            y = _column(rows, key)  # (E,)
            ok = np.isfinite(y)
            if ok.any():
                ax.plot(epoch[ok], y[ok], marker="o", markersize=3, label=label)
        ax.set_title(title)
        ax.set_xlabel("epoch")
        ax.set_ylabel("nats / example")
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    return save(fig, path)


class LatentPlane(NamedTuple):
    """Where the latent figures draw posterior means: see :func:`latent_plane`."""
    xy: np.ndarray         # (N, 2) the points as drawn
    center: np.ndarray     # (K,)
    axes: np.ndarray       # (2, K): a latent point z is drawn at (z - center) @ axes.T
    explained: np.ndarray  # (2,) fractions of variance along the axes (K > 2), else nan


def latent_plane(mu: np.ndarray) -> LatentPlane:
    r"""The 2-D view of posterior means mu (N, K) that :func:`latent_scatter` draws.

    K = 2: the two coordinates. K > 2: the first two principal axes (:func:`pca_axes`).
    K = 1: $\mu$ against a small vertical jitter from a fixed seed (no meaning, so
    that the points do not overlap; ``axes`` maps z to height 0).
    """
    mu = np.asarray(mu, dtype=np.float64)
    if mu.ndim != 2 or mu.shape[1] == 0:
        raise ValueError(f"expected mu of shape (N, K >= 1), got {mu.shape}")
    K = mu.shape[1]
    nan = np.full(2, np.nan)
    if K > 2:
        center, axes, explained = pca_axes(mu)
        return LatentPlane((mu - center) @ axes.T, center, axes, explained)
    center, axes = np.zeros(K), np.eye(2, K)                     # (K,), (2, K)
    xy = mu @ axes.T                                              # (N, 2)
    if K == 1:
        xy[:, 1] = np.random.default_rng(0).uniform(-0.1, 0.1, size=len(mu))
    return LatentPlane(xy, center, axes, nan)


def latent_scatter(mu: np.ndarray, labels: np.ndarray, path: str | Path | None = None) -> Figure:
    r"""The posterior means mu (N, K) as points coloured by their int labels (N,) in 0..9,
    in the plane of :func:`latent_plane` (principal axes when K > 2, with the
    fraction of variance each explains in the axis label)."""
    mu, labels = np.asarray(mu, dtype=np.float64), np.asarray(labels)
    if mu.ndim != 2 or mu.shape[1] == 0 or labels.shape != (mu.shape[0],):
        raise ValueError(f"expected mu (N, K >= 1) and labels (N,), got {mu.shape} and {labels.shape}")
    K, plane = mu.shape[1], latent_plane(mu)
    names = {1: (r"$\mu_1$", "jitter (no meaning)"), 2: (r"$\mu_1$", r"$\mu_2$")}.get(K) or tuple(
        f"PC {k + 1} ({100 * e:.0f}% var)" for k, e in enumerate(plane.explained))
    fig = _figure((6.5, 5.5))
    ax = fig.add_subplot()
    points = ax.scatter(*plane.xy.T, c=labels, cmap="tab10", vmin=-0.5, vmax=9.5,
                        s=4, alpha=0.7, linewidths=0)
    fig.colorbar(points, ax=ax, ticks=range(10), label="label")
    ax.set_xlabel(names[0])
    ax.set_ylabel(names[1])
    ax.set_title(f"posterior means, K = {K}")
    return save(fig, path)


def manifold(decode_mean: Callable[[np.ndarray], np.ndarray], n: int = 20, shape: tuple[int, int] = (28, 28),
             extent: tuple[float, float, float, float] | None = None,
             path: str | Path | None = None) -> Figure:
    r"""The images a 2-D latent space decodes to, on an n x n grid of latent points.

    ``decode_mean`` maps latent points (M, 2) to images (M, H*W) and is called
    once, with M = n*n. By default both coordinates run over the standard-normal
    quantiles $\Phi^{-1}(p)$, p = linspace(0.05, 0.95, n); ``extent`` =
    (z1_min, z1_max, z2_min, z2_max) spaces them evenly over a box instead.
    Row i, column j of the grid is $z = (z_{1,j},\ z_{2,n-1-i})$: $z_1$ grows to
    the right and $z_2$ grows upwards. Raises ValueError if the decoded images do
    not have shape (n*n, H*W).
    """
    if n < 1:
        raise ValueError(f"n must be at least 1, got {n}")
    if extent is None:
        q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])  # (n,)
        z1, z2 = q, q
    else:
        z1, z2 = np.linspace(extent[0], extent[1], n), np.linspace(extent[2], extent[3], n)  # (n,)
    grid = np.stack(np.meshgrid(z1, z2[::-1]), axis=-1)  # (n, n, 2), row i holds z2[n-1-i]
    images = np.asarray(decode_mean(grid.reshape(n * n, 2)))  # (n*n, H*W)
    H, W = shape
    if images.shape != (n * n, H * W):
        raise ValueError(f"decode_mean returned shape {images.shape} for {n * n} latent points; "
                         f"expected ({n * n}, {H * W}) for images of shape {tuple(shape)}")
    canvas = tile(images, shape, ncol=n)  # (n*(H+1) - 1, n*(W+1) - 1)
    fig = _figure(_image_figsize(canvas, extra_height=0.6))
    ax = fig.add_subplot()
    _show(ax, canvas)
    ticks = np.unique(np.linspace(0, n - 1, min(n, 5)).round().astype(int))  # grid indices to label
    ax.set_xticks(ticks * (W + 1) + (W - 1) / 2, [f"{z1[j]:.2g}" for j in ticks])
    ax.set_yticks(ticks * (H + 1) + (H - 1) / 2, [f"{z2[n - 1 - i]:.2g}" for i in ticks])
    ax.set_xlabel(r"$z_1$")
    ax.set_ylabel(r"$z_2$")
    ax.set_title("decoded means over the latent grid")
    return save(fig, path)


def rate_distortion(rate: np.ndarray, distortion: np.ndarray, labels: Sequence[str],
                    path: str | Path | None = None) -> Figure:
    r"""The rate-distortion plane: one point per model, rate (KL) against distortion
    ($-\mathbb E_q \log p(x \mid z)$), both in nats per example, with the lines of
    constant -ELBO = rate + distortion for reference. rate, distortion (M,); labels M strings."""
    rate, distortion = np.asarray(rate, float), np.asarray(distortion, float)  # (M,) each
    fig = _figure((5.5, 4.5))
    ax = fig.subplots()
    order = np.argsort(rate)
    ax.plot(rate[order], distortion[order], marker="o")
    for r, d, text in zip(rate, distortion, labels):
        ax.annotate(text, (r, d), textcoords="offset points", xytext=(5, 5), fontsize=8)
    lo, hi = ax.get_xlim()
    for total in np.unique(np.round(rate + distortion, -1)):  # -ELBO isolines
        ax.plot([lo, hi], [total - lo, total - hi], color="0.85", linewidth=0.8, zorder=0)
    ax.set_xlim(lo, hi)
    ax.set_ylim(distortion.min() - 5, distortion.max() + 5)
    ax.set_xlabel("rate: KL(q(z|x) || p(z))  [nats / example]")
    ax.set_ylabel("distortion: -E_q log p(x|z)  [nats / example]")
    ax.set_title("rate-distortion (grey: constant -ELBO)")
    ax.grid(alpha=0.3)
    return save(fig, path)
