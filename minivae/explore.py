r"""The latent-space explorer: one self-contained HTML page that decodes a trained MLP
VAE live, in the page's own JavaScript, as you move through its latent space.

$$ \hat x(z, c) = \mathbb E[x \mid z, c] = g\big(h_L W_{\mathrm{out}} + b_{\mathrm{out}}\big),\qquad
   h_l = f(h_{l-1} W_l + b_l),\quad h_0 = [z \mid c], $$

with $f$ the hidden activation and $g$ the likelihood's mean (sigmoid for Bernoulli,
identity for Gaussian and Laplace, softmax for Categorical). The decoder's float32
weights are embedded as base64; the page needs no network and no server. It also
embeds a few z's with NumPy's own decodings of them: ``PAGE.html#selftest`` decodes
those in JavaScript and writes the largest absolute difference into the page.
Builds on lessons 6 and 8.
"""
from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from importlib import resources
from pathlib import Path

import numpy as np

from .checkpoint import resolve_checkpoint
from .diagnostics import kl_per_dimension
from .nn import LEAKY_SLOPE
from .plots import latent_plane
from .train import EVAL_SEED, IMAGE_SHAPES, N_CLASSES, TrainConfig, load_run, load_split, one_hot
from .vae import VAE

__all__ = ["check_explorable", "explorer_page", "run_summary", "write_explorer", "N_POINTS"]

#: test images whose posterior means the scatter shows (as many as the run's latent.png)
N_POINTS = 2000
#: z's decoded by NumPy and embedded for the page's self-test
N_SELFTEST = 8


def check_explorable(cfg: TrainConfig, where: str) -> None:
    """Raise ValueError, naming ``where``, unless ``cfg`` is an MLP VAE on MNIST images."""
    if cfg.model != "mlp":
        raise ValueError(f"{where} is a convolutional VAE (--model {cfg.model}); the explorer decodes "
                         f"MLP VAEs only")
    if cfg.dataset not in IMAGE_SHAPES:
        raise ValueError(f"{where} was trained on the document dataset {cfg.dataset!r}; the explorer "
                         f"draws images (MNIST) only")


def _b64(a: np.ndarray) -> str:
    """base64 of the array as little-endian float32, row-major."""
    return base64.b64encode(np.ascontiguousarray(a, dtype="<f4").tobytes()).decode("ascii")


def _decoder_layers(vae: VAE) -> list[dict]:
    """The decoder's layers in order, as the page reads them: nIn, nOut, W (nIn, nOut), b.
    A decoder with a learned variance keeps only the mean's columns."""
    names = [f"dec.{i}" for i in range(len(vae.decoder_hidden))] + ["dec.out"]
    layers = []
    for name in names:
        W, b = vae.params[name + ".W"], vae.params[name + ".b"]  # (nIn, nOut), (nOut,)
        if name == "dec.out":
            W, b = W[:, :vae.x_dim], b[:vae.x_dim]               # the mean's columns
        layers.append({"nIn": W.shape[0], "nOut": W.shape[1], "W": _b64(W), "b": _b64(b)})
    return layers


