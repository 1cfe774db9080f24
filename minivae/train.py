r"""Training loop: minibatches, Adam, progress, metrics, checkpoints, figures.

Every random draw of step $b$ of epoch $e$ (the batch's binarization and its
$\epsilon$) comes from a generator seeded with ``(seed, e, b)``, and the data
order of epoch $e$ from one seeded with ``(seed, e)``. The training state is
therefore the parameters, the optimizer moments and the position ``(e, b)``;
a run resumed from any checkpoint continues exactly as if it had never stopped.

A run folder holds ``config.json``, ``checkpoint.npz`` (written atomically, no
pickle), ``metrics.csv`` (rewritten from the checkpoint's history, so it never
disagrees with it) and the figures. Taught in lesson 6.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import math
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, TextIO

import numpy as np

from . import optim
from .checkpoint import CheckpointError, load_checkpoint, resolve_checkpoint, save_checkpoint
from .data import binarize, binarize_static, load_mnist, validate_data
from .likelihoods import LIKELIHOODS
from .nn import ACTIVATIONS
from .vae import VAE

__all__ = ["TrainConfig", "Dataset", "load_split", "load_dataset", "evaluate_elbo", "evaluate", "train", "load_run",
           "TrainingError", "MODEL_KEYS"]

#: test-set binarization and evaluation noise are fixed, so every run is scored alike.
EVAL_SEED = 20151231


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable run folder); the message says why."""


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. The CLI builds it; ``config.json`` stores it."""
    epochs: int = 60
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
    dataset: str = "mnist"
    train_size: int = 0     # 0: the whole training set; else its first n examples
    test_size: int = 0      # 0: the whole test set
    dtype: str = "float32"
    eval_every: int = 1     # test -ELBO every n epochs (and after the last)

    def __post_init__(self):
        object.__setattr__(self, "hidden", tuple(int(h) for h in self.hidden))
        checks = [
            (self.epochs >= 1, "epochs must be >= 1"),
            (self.z_dim >= 1, "z-dim must be >= 1"),
            (len(self.hidden) >= 0 and all(h >= 1 for h in self.hidden), "hidden widths must be >= 1"),
            (self.batch_size >= 1, "batch-size must be >= 1"),
            (math.isfinite(self.lr) and self.lr > 0, "lr must be a positive number"),
            (math.isfinite(self.lr_final) and self.lr_final >= 0, "lr-final must be a number >= 0"),
            (self.eval_every >= 1, "eval-every must be >= 1"),
            (math.isfinite(self.beta) and self.beta >= 0, "beta must be a number >= 0"),
            (math.isfinite(self.obs_scale) and self.obs_scale > 0, "obs-scale must be a positive number"),
            (self.train_size >= 0 and self.test_size >= 0, "train-size and test-size must be >= 0"),
            (self.seed >= 0, "seed must be >= 0"),
        ]
        for ok, msg in checks:
            if not ok:
                raise ValueError(msg)
        for name, value, choices in [
            ("likelihood", self.likelihood, LIKELIHOODS), ("activation", self.activation, ACTIVATIONS),
            ("optimizer", self.optimizer, optim.OPTIMIZERS), ("dataset", self.dataset, DATASETS),
            ("binarize", self.binarize, ("auto", "dynamic", "static", "none")),
            ("dtype", self.dtype, ("float32", "float64")),
        ]:
            if value not in choices:
                raise ValueError(f"unknown {name} {value!r}; choose one of {', '.join(choices)}")
        if self.resolved_binarize() != "none" and self.likelihood != "bernoulli":
            raise ValueError(f"binarize={self.binarize} only makes sense with the bernoulli likelihood")

    def lr_at(self, epoch: int) -> float:
        """The learning rate of epoch ``epoch`` (0-based): constant, or geometric
        from ``lr`` at the first epoch to ``lr_final`` at the last."""
        if not self.lr_final or self.epochs == 1:
            return self.lr
        return self.lr * (self.lr_final / self.lr) ** (epoch / (self.epochs - 1))

    def resolved_binarize(self) -> str:
        if self.binarize == "auto":
            return "dynamic" if self.likelihood == "bernoulli" else "none"
        return self.binarize

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["hidden"] = list(self.hidden)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise CheckpointError(f"config has unknown keys {sorted(unknown)}")
        return cls(**d)

    def model(self) -> VAE:
        return VAE(x_dim=self._x_dim, hidden=self.hidden, z_dim=self.z_dim, likelihood=self.likelihood,
                   activation=self.activation, seed=self.seed, dtype=self.dtype, obs_scale=self.obs_scale)

    @property
    def _x_dim(self) -> int:
        return DATASET_DIMS[self.dataset]


#: the keys that fix a checkpoint's arrays; a resumed run may not change them.
MODEL_KEYS = ("dataset", "z_dim", "hidden", "likelihood", "activation", "optimizer", "dtype")

DATASETS = ("mnist",)
DATASET_DIMS = {"mnist": 784}


@dataclass(frozen=True)
class Dataset:
    """Training and test data of one run, validated for its likelihood."""
    x_train: np.ndarray  # (N, D)
    y_train: np.ndarray  # (N,)
    x_test: np.ndarray   # (M, D), binarized once with EVAL_SEED when training binarizes
    y_test: np.ndarray   # (M,)


def load_split(cfg: TrainConfig, split: str) -> tuple[np.ndarray, np.ndarray]:
    """One split ("train" or "test") as the config asks: subset, validated, in the
    config's dtype, binarized as the config says (the test set once, with EVAL_SEED)."""
    x, y = load_mnist(split)
    n = cfg.train_size if split == "train" else cfg.test_size
    if n:
        x, y = x[:n], y[:n]
    x = validate_data(x, cfg.likelihood, f"{split} data").astype(cfg.dtype, copy=False)
    mode = cfg.resolved_binarize()
    if mode == "static" or (split == "test" and mode != "none"):
        x = binarize_static(x, EVAL_SEED if split == "test" else cfg.seed)
    return x, y


