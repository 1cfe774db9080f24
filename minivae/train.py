r"""Training loop: minibatches, Adam, progress, metrics, checkpoints, figures.

Every random draw of step $b$ of epoch $e$ (the batch's binarization and its
$\epsilon$) comes from a generator seeded with ``(seed, e, b)``, and the data
order of epoch $e$ from one seeded with ``(seed, e)``. The training state is
therefore the parameters, the optimizer moments and the position ``(e, b)``;
a run resumed from any checkpoint continues exactly as if it had never stopped.

A run folder holds ``config.json``, ``checkpoint.npz`` (written atomically, no
pickle), ``best.npz`` (the same, as it was after the epoch with the lowest test
-ELBO so far), ``metrics.csv`` (rewritten from the checkpoint's history, so it never
disagrees with it) and the figures. Every epoch's end is checked for divergence,
posterior collapse and overfitting (:mod:`minivae.watch`). Taught in lesson 6.
"""
from __future__ import annotations

import contextlib
import csv
import ctypes
import dataclasses
import functools
import io
import json
import math
import numbers
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from . import optim, parallel, watch
from .checkpoint import (CheckpointError, check_compatible, load_checkpoint, resolve_checkpoint,
                         save_checkpoint)
from .data import binarize, binarize_static, load_mnist, validate_data
from .diagnostics import active_units, kl_per_dimension
from .likelihoods import LIKELIHOODS
from .nn import ACTIVATIONS
from .objectives import OBJECTIVES
from .vae import DTYPES, VAE, LossAndGrads

__all__ = ["TrainConfig", "Dataset", "corpus_splits", "load_split", "load_dataset", "evaluate_elbo", "evaluate", "train", "load_run",
           "TrainingError", "one_hot"]

