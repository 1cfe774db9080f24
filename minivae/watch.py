r"""What training watches for, once per epoch: divergence, posterior collapse, overfitting.

With $L_0$ the test -ELBO of the untrained model and $L^\star$ the best test -ELBO so far:
the run has *diverged* when the epoch's training -ELBO and the test -ELBO after it both
exceed $L_0 + \max(|L_0|,\ L_0 - L^\star)$; the posterior has *collapsed* when no latent
unit is active or the rate is under 0.1 nats, two evaluations in a row from step 100 on;
the model is *overfitting* when the test -ELBO has stayed above
$L^\star + (L_0 - L^\star)/200$ for three evaluations while the training -ELBO fell.

Every rule reads the run's metrics history (one row per epoch, as :mod:`minivae.train`
records it) and $L_0$, which the trainer measures on the model its config builds before
any step; nothing here runs inside a training step. A finding is a dict
``{"kind", "epoch", "text"}``; each kind is raised once per run. Taught in lessons 6
(training) and 7 (rate, active units, and the remedies for collapse).
"""
from __future__ import annotations

import numpy as np

__all__ = ["COLLAPSE_RATE", "COLLAPSE_PATIENCE", "COLLAPSE_AFTER", "OVERFIT_PATIENCE", "OVERFIT_MARGIN", "best_row",
           "divergence_limit", "exceeds", "divergence_text", "findings", "summary"]

#: nats: a code whose KL to the prior is below this tells the decoder almost nothing about x
COLLAPSE_RATE = 0.1
#: evaluations in a row that must look collapsed before the warning
COLLAPSE_PATIENCE = 2
#: optimizer steps before the first of them: a fresh encoder starts out looking collapsed
COLLAPSE_AFTER = 100
#: evaluations in a row that must stay above the best test -ELBO before the note
OVERFIT_PATIENCE = 3
#: the rise that counts, as a fraction of what training gained on the untrained model, L0 - L*
OVERFIT_MARGIN = 0.005


def evaluated(history: list[dict]) -> list[dict]:
    """The rows of the epochs whose test -ELBO was measured."""
    return [row for row in history if row.get("test_loss") is not None]


def best_row(history: list[dict]) -> dict | None:
    """The row with the lowest test -ELBO (the earliest of equals), or None before any evaluation."""
    rows = evaluated(history)
    return min(rows, key=lambda row: row["test_loss"]) if rows else None


def divergence_limit(untrained: float, history: list[dict]) -> float:
    r"""The -ELBO beyond which a run has diverged: $L_0 + \max(|L_0|, L_0 - L^\star)$.

    $L_0$ is the untrained model's test -ELBO, $L^\star$ the lowest of $L_0$ and the
    test -ELBOs in ``history``. Why these: a trained model that does worse than the
    untrained one has undone its training, and a blown-up run overshoots by orders of
    magnitude (a Bernoulli VAE at ``--lr 5`` reaches $10^{12}$ nats where $L_0$ is 551),
    so the margin can be wide. It is $|L_0|$, "twice the untrained loss", in nats of the
    run's own likelihood, so it scales with a sharp Gaussian's huge losses as with a
    Bernoulli's. $L_0 - L^\star$ takes over where $L_0$ is near 0 or negative (a
    continuous likelihood's losses can be): the run must climb as far above $L_0$ as it
    had come below it. A healthy run never gets near the limit: at ``--lr 0.1`` a
    first epoch averages 7,370 nats through its early spikes, and the test -ELBO after
    it is 211.
    """
    best = best_row(history)
    low = untrained if best is None else min(untrained, best["test_loss"])
    return untrained + max(abs(untrained), untrained - low)


def exceeds(loss: float, limit: float) -> bool:
    """``loss`` > ``limit``, a NaN counting as beyond any limit."""
    return not loss <= limit


def divergence_text(step: int, epoch: int, train_loss: float, test_loss: float, untrained: float,
                    limit: float, lr: float, kept: str) -> str:
    """The one-line message of a run stopped for divergence: where, how far, what to do, what is kept."""
    return (f"training diverged at step {step} (epoch {epoch}): -ELBO {_num(train_loss)} (training, the "
            f"epoch's mean) and {_num(test_loss)} (test), beyond {_num(limit)}, the limit set by the untrained "
            f"model's {_num(untrained)}; try a smaller --lr (this epoch's was {lr:.3g}); this epoch was not "
            f"saved, {kept}")


def collapsed(row: dict) -> bool:
    r"""No unit active, or a rate under COLLAPSE_RATE. The rate bounds the information the
    code holds about x, $I(x; z) \le \mathbb E_x \mathrm{KL}(q(z\mid x) \| p(z))$: 0.1 nats
    is less than a fifth of a bit per image, whatever the number of units. A row without
    ``test_active`` (written before it was recorded) is judged by its rate alone."""
    return row.get("test_active") == 0 or row["test_kl"] < COLLAPSE_RATE