def load_dataset(cfg: TrainConfig) -> Dataset:
    """Training and test data as the config asks (see :func:`load_split`)."""
    return Dataset(*load_split(cfg, "train"), *load_split(cfg, "test"))


def evaluate_elbo(vae: VAE, x: np.ndarray, seed: int = EVAL_SEED, batch: int = 1000) -> dict:
    """Mean -ELBO, distortion and rate over ``x`` (N, D) with one latent sample per
    example, the noise fixed by ``seed``. Returns {"loss", "recon", "kl"} in nats/example."""
    rng = np.random.default_rng(seed)
    recon = kl = 0.0
    for i in range(0, len(x), batch):
        xb = x[i:i + batch]
        t = vae.terms(xb, rng.standard_normal((len(xb), vae.z_dim)))
        recon -= float(t.log_px_z.sum())
        kl += float(t.kl.sum())
    n = len(x)
    return {"loss": (recon + kl) / n, "recon": recon / n, "kl": kl / n}


def evaluate(vae: VAE, x: np.ndarray, iw: int = 0, seed: int = EVAL_SEED,
             progress: Callable[[int], None] | None = None) -> dict:
    """Everything ``python -m minivae evaluate`` reports about a model on data x (N, D).

    Keys: "elbo" (dict from :func:`evaluate_elbo`), "active_units", "kl_per_dim" (K,),
    and with ``iw`` = S > 0: "iw_bound" (mean over examples of the S-sample bound
    L_S, nats), "nll" (= -iw_bound, the log-likelihood estimate of Burda et al.),
    "nll_se" (its Monte Carlo standard error), "ess" (mean effective sample size)
    and "iw_samples_per_s".
    """
    from .diagnostics import active_units, kl_per_dimension
    from .estimate import estimate_log_px

    mu, log_var = np.concatenate([np.stack(vae.encode(x[i:i + 1000])) for i in range(0, len(x), 1000)], axis=1)
    out = {"elbo": evaluate_elbo(vae, x, seed), "active_units": active_units(mu),
           "kl_per_dim": kl_per_dimension(mu, log_var)}
    if iw:
        start = time.perf_counter()
        est = estimate_log_px(vae, x, iw, np.random.default_rng(seed + 1), progress=progress)
        seconds = time.perf_counter() - start
        out.update(iw_bound=float(est.log_px.mean()), nll=-float(est.log_px.mean()),
                   nll_se=float(np.sqrt(np.sum(est.se ** 2)) / len(x)), ess=float(est.ess.mean()),
                   iw_samples_per_s=len(x) * iw / seconds, iw_seconds=seconds)
    return out


def batch_rng(seed: int, epoch: int, b: int) -> np.random.Generator:
    """The generator of step b of epoch ``epoch``: a pure function of the position."""
    return np.random.default_rng([seed, epoch, b])


def epoch_order(seed: int, epoch: int, n: int) -> np.ndarray:
    """The shuffled order of the n training examples in epoch ``epoch``."""
    return np.random.default_rng([seed, epoch, 2**32 - 1]).permutation(n)


# ---------------------------------------------------------------- run state
@dataclass
class RunState:
    """What a checkpoint holds besides the parameters: position, optimizer, history."""
    epoch: int = 0     # current epoch (0-based)
    batch: int = 0     # next batch within it
    step: int = 0      # optimizer steps taken
    train_sums: dict = field(default_factory=lambda: {"loss": 0.0, "recon": 0.0, "kl": 0.0, "n": 0})
    history: list = field(default_factory=list)  # one dict per finished epoch
    seconds: float = 0.0  # training time so far, over all sessions