#: test-set binarization and evaluation noise are fixed, so every run is scored alike.
EVAL_SEED = 20151231


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, divergence, unusable run folder); the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. The CLI builds it; ``config.json`` stores it."""
    epochs: int = 60
    model: str = "mlp"      # mlp | conv (convolutional encoder, sub-pixel decoder)
    channels: tuple[int, ...] = (32, 64)  # conv feature maps at H/2 and H/4
    z_dim: int = 20
    hidden: tuple[int, ...] = (400,)
    likelihood: str = "bernoulli"
    activation: str = "relu"
    batch_size: int = 128
    lr: float = 1e-3
    lr_final: float = 0.0   # > 0: decay lr geometrically, epoch by epoch, to this value
    optimizer: str = "adam"
    beta: float = 1.0
    seed: int = 0
    obs_scale: float = 0.1  # sigma (gaussian) or b (laplace) on pixels in [0, 1]
    binarize: str = "auto"  # dynamic | static | none | auto (dynamic for bernoulli, else none)
    dataset: str = "mnist"  # mnist | topics (synthetic documents from a known topic model) | text
    data_dir: str = ""      # dataset "text": a folder of .txt files (sub-folders = labels)
    decoder_hidden: tuple[int, ...] | None = None  # None mirrors hidden; () = linear (NVDM) decoder
    train_size: int = 0     # 0: the whole training set; else its first n examples
    test_size: int = 0      # 0: the whole test set
    dtype: str = "float32"
    eval_every: int = 1     # test -ELBO every n epochs (and after the last)
    conditional: bool = False  # feed the one-hot label to encoder and decoder (conditional VAE)
    objective: str = "elbo"    # elbo | iwae (the importance-weighted bound with `samples` samples)
    samples: int = 1           # S latent samples per example in each training step
    warmup_epochs: float = 0.0  # the KL weight ramps linearly from 0 to beta over these epochs
    free_bits: float = 0.0     # per-dimension floor on the batch-mean KL, in nats (0: off)
    threads: int = 0           # worker threads of a step; 0: chosen from the batch's size (step_workers)

    def __post_init__(self):
        for f in dataclasses.fields(self):  # the types first: a config from JSON may hold anything
            v = getattr(self, f.name)
            ok = {"int": isinstance(v, numbers.Integral) and not isinstance(v, bool),
                  "float": isinstance(v, numbers.Real) and not isinstance(v, bool),
                  "str": isinstance(v, str), "bool": isinstance(v, bool)}.get(f.type, True)
            if not ok:
                raise ValueError(f"{f.name.replace('_', '-')} must be of type {f.type}, got {v!r}")
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        object.__setattr__(self, "channels", tuple(int(h) for h in self.channels))
        if self.decoder_hidden is not None:
            object.__setattr__(self, "decoder_hidden", tuple(int(h) for h in self.decoder_hidden))
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.z_dim >= 1, "z-dim must be >= 1"),
            (all(h >= 1 for h in self.hidden), "hidden widths must be >= 1"),
            (len(self.channels) == 2 and min(self.channels) >= 1, "channels must be two positive integers"),
            (self.batch_size >= 1, "batch-size must be >= 1"),
            (math.isfinite(self.lr) and self.lr > 0, "lr must be a positive number"),
            (math.isfinite(self.lr_final) and self.lr_final >= 0, "lr-final must be a number >= 0"),
            (self.eval_every >= 1, "eval-every must be >= 1"),
            (math.isfinite(self.beta) and self.beta >= 0, "beta must be a number >= 0"),
            (math.isfinite(self.obs_scale) and self.obs_scale > 0, "obs-scale must be a positive number"),
            (self.train_size >= 0 and self.test_size >= 0, "train-size and test-size must be >= 0"),
            (self.seed >= 0, "seed must be >= 0"),
            (self.samples >= 1, "samples must be >= 1"),
            (math.isfinite(self.warmup_epochs) and self.warmup_epochs >= 0, "warmup-epochs must be >= 0"),
            (math.isfinite(self.free_bits) and self.free_bits >= 0, "free-bits must be >= 0"),
            (self.test_size != 1, "test-size must be 0 (all) or at least 2"),
            (self.threads >= 0, "threads must be >= 0 (0: chosen from the batch's size)"),
            (self.threads <= 1 or not self.free_bits,
             "free bits take the batch-mean KL of the whole batch: they do not split over threads (--threads 1)"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        for name, value, choices in [
            ("likelihood", self.likelihood, LIKELIHOODS), ("activation", self.activation, ACTIVATIONS),
            ("optimizer", self.optimizer, optim.OPTIMIZERS), ("dataset", self.dataset, DATASETS),
            ("binarize", self.binarize, ("auto", "dynamic", "static", "none")),
            ("dtype", self.dtype, DTYPES), ("objective", self.objective, OBJECTIVES),
            ("model", self.model, ("mlp", "conv")),
        ]:
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if self.resolved_binarize() != "none" and self.likelihood != "bernoulli":
            raise ValueError(f"binarize={self.binarize} only makes sense with the bernoulli likelihood")
        if self.dataset != "mnist" and self.likelihood != "categorical":
            raise ValueError(f"dataset {self.dataset} holds word counts: use --likelihood categorical")
        if self.dataset != "mnist" and (self.model == "conv" or self.conditional):
            raise ValueError(f"dataset {self.dataset}: conv and conditional models are for images")
        if (self.dataset == "text") != bool(self.data_dir):
            raise ValueError("--data-dir goes with --dataset text, and --dataset text needs --data-dir")
        if not OBJECTIVES[self.objective].takes_beta and (self.beta != 1 or self.warmup_epochs or self.free_bits):
            raise ValueError(f"the {self.objective} objective takes neither beta != 1, warm-up nor free bits")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based): constant, or geometric
        from ``lr`` at the first epoch to ``lr_final`` at the last."""
        if not self.lr_final or self.epochs == 1:
            return self.lr
        return self.lr * (self.lr_final / self.lr) ** (epoch / (self.epochs - 1))

    def beta_at(self, epoch: float) -> float:
        """The KL weight at (fractional) epoch ``epoch``: beta, ramped up linearly from 0
        over the first ``warmup_epochs``."""
        if self.warmup_epochs and epoch < self.warmup_epochs:
            return self.beta * epoch / self.warmup_epochs
        return self.beta

    def resolved_binarize(self) -> str:
        if self.binarize == "auto":
            return "dynamic" if self.likelihood == "bernoulli" else "none"
        return self.binarize

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"], d["channels"] = list(self.hidden), list(self.channels)
        if self.decoder_hidden is not None:
            d["decoder_hidden"] = list(self.decoder_hidden)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"config has unknown keys {sorted(unknown)}")
        return cls(**d)

    def build(self) -> VAE:
        """The model this config describes, freshly initialized."""
        if self.model == "conv":
            from .convvae import ConvVAE
            return ConvVAE(image_shape=IMAGE_SHAPES[self.dataset], channels=self.channels, z_dim=self.z_dim,
                           likelihood=self.likelihood, activation=self.activation, seed=self.seed,
                           dtype=self.dtype, obs_scale=self.obs_scale,
                           c_dim=N_CLASSES if self.conditional else 0)
        return VAE(x_dim=self.x_dim, hidden=self.hidden, z_dim=self.z_dim, likelihood=self.likelihood,
                   activation=self.activation, seed=self.seed, dtype=self.dtype, obs_scale=self.obs_scale,
                   c_dim=N_CLASSES if self.conditional else 0, decoder_hidden=self.decoder_hidden)

    @property
    def x_dim(self) -> int:
        return 784 if self.dataset == "mnist" else len(corpus_splits(self.dataset, self.data_dir)[0].vocab)


DATASETS = ("mnist", "topics", "text")
#: the synthetic corpus of dataset "topics": fixed, so every run sees the same documents
TOPICS = dict(n_docs=6000, n_topics=4, vocab_size=200, seed=2016)
IMAGE_SHAPES = {"mnist": (1, 28, 28)}
N_CLASSES = 10


@dataclass(frozen=True)
class Dataset:
    """Training and test data of one run, validated for its likelihood."""
    x_train: np.ndarray  # (N, D)
    y_train: np.ndarray  # (N,)
    x_test: np.ndarray   # (M, D), binarized once with EVAL_SEED when training binarizes
    y_test: np.ndarray   # (M,)


@functools.lru_cache(maxsize=4)
def corpus_splits(dataset: str, data_dir: str):
    """(train, test) :class:`minivae.text.Corpus` of a document dataset, 80/20, fixed split."""
    from .text import load_text_folder, make_topic_corpus, train_test_split

    if dataset == "topics":
        corpus = make_topic_corpus(TOPICS["n_docs"], np.random.default_rng(TOPICS["seed"]),
                                   n_topics=TOPICS["n_topics"], vocab_size=TOPICS["vocab_size"])
    else:
        corpus = load_text_folder(data_dir)
    return train_test_split(corpus, 0.2, np.random.default_rng(TOPICS["seed"]))