def findings(history: list[dict], untrained: float, kl_per_dim: np.ndarray | None, cfg,
             raised: set[str], best_file: str | None = None) -> list[dict]:
    """The new findings at the end of the last epoch of ``history``, of kinds not in ``raised``.

    Only an evaluated epoch adds evidence. ``kl_per_dim`` (K,) is that evaluation's KL
    per latent unit, shown by the collapse warning; ``cfg`` is the run's TrainConfig,
    whose beta, warm-up and free bits the warning names; ``best_file``, where the best
    epoch's checkpoint is kept, goes in the overfitting note.
    """
    rows = evaluated(history)
    if not rows or rows[-1] is not history[-1]:
        return []
    row, out = rows[-1], []
    if "collapse" not in raised and _collapse(rows):
        out.append({"kind": "collapse", "epoch": row["epoch"], "text": _collapse_text(row, kl_per_dim, cfg)})
    best = _overfitting(rows, untrained)
    if "overfitting" not in raised and best is not None:
        out.append({"kind": "overfitting", "epoch": row["epoch"], "text": _overfitting_text(best, rows, best_file)})
    return out


def _collapse(rows: list[dict]) -> bool:
    """The last COLLAPSE_PATIENCE evaluations all collapsed, the first of them after
    COLLAPSE_AFTER steps.

    Why wait: an untrained encoder's code is near the prior already (a 784-16-2 model
    on MNIST starts at a rate of 0.02 nats), so every run starts out looking collapsed.
    With Adam at the default rate every healthy run measured had a rate above 0.1 nats
    within 40 steps (a 784-32-4 model on 300 images: 0.5 nats after 15 steps, 1.5 after
    20; the default model on 5,000 images: 4.5 after 40; a document VAE: 3.3 after 38);
    100 steps leaves a margin. Why two evaluations: a code that is still empty one
    evaluation later has been given up, not merely not yet learned.
    """
    recent = rows[-COLLAPSE_PATIENCE:]
    return (len(recent) == COLLAPSE_PATIENCE and recent[0]["step"] >= COLLAPSE_AFTER
            and all(collapsed(row) for row in recent))


def _overfitting(rows: list[dict], untrained: float) -> dict | None:
    r"""The best row, if the last OVERFIT_PATIENCE evaluations all came after it and exceed
    its test -ELBO by more than OVERFIT_MARGIN (L0 - L*), and the training -ELBO of the
    last is below that of the best epoch; else None.

    Why a margin: once the test -ELBO levels off it wanders from epoch to epoch by up to
    a nat (a Bernoulli VAE on 300 images, dynamically binarized: within 1.4 nats of its
    best for 12 epochs) while the training -ELBO keeps falling; a plateau is not yet
    overfitting. The margin is a share of what training gained on the untrained model,
    2 nats for a Bernoulli MNIST VAE, so it is in the run's own units whatever the
    likelihood. Why three evaluations: one or two high values are that wandering; three
    in a row, each clear of the margin, are a trend (the same VAE on 300 statically
    binarized images: best 153.6 at epoch 17, above 155.6 at epochs 24 to 26, 193 by 60).
    """
    best = min(rows, key=lambda row: row["test_loss"])
    recent = rows[-OVERFIT_PATIENCE:]
    gained = untrained - best["test_loss"]
    if len(rows) <= OVERFIT_PATIENCE or best in recent or not gained > 0:
        return None
    high = all(row["test_loss"] > best["test_loss"] + OVERFIT_MARGIN * gained for row in recent)
    return best if high and recent[-1]["train_loss"] < best["train_loss"] else None


def _collapse_text(row: dict, kl_per_dim: np.ndarray | None, cfg, shown: int = 20) -> str:
    active = row.get("test_active")
    units = ""
    if kl_per_dim is not None:
        order = np.argsort(kl_per_dim)[::-1][:shown]                         # the largest first
        units = "; KL per unit " + " ".join(f"z{k} {kl_per_dim[k]:.2f}" for k in sorted(order))
        if len(kl_per_dim) > shown:
            units += f" (the {shown} largest of {len(kl_per_dim)})"
    remedies = (f"--warmup-epochs (now {cfg.warmup_epochs:g}), --free-bits (now {cfg.free_bits:g}) "
                f"or a beta below 1 (now {cfg.beta:g})")
    if cfg.objective != "elbo":
        remedies += f", with --objective elbo (now {cfg.objective})"
    return (f"warning: posterior collapse at epoch {row['epoch']}: the code carries almost nothing about x "
            f"(rate {row['test_kl']:.3f} nats"
            + (f", {active} of {cfg.z_dim} units active" if active is not None else "") + f"{units}); "
            f"remedies: {remedies}; lesson 7 explains them")


def _overfitting_text(best: dict, rows: list[dict], best_file: str | None) -> str:
    now = rows[-1]
    return (f"note: overfitting at epoch {now['epoch']}: the test -ELBO has stayed above its best, "
            f"{best['test_loss']:.2f} at epoch {best['epoch']}, for {OVERFIT_PATIENCE} evaluations (now "
            f"{now['test_loss']:.2f}) while the training -ELBO fell from {best['train_loss']:.2f} to "
            f"{now['train_loss']:.2f}" + (f"; the best epoch's checkpoint is {best_file}" if best_file else ""))


#: how the final summary names each kind of finding
NAMES = {"collapse": "posterior collapse", "overfitting": "overfitting"}


def summary(found: list[dict]) -> str:
    """One line listing the findings of a run (empty if none), for the end of training."""
    if not found:
        return ""
    return "training raised: " + "; ".join(f"{NAMES[f['kind']]} (epoch {f['epoch']})" for f in found) + " (see above)"


def _num(v: float) -> str:
    """A loss for a message: two decimals, or three significant digits once it has blown up."""
    return f"{v:,.2f}" if abs(v) < 1e6 else f"{v:.3g}"