def save_run(out: Path, cfg: TrainConfig, vae: VAE, opt_state, rs: RunState) -> Path:
    """Checkpoint the run atomically, then rewrite metrics.csv from its history."""
    arrays = {"params": vae.flat}
    arrays.update({f"opt.{k}": v for k, v in optim.state_arrays(opt_state).items()})
    meta = {"config": cfg.to_json(), "model": vae.config(), "opt_t": opt_state.t,
            "state": dataclasses.asdict(rs)}
    path = save_checkpoint(out / "checkpoint.npz", arrays, meta)
    write_metrics(out / "metrics.csv", rs.history)
    return path


METRIC_KEYS = ("epoch", "step", "train_loss", "train_recon", "train_kl",
               "test_loss", "test_recon", "test_kl", "seconds")


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
        vae = cfg.model()
        opt_state = optim.init_state(cfg.optimizer, vae.flat)
        rs = RunState(**meta["state"])
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
    return cfg, vae, opt_state._replace(t=int(meta.get("opt_t", 0))), rs


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

    def update(self, epoch, epochs, b, nb, loss, recon, kl, rate, eta):
        now = time.perf_counter()
        if not self.tty or now - self.last < 0.2:
            return
        self.last = now
        self.stream.write(f"\repoch {epoch + 1}/{epochs}  step {b + 1}/{nb}  -ELBO {loss:7.2f}  "
                          f"recon {recon:7.2f}  KL {kl:6.2f}  {rate:,.0f} samples/s  "
                          f"ETA {_fmt_time(eta)}   ")
        self.stream.flush()

    def line(self, text: str):
        self.stream.write(("\r" if self.tty else "") + text + " " * 8 + "\n")
        self.stream.flush()