def load_split(cfg: TrainConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split ("train" or "test") as the config asks: subset, validated, in the
    config's dtype, binarized as the config says (the test set once, with EVAL_SEED)."""
    if cfg.dataset == "mnist":
        x, y = load_mnist(split)
    else:
        corpus = corpus_splits(cfg.dataset, cfg.data_dir)[split == "test"]
        x, y = corpus.counts, corpus.labels
    n = cfg.train_size if split == "train" else cfg.test_size
    if n:
        x, y = x[:n], y[:n]
    x = validate_data(x, cfg.likelihood, f"{split} data").astype(cfg.dtype, copy=False)
    mode = cfg.resolved_binarize()
    if mode == "static" or (split == "test" and mode != "none"):
        x = binarize_static(x, EVAL_SEED if split == "test" else cfg.seed)
    return x, y


def one_hot(labels: np.ndarray, n: int = N_CLASSES, dtype="float32") -> np.ndarray:
    """labels (N,) ints in [0, n) -> (N, n) one-hot rows."""
    return np.eye(n, dtype=dtype)[labels]


def load_dataset(cfg: TrainConfig) -> Dataset:
    """Training and test data as the config asks (see :func:`load_split`)."""
    return Dataset(*load_split(cfg, "train"), *load_split(cfg, "test"))


def evaluate_elbo(vae: VAE, x: np.ndarray, seed: int = EVAL_SEED, batch: int = 1000,
                  c: np.ndarray | None = None, threads: int | None = None) -> dict:
    """Mean -ELBO, distortion and rate over ``x`` (N, D) [context c (N, C)] with one
    latent sample per example, the noise fixed by ``seed``. Returns {"loss",
    "recon", "kl"} in nats/example and, from the same pass, the latent diagnostics
    of :mod:`minivae.diagnostics`: "active_units" (int) and "kl_per_dim" (K,). Batches run
    on ``threads`` workers (default: the cores), each with noise of its own (from ``seed``
    and its index), joined in order: the result does not depend on the number of threads."""
    def part(k: int):
        i = k * batch
        xb = x[i:i + batch]
        eps = np.random.default_rng([seed, k]).standard_normal((len(xb), vae.z_dim))
        t = vae.terms(xb, eps, None if c is None else c[i:i + batch])
        return -float(t.log_px_z.sum()), float(t.kl.sum()), t.mu, t.log_var

    workers = parallel.threads(threads)
    with parallel.pinned():
        parts = parallel.pool_map(part, range(-(-len(x) // batch)), workers)
    recon, kl = sum(p[0] for p in parts), sum(p[1] for p in parts)
    mus, log_vars = [p[2] for p in parts], [p[3] for p in parts]
    n = len(x)
    mu, log_var = np.concatenate(mus), np.concatenate(log_vars)                      # (N, K) each
    return {"loss": (recon + kl) / n, "recon": recon / n, "kl": kl / n, "active_units": active_units(mu),
            "kl_per_dim": kl_per_dimension(mu, log_var)}


def evaluate(vae: VAE, x: np.ndarray, iw: int = 0, seed: int = EVAL_SEED,
             progress: Callable[[int], None] | None = None, c: np.ndarray | None = None,
             threads: int | None = None) -> dict:
    """Everything ``python -m minivae evaluate`` reports about a model on data x (N, D).

    Keys: "elbo" (dict from :func:`evaluate_elbo`), "active_units", "kl_per_dim" (K,),
    and with ``iw`` = S > 0: "iw_bound" (mean over examples of the S-sample bound
    L_S, nats), "nll" (= -iw_bound, the log-likelihood estimate of Burda et al.),
    "nll_se" (its Monte Carlo standard error), "ess" (mean effective sample size)
    and "iw_samples_per_s".
    """
    from .estimate import estimate_log_px

    elbo = evaluate_elbo(vae, x, seed, c=c, threads=threads)
    out = {"elbo": elbo, "active_units": elbo["active_units"], "kl_per_dim": elbo["kl_per_dim"]}
    if iw:
        start = time.perf_counter()
        est = estimate_log_px(vae, x, iw, np.random.default_rng(seed + 1), progress=progress, c=c, threads=threads)
        seconds = time.perf_counter() - start
        out.update(iw_bound=float(est.log_px.mean()), nll=-float(est.log_px.mean()),
                   nll_se=float(np.sqrt(np.sum(est.se ** 2)) / len(x)), ess=float(est.ess.mean()),
                   iw_samples_per_s=len(x) * iw / seconds, iw_seconds=seconds)
    return out


#: from this many decoded rows a step (batch x samples) on, a step splits its batch over the
#: cores: below it the workers do not beat one step on the BLAS's own threads, which already
#: spread the products, most of the step, over the cores (default model, 2 cores, medians of
#: ``python -m minivae.bench``: data-parallel 0.65x at 128 rows, 0.9x at 512, 0.95x at 1024,
#: 1.08x at 2048)
PARALLEL_ROWS = 2048


def step_workers(cfg: TrainConfig) -> int:
    """The worker threads of a training step: ``cfg.threads``, or else all cores from
    :data:`PARALLEL_ROWS` decoded rows a step on, and one below (and with free bits)."""
    if cfg.threads:
        return cfg.threads
    rows = cfg.batch_size * cfg.samples
    return parallel.threads() if rows >= PARALLEL_ROWS and not cfg.free_bits else 1


def split_loss_and_grads(vae: VAE, x: np.ndarray, eps: np.ndarray, workers: int,
                         c: np.ndarray | None = None, **kw) -> LossAndGrads:
    """``vae.loss_and_grads`` of a batch, data-parallel: the batch split into ``workers``
    contiguous parts (eps too), each part's loss and gradients computed by a worker thread,
    then averaged weighted by the parts' sizes, a parameter array per worker. Exact for
    every objective whose loss is a mean over the examples (not free bits, whose floor
    applies to the whole batch's mean KL). The split and the order of the sums are fixed,
    so a fixed number of workers gives the same result every time. The caller pins the
    BLAS (parallel.pinned)."""
    bounds = np.linspace(0, len(x), workers + 1).round().astype(int)      # (workers + 1,)
    parts = [slice(a, b) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]  # views, not copies

    def part(p: slice) -> LossAndGrads:
        return vae.loss_and_grads(x[p], eps[:, p], c=None if c is None else c[p], **kw)

    results = parallel.pool_map(part, parts, workers)
    weights = [(p.stop - p.start) / len(x) for p in parts]

    def combine(name: str) -> np.ndarray:  # sum_k weight_k * part k's gradient
        g = weights[0] * results[0].grads[name]
        for w, r in zip(weights[1:], results[1:]):
            g += w * r.grads[name]
        return g

    grads = dict(zip(vae.shapes, parallel.pool_map(combine, list(vae.shapes), workers)))
    mean = lambda field: sum(w * getattr(r, field) for w, r in zip(weights, results))  # noqa: E731
    return LossAndGrads(mean("loss"), grads, mean("recon"), mean("kl"))


def batch_rng(seed: int, epoch: int, b: int) -> np.random.Generator:
    """The generator of step b of epoch ``epoch``: a pure function of the position."""
    return np.random.default_rng([seed, epoch, b])


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of the n training examples in epoch ``epoch``."""
    return np.random.default_rng([seed, epoch, 2**32 - 1]).permutation(n)


# ---------------------------------------------------------------- run state
#: the running sums of the epoch so far, each weighted by its batch size (a checkpoint keeps them)
SUM_KEYS = ("loss", "recon", "kl", "objective", "n")


def new_sums() -> dict:
    return dict.fromkeys(SUM_KEYS, 0.0) | {"n": 0}


def add_step(sums: dict, res, m: int) -> None:
    """Add one step's batch means (a LossAndGrads of m examples) to the epoch's sums."""
    for key, value in (("loss", res.recon + res.kl), ("recon", res.recon), ("kl", res.kl),
                       ("objective", res.loss)):
        sums[key] = sums.get(key, 0.0) + value * m
    sums["n"] += m


def sum_means(sums: dict) -> dict:
    """The epoch's training means so far: train_loss (-ELBO), train_recon, train_kl, train_objective."""
    n = sums["n"]
    return {f"train_{key}": sums.get(key, sums["loss"]) / n for key in SUM_KEYS if key != "n"}


@dataclass
class RunState:
    """What a checkpoint holds besides the parameters: position, optimizer, history."""
    epoch: int = 0     # current epoch (0-based)
    batch: int = 0     # next batch within it
    step: int = 0      # optimizer steps taken
    train_sums: dict = field(default_factory=new_sums)
    history: list = field(default_factory=list)  # one dict per finished epoch
    seconds: float = 0.0  # training time so far, over all sessions
    warnings: list = field(default_factory=list)  # the findings of minivae.watch: {"kind", "epoch", "text"}


#: the checkpoint of the epoch with the lowest test -ELBO so far, beside checkpoint.npz
BEST_NAME = "best.npz"


def save_run(out: Path, cfg: TrainConfig, vae: VAE, opt_state, rs: RunState, best: bool = False) -> Path:
    """Checkpoint the run atomically, then rewrite metrics.csv from its history. With
    ``best`` the same checkpoint is first written as ``best.npz``: a kill between the
    two writes leaves a best.npz one epoch ahead of checkpoint.npz, and the resumed run
    trains that epoch again to the same parameters and rewrites it."""
    arrays = {"params": vae.flat}
    arrays.update({f"opt.{k}": v for k, v in optim.state_arrays(opt_state).items()})
    meta = {"config": cfg.to_json(), "model": vae.config(), "opt_t": opt_state.t,
            "state": dataclasses.asdict(rs)}
    if best:
        save_checkpoint(out / BEST_NAME, arrays, meta)
    path = save_checkpoint(out / "checkpoint.npz", arrays, meta)
    write_metrics(out / "metrics.csv", rs.history)
    return path


METRIC_KEYS = ("epoch", "step", "train_loss", "train_recon", "train_kl", "train_objective",
               "test_loss", "test_recon", "test_kl", "test_active", "seconds")


def write_metrics(path: Path, rows: list[dict]) -> None:
    buf = io.StringIO()
    w = csv.DictWriter(buf, METRIC_KEYS, extrasaction="ignore")
    w.writeheader()
    w.writerows(rows)
    tmp = path.with_suffix(".csv.tmp")
    tmp.write_text(buf.getvalue())
    os.replace(tmp, path)


def load_run(path) -> tuple[TrainConfig, VAE, object, RunState]:
    """Rebuild config, model (with its trained parameters), optimizer state and run
    state from a checkpoint file or run folder."""
    arrays, meta = load_checkpoint(path)
    try:
        cfg = TrainConfig.from_json(meta["config"])
        vae = cfg.build()
        opt_state = optim.init_state(cfg.optimizer, vae.flat)
        rs = RunState(**meta["state"])
        opt_t = meta.get("opt_t", 0)
        problem = _run_state_problem(rs, opt_t)
        if problem:
            raise ValueError(problem)
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{resolve_checkpoint(path)}: checkpoint content is not a minivae run ({e})") from None
    if arrays.get("params") is None or arrays["params"].shape != vae.flat.shape:
        raise CheckpointError(f"{resolve_checkpoint(path)}: parameters do not fit the stored config")
    vae.flat[...] = arrays["params"]
    for k, v in optim.state_arrays(opt_state).items():
        stored = arrays.get(f"opt.{k}")
        if stored is None or stored.shape != v.shape:
            raise CheckpointError(f"{resolve_checkpoint(path)}: optimizer state opt.{k} missing or mis-shaped")
        v[...] = stored
    return cfg, vae, opt_state._replace(t=opt_t), rs


def _run_state_problem(rs: RunState, opt_t) -> str | None:
    """What in a run state read from a checkpoint the training loop could not use, or None."""
    def number(v):  # as JSON reads them back; a diverged test loss may be inf or nan
        return type(v) in (int, float)

    if not all(type(v) is int and v >= 0 for v in (rs.epoch, rs.batch, rs.step, opt_t)):
        return "epoch, batch, step and opt_t must be integers >= 0"
    if not number(rs.seconds):
        return "seconds must be a number"
    sums = rs.train_sums
    if not (isinstance(sums, dict) and {"loss", "recon", "kl", "n"} <= sums.keys()
            and all(number(v) for v in sums.values())):
        return "train_sums must map loss, recon, kl and n to numbers"
    if not (isinstance(rs.history, list) and all(
            isinstance(row, dict) and all(v is None or number(v) for v in row.values()) for row in rs.history)):
        return "history must be a list of rows of numbers"
    if not (isinstance(rs.warnings, list) and all(
            isinstance(w, dict) and type(w.get("kind")) is str and type(w.get("epoch")) is int
            and type(w.get("text")) is str for w in rs.warnings)):
        return "warnings must be a list of {kind, epoch, text}"
    return None


# ---------------------------------------------------------------- progress
def _fmt_time(s: float) -> str:
    if not math.isfinite(s):
        return "?"
    s = int(round(s))
    return f"{s // 3600}h{s % 3600 // 60:02d}m" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


class Progress:
    """One status line, redrawn in place on a terminal (unless ``live`` is off);
    one line per epoch always."""

    def __init__(self, stream: TextIO, live: bool = True):
        self.stream = stream
        self.tty = live and hasattr(stream, "isatty") and stream.isatty()
        self.last = 0.0
        self.width = 0  # of the status line on screen, which a line overwrites

    def update(self, epoch, epochs, b, nb, loss, recon, kl, rate, eta):
        now = time.perf_counter()
        if not self.tty or now - self.last < 0.2:
            return
        self.last = now
        status = (f"epoch {epoch + 1}/{epochs}  step {b + 1}/{nb}  -ELBO {loss:7.2f}  "
                  f"recon {recon:7.2f}  KL {kl:6.2f}  {rate:,.0f} samples/s  ETA {_fmt_time(eta)}")
        self.stream.write("\r" + status.ljust(self.width))
        self.width = len(status)
        self.stream.flush()

    def line(self, text: str):
        if self.tty:  # overwrite the status line, then leave it
            text, self.width = "\r" + text.ljust(self.width), 0
        self.stream.write(text + "\n")
        self.stream.flush()


# ---------------------------------------------------------------- the loop
class _StopRequest:
    """Ctrl-C (SIGINT) only raises a flag; the loop stops at the next consistent point.

    An interrupt between the optimizer's in-place update and the bookkeeping of
    the step would save updated parameters with the old position, and the
    resumed run would apply that batch twice. A second Ctrl-C interrupts at once
    (and then nothing is saved: the previous checkpoint stays)."""

    def __init__(self):
        self.requested, self._old = False, None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)

    def check(self):
        if self.requested:
            raise KeyboardInterrupt


def keep_freed_memory(keep: int = 256 << 20) -> bool:
    """Ask glibc's malloc to keep up to ``keep`` bytes of freed memory for reuse (True if it could).

    A training step allocates its activations in the forward pass and frees them
    after the backward pass. By default glibc serves such blocks with fresh
    ``mmap``s or hands the freed top of the heap back to the OS, and the next
    step page-faults the memory in again: 2,400 faults per step at batch 512, a
    third of the step's time. Here every block up to 32 MiB comes from the heap
    and the heap keeps what it has. Elsewhere than glibc this does nothing.
    """
    try:
        mallopt = ctypes.CDLL(None).mallopt
        return mallopt(_M_MMAP_THRESHOLD, 32 << 20) == 1 and mallopt(_M_TRIM_THRESHOLD, keep) == 1
    except (OSError, AttributeError, TypeError):
        return False


_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD = -1, -3  # from glibc's <malloc.h>


def train(cfg: TrainConfig, out, resume: bool = False, progress: bool = True,
          stream: TextIO | None = None, figures: bool = True,
          data: Dataset | None = None, on_step: Callable[[int], None] | None = None) -> dict:
    """Train a VAE as ``cfg`` says, in the run folder ``out``; returns the final metrics row,
    with the run's findings under "warnings" (see below).

    With ``resume`` the run continues from ``out``'s checkpoint; its stored config
    must equal ``cfg`` except ``epochs`` (which may grow unless the learning rate
    decays over the epochs). Ctrl-C saves a checkpoint at the next consistent
    point and raises KeyboardInterrupt. ``progress`` turns the live status line
    on a terminal on or off; one line per epoch is always written to ``stream``.
    ``on_step(step)`` is called after every optimizer step (tests inject faults there).

    Every epoch's end is checked (:mod:`minivae.watch`). A diverged run raises
    :class:`TrainingError` naming the step, the loss and the advice; the diverged
    epoch is not saved, and ``best.npz`` keeps the best epoch. Posterior collapse
    and overfitting are written to ``stream`` as a line each when first seen and
    returned as dicts ``{"kind": "collapse" | "overfitting", "epoch", "text"}``
    in the row's "warnings" (those of earlier sessions of the run too).
    """
    out = Path(out)
    stream = sys.stdout if stream is None else stream  # looked up now: it may have been replaced
    run = _Run(cfg, out, resume, data, Progress(stream, progress), on_step)
    run.train()
    if figures:
        save_figures(run.vae, run.data, out, run.rs.history, cfg)
    return {**run.rs.history[-1], "warnings": list(run.rs.warnings)} if run.rs.history else {}


class _Run:
    """One training run: the model, the optimizer, the position (RunState) and the data,
    moved forward step by step (:meth:`step`), epoch by epoch (:meth:`end_epoch`)."""

    def __init__(self, cfg: TrainConfig, out: Path, resume: bool, data: Dataset | None, prog: Progress,
                 on_step: Callable[[int], None] | None):
        keep_freed_memory()  # the step's activations are reused, not page-faulted in anew (see there)
        if resume:
            stored, self.vae, self.opt_state, self.rs = load_run(out)
            _check_resume(stored, cfg, out)
        else:
            if (out / "checkpoint.npz").exists():
                raise TrainingError(f"{out} already holds a checkpoint: pass --resume to continue it, "
                                    f"or choose another --out")
            out.mkdir(parents=True, exist_ok=True)
            self.vae = cfg.build()
            self.opt_state = optim.init_state(cfg.optimizer, self.vae.flat)
            self.rs = RunState()
        (out / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
        self.cfg, self.out, self.prog, self.on_step = cfg, out, prog, on_step
        self.data = data if data is not None else load_dataset(cfg)
        self.batches = -(-len(self.data.x_train) // cfg.batch_size)           # per epoch
        self.workers = step_workers(cfg)
        self.consistent = True  # False between the optimizer's update and the step's bookkeeping
        self.t0 = None          # start of the timed part of the current epoch
        self.untrained = None   # the untrained model's test -ELBO, measured at the first epoch's end

    def train(self) -> None:
        """Epochs until ``cfg.epochs``; Ctrl-C saves at the next consistent point and re-raises."""
        cfg, rs = self.cfg, self.rs
        if rs.epoch >= cfg.epochs:
            self.prog.line(f"{self.out}: already trained for {rs.epoch} epochs")
        try:
            with _StopRequest() as stop, (parallel.pinned() if self.workers > 1 else contextlib.nullcontext()):
                while rs.epoch < cfg.epochs:
                    order = epoch_order(cfg.seed, rs.epoch, len(self.data.x_train))
                    self.t0, n0 = time.perf_counter(), rs.train_sums["n"]
                    while rs.batch < self.batches:
                        stop.check()
                        self.step(order[rs.batch * cfg.batch_size:(rs.batch + 1) * cfg.batch_size])
                        self.show_progress(n0)
                    self.end_epoch(n0)
                    stop.check()
        except KeyboardInterrupt:
            self.interrupted()
            raise

    def step(self, idx: np.ndarray) -> None:
        """One optimizer step on the examples ``idx`` (B,) of the training set."""
        cfg, rs, vae = self.cfg, self.rs, self.vae
        rng = batch_rng(cfg.seed, rs.epoch, rs.batch)
        xb = self.data.x_train[idx]                                                   # (B, D)
        if cfg.resolved_binarize() == "dynamic":
            xb = binarize(xb, rng)                                                    # fresh bits
        eps = rng.standard_normal((cfg.samples, len(idx), cfg.z_dim), dtype=vae.dtype)  # (S, B, K)
        c = one_hot(self.data.y_train[idx], dtype=vae.dtype) if cfg.conditional else None
        res = self.loss_and_grads(xb, eps, c, cfg.beta_at(rs.epoch + rs.batch / self.batches))
        _check_finite(res, rs, self.out)
        self.consistent = False
        grads = [res.grads[name] for name in vae.shapes]                              # laid out as vae.flat
        self.opt_state = optim.step(vae.flat, grads, self.opt_state, cfg.lr_at(rs.epoch), each=self.each)
        add_step(rs.train_sums, res, len(idx))
        rs.batch, rs.step = rs.batch + 1, rs.step + 1
        self.consistent = True
        if self.on_step is not None:
            self.on_step(rs.step)

    def loss_and_grads(self, xb: np.ndarray, eps: np.ndarray, c: np.ndarray | None, beta: float) -> LossAndGrads:
        """The step's mean loss and its gradients, on the step's workers (see :func:`split_loss_and_grads`)."""
        kw = dict(beta=beta, objective=self.cfg.objective, free_bits=self.cfg.free_bits)
        if self.workers == 1:
            return self.vae.loss_and_grads(xb, eps, c=c, **kw)
        return split_loss_and_grads(self.vae, xb, eps, self.workers, c, **kw)

    def each(self, fn, items) -> list:
        """``[fn(i) for i in items]`` on the step's workers (optimizer blocks, gradient sums)."""
        return parallel.pool_map(fn, items, self.workers)

    def show_progress(self, n0: int) -> None:
        """The live status line: the epoch's means so far, the speed, the time left."""
        rs, n = self.rs, len(self.data.x_train)
        done = rs.train_sums["n"]
        rate = (done - n0) / max(time.perf_counter() - self.t0, 1e-9)               # samples/s
        means = sum_means(rs.train_sums)
        self.prog.update(rs.epoch, self.cfg.epochs, rs.batch - 1, self.batches, means["train_loss"],
                         means["train_recon"], means["train_kl"], rate, ((self.cfg.epochs - rs.epoch) * n - done) / rate)

    def end_epoch(self, n0: int) -> None:
        """Evaluate (every ``eval_every`` epochs and after the last), stop if the run has
        diverged, record the epoch's row and findings, move to the next epoch, checkpoint
        (as best.npz too when its test -ELBO is the lowest so far), and print the epoch's
        line and any finding. The checks (:mod:`minivae.watch`) read the history only:
        a resumed run decides exactly as an uninterrupted one."""
        cfg, rs = self.cfg, self.rs
        seconds = time.perf_counter() - self.t0
        self.t0 = None
        train_means = sum_means(rs.train_sums)
        last = rs.epoch + 1 == cfg.epochs
        test = self.evaluate() if last or (rs.epoch + 1) % cfg.eval_every == 0 else None
        test = self.check_divergence(train_means["train_loss"], test)
        row = {"epoch": rs.epoch + 1, "step": rs.step, **train_means, **_test_columns(test),
               "seconds": rs.seconds + seconds}
        history = rs.history + [row]
        best = row["test_loss"] is not None and watch.best_row(history) is row
        found = watch.findings(history, self.untrained, None if test is None else test["kl_per_dim"], cfg,
                               {w["kind"] for w in rs.warnings}, self.best_file())
        trained = rs.train_sums["n"] - n0
        self.consistent = False  # the epoch's bookkeeping moves together
        rs.history.append(row)
        rs.warnings.extend(found)
        rs.seconds += seconds
        rs.epoch, rs.batch, rs.train_sums = rs.epoch + 1, 0, new_sums()
        self.consistent = True
        save_run(self.out, cfg, self.vae, self.opt_state, rs, best=best)
        rate = trained / max(seconds, 1e-9)
        eta = (cfg.epochs - rs.epoch) * len(self.data.x_train) / rate if rate > 0 else math.nan
        self.prog.line(f"epoch {row['epoch']}/{cfg.epochs}  train -ELBO {row['train_loss']:.2f} "
                       f"(recon {row['train_recon']:.2f}, KL {row['train_kl']:.2f})  "
                       + (f"test -ELBO {row['test_loss']:.2f} (rate {row['test_kl']:.2f}, "
                          f"{row['test_active']}/{cfg.z_dim} units active)  " if test else "")
                       + f"{rate:,.0f} samples/s  [{_fmt_time(rs.seconds)}, ETA {_fmt_time(eta)}]")
        for f in found:
            self.prog.line(f["text"])

    def evaluate(self, vae: VAE | None = None) -> dict:
        """:func:`evaluate_elbo` of the model (or ``vae``) on the test set."""
        c_test = one_hot(self.data.y_test, dtype=self.vae.dtype) if self.cfg.conditional else None
        return evaluate_elbo(self.vae if vae is None else vae, self.data.x_test, c=c_test)

    def check_divergence(self, train_loss: float, test: dict | None) -> dict | None:
        """Raise TrainingError, saving nothing, if the epoch's training -ELBO and the test
        -ELBO after it are both beyond :func:`minivae.watch.divergence_limit`; the test set
        is evaluated for it if this epoch had no evaluation. Returns ``test``, or that evaluation."""
        if self.untrained is None:  # the model as the config builds it: the same in every session
            self.untrained = self.evaluate(self.cfg.build())["loss"]
        rs = self.rs
        limit = watch.divergence_limit(self.untrained, rs.history)
        if not watch.exceeds(train_loss, limit):
            return test
        test = test or self.evaluate()
        if watch.exceeds(test["loss"], limit):
            raise TrainingError(watch.divergence_text(rs.step, rs.epoch + 1, train_loss, test["loss"],
                                                      self.untrained, limit, self.cfg.lr_at(rs.epoch),
                                                      _kept(self.out, rs.history)))
        return test

    def best_file(self) -> str | None:
        """The best epoch's checkpoint, if this run folder has one."""
        path = self.out / BEST_NAME
        return str(path) if path.exists() else None

    def interrupted(self) -> None:
        """Ctrl-C: save at a consistent point, or keep the last checkpoint if inside a step."""
        if not self.consistent:
            self.prog.line(f"interrupted inside a step: nothing saved; the last checkpoint in {self.out} is kept")
            return
        if self.t0 is not None:
            self.rs.seconds += time.perf_counter() - self.t0
        save_run(self.out, self.cfg, self.vae, self.opt_state, self.rs)
        self.prog.line(f"interrupted: checkpoint saved at epoch {self.rs.epoch + 1}, step {self.rs.step}; "
                       f"continue with --resume --out {self.out}")


def _check_resume(stored: TrainConfig, asked: TrainConfig, out: Path) -> None:
    a, b = stored.to_json(), asked.to_json()
    keys = [k for k in a if k != "epochs"]
    try:
        check_compatible(a, b, keys)
    except CheckpointError as e:
        raise TrainingError(f"{out}: {e}; only --epochs may change on --resume") from None
    if a["lr_final"] and a["epochs"] != b["epochs"]:
        raise TrainingError(f"{out}: the learning rate decays over the {a['epochs']} epochs of this run, "
                            f"so --epochs cannot change on --resume")


def _check_finite(res, rs: RunState, out: Path) -> None:
    # A NaN or inf anywhere in a gradient reaches its sum; one reduction instead of a mask.
    if math.isfinite(res.loss) and all(np.isfinite(g.sum()) for g in res.grads.values()):
        return
    bad = [name for name, v in (("reconstruction", res.recon), ("KL", res.kl)) if not math.isfinite(v)]
    what = f"the {' and '.join(bad)} term{'s' if len(bad) > 1 else ''}" if bad else "the gradient"
    raise TrainingError(f"step {rs.step + 1} (epoch {rs.epoch + 1}, batch {rs.batch + 1}): {what} became "
                        f"non-finite; stopped without saving it, {_kept(out, rs.history)} (try a smaller --lr)")


def _kept(out: Path, history: list[dict]) -> str:
    """What a run stopped by a bad step or epoch leaves in ``out``, for its message."""
    if not (out / "checkpoint.npz").exists():
        return "no checkpoint had been saved yet"
    best = watch.best_row(history)
    if best is None or not (out / BEST_NAME).exists():
        return f"the last good checkpoint in {out} is kept"
    return (f"the last good checkpoint in {out} is kept, and {BEST_NAME} beside it holds the best epoch, "
            f"{best['epoch']} (test -ELBO {best['test_loss']:.2f})")


def _test_columns(test: dict | None) -> dict:
    """A row's test columns from an evaluation (None where the epoch had none)."""
    if test is None:
        return dict.fromkeys(("test_loss", "test_recon", "test_kl", "test_active"))
    return {"test_loss": test["loss"], "test_recon": test["recon"], "test_kl": test["kl"],
            "test_active": test["active_units"]}


def save_figures(vae: VAE, data: Dataset, out: Path, history: list[dict], cfg: TrainConfig,
                 n: int = 2000) -> list[Path]:
    """The run's figures: prior samples, reconstructions, curves, latent scatter,
    latent traversals, and the decoded manifold when K = 2. Uses the first ``n``
    test examples. For a conditional VAE the samples are one row per class from
    the same z's (style held, content varied). For documents: the latent scatter,
    the curves, and ``top_words.txt`` (the words each latent direction promotes).
    Returns the paths written."""
    from . import plots  # matplotlib is imported only when figures are drawn

    rng = np.random.default_rng(EVAL_SEED)
    x, y = data.x_test[:n], data.y_test[:n]
    conditional = cfg.conditional
    c = one_hot(y, dtype=vae.dtype) if conditional else None
    mu, log_var = vae.encode(x, c)
    figures = {"curves.png": plots.training_curves(history)}
    if len(x) >= 2:
        figures["latent.png"] = plots.latent_scatter(mu, y)
    if cfg.dataset == "mnist":
        figures.update(_image_figures(vae, x, mu, log_var, c, rng, conditional))
    for name, fig in figures.items():
        plots.save(fig, out / name)
    paths = [out / name for name in figures]
    if cfg.dataset != "mnist":
        vocab = corpus_splits(cfg.dataset, cfg.data_dir)[0].vocab
        (out / "top_words.txt").write_text(top_words_text(vae, vocab, kl_per_dimension(mu, log_var)))
        paths.append(out / "top_words.txt")
    return paths


def _image_figures(vae: VAE, x, mu, log_var, c, rng: np.random.Generator, conditional: bool) -> dict:
    """File name -> Figure: samples, reconstructions, traversals (and the manifold when K = 2)."""
    from . import plots

    figures = {}
    if conditional:
        z = np.tile(rng.standard_normal((8, vae.z_dim)), (N_CLASSES, 1))      # (10*8, K): the same 8 z's
        classes = one_hot(np.repeat(np.arange(N_CLASSES), 8), dtype=vae.dtype)  # (10*8, 10)
        figures["samples.png"] = plots.image_grid(vae.decode_mean(z, classes), ncol=8,
                                                  title="one row per class, the same z in each column")
    else:
        figures["samples.png"] = plots.image_grid(vae.decode_mean(rng.standard_normal((64, vae.z_dim))),
                                                  title="samples from the prior (pixel means)")
    figures["reconstructions.png"] = plots.reconstructions(
        x[:16], vae.decode_mean(mu[:16], None if c is None else c[:16]))
    # traversals: the 8 dimensions with the most KL, each moved from -3 to 3 with the rest at 0
    dims = np.argsort(kl_per_dimension(mu, log_var))[::-1][:8]
    steps = np.linspace(-3, 3, 11)
    z = np.zeros((len(dims), len(steps), vae.z_dim), dtype=vae.dtype)     # (dims, steps, K)
    z[np.arange(len(dims))[:, None], :, dims[:, None]] = steps
    z = z.reshape(-1, vae.z_dim)
    c_trav = one_hot(np.zeros(len(z), int), dtype=vae.dtype) if conditional else None
    figures["traversals.png"] = plots.image_grid(
        vae.decode_mean(z, c_trav), ncol=len(steps),
        title="latent traversals: a row per dimension (most KL first), z_k from -3 to 3")
    if vae.z_dim == 2 and not conditional:
        figures["manifold.png"] = plots.manifold(vae.decode_mean)
    return figures


def top_words_text(vae: VAE, vocab, kl_dims: np.ndarray, k: int = 10) -> str:
    """For each latent dimension (most KL first): the words whose logits rise most
    when z moves from 0 to +2 along it, and those that fall most."""
    from .text import top_words

    K = vae.z_dim
    z = np.vstack([np.zeros(K), 2 * np.eye(K)]).astype(vae.dtype)      # (1 + K, K)
    logits = vae.decode(z)
    shift = logits[1:] - logits[0]                                       # (K, V)
    lines = []
    for d in np.argsort(kl_dims)[::-1]:
        lines.append(f"z{d} (KL {kl_dims[d]:.2f}): + {' '.join(top_words(shift[d], vocab, k))}"
                     f"  | - {' '.join(top_words(-shift[d], vocab, k))}")
    return "\n".join(lines) + "\n"