def explorer_page(vae: VAE, x: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                  title: str = "minivae", summary: str = "") -> str:
    """The explorer page (HTML text) for an MLP ``vae`` on 28x28 images.

    x (N, D), labels (N,): test images and their digits; the first :data:`N_POINTS`
    are encoded (with their label as context if the VAE is conditional) for the
    scatter of posterior means. ``rng`` draws the self-test's z's (and their digits).
    ``summary`` is a line about the run shown under the title.
    """
    K, C, D = vae.z_dim, vae.c_dim, vae.x_dim
    if D != 28 * 28 or C not in (0, N_CLASSES):
        raise ValueError(f"the explorer draws 28x28 images with an optional one-hot digit; got "
                         f"x_dim={D}, c_dim={C}")
    x, labels = x[:N_POINTS], np.asarray(labels[:N_POINTS], dtype=int)
    if len(x) < 2:
        raise ValueError(f"the explorer needs at least 2 test images, got {len(x)}")
    context = (lambda y: one_hot(y, dtype=vae.dtype)) if C else (lambda y: None)  # noqa: E731
    mu, log_var = vae.encode(x, context(labels))                         # (N, K) each
    kl = kl_per_dimension(mu, log_var)                                   # (K,)
    plane = latent_plane(mu)
    pad_units = sorted(np.argsort(kl)[::-1][:2].tolist())                # the two most informative

    # the self-test: z = 0, prior draws, a far-out point and two posterior means
    z_test = np.vstack([np.zeros((1, K)), rng.standard_normal((N_SELFTEST - 4, K)),
                        3 * rng.standard_normal((1, K)), mu[:2]]).astype(vae.dtype)  # (M, K)
    y_test = np.concatenate([rng.integers(0, N_CLASSES, N_SELFTEST - 2), labels[:2]])  # (M,)
    expected = vae.decode_mean(z_test, context(y_test))                  # (M, D)

    names = {1: ["z0", "jitter (no meaning)"], 2: ["z0", "z1"]}.get(K) or [
        f"PC {k + 1} ({100 * e:.0f}% of variance)" for k, e in enumerate(plane.explained)]
    model = {
        "zDim": K, "cDim": C, "imageShape": [28, 28],
        "activation": vae.activation, "leakySlope": LEAKY_SLOPE, "likelihood": vae.likelihood_name,
        "layers": _decoder_layers(vae),
        "kl": [round(float(v), 4) for v in kl],
        "padUnits": pad_units,
        "range": max(3, math.ceil(float(np.percentile(np.abs(mu), 99.5)))),
        "points": {"n": len(x), "mu": _b64(mu), "xy": _b64(plane.xy), "labels": labels.tolist(),
                   "center": plane.center.tolist(), "axes": plane.axes.tolist(), "axisNames": names},
        "selftest": {"n": N_SELFTEST, "z": _b64(z_test), "digits": y_test.tolist() if C else None,
                     "expected": _b64(expected)},
    }
    fill = {"TITLE": html.escape(title), "SUMMARY": html.escape(summary),
            "MODEL": json.dumps(model, separators=(",", ":")).replace("</", "<\\/")}  # safe inside <script>
    template = resources.files("minivae").joinpath("explore.html").read_text(encoding="utf-8")
    return re.sub(r"__(TITLE|SUMMARY|MODEL)__", lambda m: fill[m.group(1)], template)


def run_summary(vae: VAE, history: list[dict]) -> str:
    """One line about a run: the decoder's widths and activation, likelihood, epochs, test -ELBO."""
    widths = [f"{vae.z_dim}" + (f"+{vae.c_dim}" if vae.c_dim else "")] + [str(h) for h in vae.decoder_hidden]
    text = (f"decoder {' → '.join(widths + [str(vae.x_dim)])} ({vae.activation}), "
            f"{vae.likelihood_name} likelihood{', conditional on the digit' if vae.c_dim else ''}; "
            f"{len(history)} epoch{'s' if len(history) != 1 else ''}")
    losses = [row["test_loss"] for row in history if row.get("test_loss") is not None]
    return text + (f", test -ELBO {losses[-1]:.2f} nats" if losses else "")


def write_explorer(run, out=None) -> Path:
    """Write the explorer page of the run (folder or checkpoint file) ``run`` to ``out``
    (default, or if ``out`` is a folder: ``explore.html`` in that folder), atomically.
    Returns the path."""
    checkpoint = resolve_checkpoint(run)
    cfg, vae, _, rs = load_run(checkpoint)
    check_explorable(cfg, str(run))
    x, y = load_split(cfg, "test")
    page = explorer_page(vae, x, y, np.random.default_rng(EVAL_SEED), title=checkpoint.parent.name,
                         summary=run_summary(vae, rs.history))
    out = Path(out) if out is not None else checkpoint.parent
    if out.is_dir():
        out = out / "explore.html"
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    try:
        tmp.write_text(page, encoding="utf-8")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