# ---------------------------------------------------------------- the loop
def train(cfg: TrainConfig, out, resume: bool = False, progress: bool = True,
          stream: TextIO = sys.stdout, figures: bool = True,
          data: Dataset | None = None, on_step: Callable[[int], None] | None = None) -> dict:
    """Train a VAE as ``cfg`` says, in the run folder ``out``; returns the final metrics row.

    With ``resume`` the run continues from ``out``'s checkpoint (its stored config
    must match ``cfg`` in :data:`MODEL_KEYS` and the other training options except
    ``epochs``). Ctrl-C saves a checkpoint before exiting. ``progress`` turns the
    live status line on a terminal on or off; one line per epoch is always
    written to ``stream``. ``on_step(step)`` is
    called after every optimizer step (used by tests to inject faults).
    """
    out = Path(out)
    if resume:
        stored, vae, opt_state, rs = load_run(out)
        _check_resume(stored, cfg)
    else:
        if (out / "checkpoint.npz").exists():
            raise TrainingError(f"{out} already holds a checkpoint: pass --resume to continue it, "
                                f"or choose another --out")
        out.mkdir(parents=True, exist_ok=True)
        vae = cfg.model()
        opt_state = optim.init_state(cfg.optimizer, vae.flat)
        rs = RunState()
    (out / "config.json").write_text(json.dumps(cfg.to_json(), indent=2) + "\n")
    data = data if data is not None else load_dataset(cfg)
    n, B = len(data.x_train), cfg.batch_size
    nb = -(-n // B)
    gflat = np.zeros(vae.n_params, dtype=vae.dtype)
    grads = vae.views(gflat)
    dynamic = cfg.resolved_binarize() == "dynamic"
    prog = Progress(stream, progress)
    if rs.epoch >= cfg.epochs:
        prog.line(f"{out}: already trained for {rs.epoch} epochs")
    t0 = None  # start of the timed part of the current epoch
    try:
        while rs.epoch < cfg.epochs:
            order = epoch_order(cfg.seed, rs.epoch, n)
            lr = cfg.lr_at(rs.epoch)
            t0, n0 = time.perf_counter(), rs.train_sums["n"]
            while rs.batch < nb:
                idx = order[rs.batch * B:(rs.batch + 1) * B]
                rng = batch_rng(cfg.seed, rs.epoch, rs.batch)
                xb = data.x_train[idx]  # (B, D)
                if dynamic:
                    xb = binarize(xb, rng)
                eps = rng.standard_normal((len(idx), cfg.z_dim), dtype=vae.dtype)  # (B, K)
                res = vae.loss_and_grads(xb, eps, beta=cfg.beta, grads=grads)
                _check_finite(res, gflat, rs, out)
                opt_state = optim.step(vae.flat, gflat, opt_state, lr)
                s = rs.train_sums
                m = len(idx)
                s["loss"] += res.loss * m
                s["recon"] += res.recon * m
                s["kl"] += res.kl * m
                s["n"] += m
                rs.batch += 1
                rs.step += 1
                if on_step is not None:
                    on_step(rs.step)
                rate = (s["n"] - n0) / max(time.perf_counter() - t0, 1e-9)  # samples/s
                eta = ((cfg.epochs - rs.epoch) * n - s["n"]) / rate
                prog.update(rs.epoch, cfg.epochs, rs.batch - 1, nb, s["loss"] / s["n"],
                            s["recon"] / s["n"], s["kl"] / s["n"], rate, eta)
            epoch_seconds = time.perf_counter() - t0
            rs.seconds += epoch_seconds
            t0 = None
            last = rs.epoch + 1 == cfg.epochs
            nan = {"loss": math.nan, "recon": math.nan, "kl": math.nan}
            test = evaluate_elbo(vae, data.x_test) if last or (rs.epoch + 1) % cfg.eval_every == 0 else nan
            s = rs.train_sums
            row = {"epoch": rs.epoch + 1, "step": rs.step, "train_loss": s["loss"] / s["n"],
                   "train_recon": s["recon"] / s["n"], "train_kl": s["kl"] / s["n"],
                   "test_loss": test["loss"], "test_recon": test["recon"], "test_kl": test["kl"],
                   "seconds": rs.seconds}
            rs.history.append(row)
            rs.epoch, rs.batch = rs.epoch + 1, 0
            rs.train_sums = {"loss": 0.0, "recon": 0.0, "kl": 0.0, "n": 0}
            save_run(out, cfg, vae, opt_state, rs)
            rate = (s["n"] - n0) / max(epoch_seconds, 1e-9)
            eta = (cfg.epochs - rs.epoch) * n / rate if rate > 0 else math.nan
            prog.line(f"epoch {row['epoch']}/{cfg.epochs}  train -ELBO {row['train_loss']:.2f} "
                      f"(recon {row['train_recon']:.2f}, KL {row['train_kl']:.2f})  "
                      + (f"test -ELBO {row['test_loss']:.2f}  " if math.isfinite(row["test_loss"]) else "")
                      + f"{rate:,.0f} samples/s  "
                      f"[{_fmt_time(rs.seconds)}, ETA {_fmt_time(eta)}]")
    except KeyboardInterrupt:
        if t0 is not None:
            rs.seconds += time.perf_counter() - t0
        save_run(out, cfg, vae, opt_state, rs)
        prog.line(f"interrupted: checkpoint saved at epoch {rs.epoch + 1}, step {rs.step}; "
                  f"continue with --resume --out {out}")
        raise
    if figures:
        save_figures(vae, data, out, rs.history)
    return rs.history[-1] if rs.history else {}


def save_figures(vae: VAE, data: Dataset, out: Path, history: list[dict], n: int = 2000) -> list[Path]:
    """The run's figures: prior samples, reconstructions, curves, latent scatter,
    and the decoded manifold when K = 2. Uses the first ``n`` test examples."""
    from . import plots  # matplotlib is imported only when figures are drawn

    rng = np.random.default_rng(EVAL_SEED)
    x, y = data.x_test[:n], data.y_test[:n]
    mu, _ = vae.encode(x)
    paths = [
        plots.save_image_grid(vae.decode_mean(rng.standard_normal((64, vae.z_dim))), out / "samples.png",
                              title="samples from the prior (pixel means)"),
        plots.save_reconstructions(x[:16], vae.decode_mean(mu[:16]), out / "reconstructions.png"),
        plots.save_training_curves(history, out / "curves.png"),
        plots.save_latent_scatter(mu, y, out / "latent.png"),
    ]
    if vae.z_dim == 2:
        paths.append(plots.save_manifold(vae.decode_mean, out / "manifold.png"))
    return paths


def _check_resume(stored: TrainConfig, asked: TrainConfig) -> None:
    a, b = stored.to_json(), asked.to_json()
    for k in a:
        if k != "epochs" and a[k] != b[k]:
            raise TrainingError(f"the checkpoint was trained with {k}={a[k]!r} but this run asks for "
                                f"{k}={b[k]!r}; only --epochs may change on --resume")


def _check_finite(res, gflat: np.ndarray, rs: RunState, out: Path) -> None:
    # A NaN or inf anywhere in the gradient reaches the sum; one reduction instead of a mask.
    if math.isfinite(res.loss) and np.isfinite(gflat.sum()):
        return
    bad = [name for name, v in (("reconstruction", res.recon), ("KL", res.kl)) if not math.isfinite(v)]
    what = f"the {' and '.join(bad)} term" if bad else "the gradient"
    raise TrainingError(f"step {rs.step + 1} (epoch {rs.epoch + 1}, batch {rs.batch + 1}): {what} became "
                        f"non-finite; stopped without saving it, the last good checkpoint in {out} is kept "
                        f"(try a smaller --lr)")
