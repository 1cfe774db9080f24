"""What training watches for: the rules on made-up histories, then runs built to diverge,
to collapse and to overfit, on slices of the real MNIST, and a healthy run that raises nothing."""
import dataclasses
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivae import watch
from minivae.__main__ import main
from minivae.train import TrainConfig, TrainingError, load_dataset, load_run, train

ROOT = Path(__file__).resolve().parent.parent


def row(epoch, test_loss, train_loss=200.0, test_kl=10.0, test_active=5, step=None):
    return {"epoch": epoch, "step": 50 * epoch if step is None else step, "train_loss": train_loss,
            "test_loss": test_loss, "test_kl": test_kl, "test_active": test_active}


# ---------------------------------------------------------------- the rules
def test_the_divergence_limit_is_twice_the_untrained_loss_or_as_far_above_as_training_came_below():
    assert watch.divergence_limit(551.0, []) == 1102.0
    assert watch.divergence_limit(551.0, [row(1, 300.0), row(2, 100.0)]) == 1102.0  # |L0| > L0 - L*
    assert watch.divergence_limit(10.0, [row(1, -500.0)]) == 520.0                 # a density's loss near 0
    assert watch.divergence_limit(551.0, [row(1, None), row(2, 700.0)]) == 1102.0   # never below L0: L* = L0
    assert watch.exceeds(float("nan"), 1e9) and watch.exceeds(float("inf"), 1e9)
    assert not watch.exceeds(1102.0, 1102.0)


def test_collapse_needs_two_evaluations_in_a_row_from_step_100_on():
    cfg = TrainConfig(z_dim=4, beta=4.0)
    low = dict(test_kl=0.05, test_active=1)
    kinds = lambda hist: [f["kind"] for f in watch.findings(hist, 551.0, np.full(4, 0.01), cfg, set())]  # noqa: E731
    assert kinds([row(1, 300, **low, step=60), row(2, 290, **low, step=120)]) == []      # 60 < 100: start-up
    assert kinds([row(1, 300, **low, step=100), row(2, 290, **low, step=200)]) == ["collapse"]
    assert kinds([row(1, 300, step=100), row(2, 290, **low, step=200)]) == []           # once is not yet
    no_units = dict(test_kl=0.3, test_active=0)                                          # no unit active
    assert kinds([row(1, 300, **no_units, step=100), row(2, 290, **no_units, step=200)]) == ["collapse"]
    assert kinds([row(1, 300, **low, step=100), row(2, None, step=200)]) == []          # no new evaluation
    assert kinds([row(1, 300, **low, step=100), row(2, 290, **low, step=200)][:1]) == []
    text = watch.findings([row(1, 300, **low, step=100), row(2, 290, **low, step=200)], 551.0,
                          np.array([0.01, 0.02, 0.0, 0.015]), cfg, set())[0]["text"]
    for needle in ["posterior collapse at epoch 2", "rate 0.050 nats", "1 of 4 units active",
                   "z0 0.01 z1 0.02 z2 0.00 z3 0.01", "--warmup-epochs", "--free-bits", "beta below 1 (now 4)",
                   "lesson 7"]:
        assert needle in text, needle


def test_overfitting_needs_three_evaluations_clear_of_the_best_while_training_falls():
    # L0 = 551, best 150: the margin is (551 - 150) / 200 = 2.005 nats
    hist = [row(1, 200, 250), row(2, 150, 180), row(3, 153, 170), row(4, 152.1, 160), row(5, 155, 150)]
    found = watch.findings(hist, 551.0, None, TrainConfig(), set(), best_file="run/best.npz")
    assert [(f["kind"], f["epoch"]) for f in found] == [("overfitting", 5)]
    assert "best, 150.00 at epoch 2" in found[0]["text"] and "run/best.npz" in found[0]["text"]
    within = [*hist[:3], row(4, 152.0, 160), hist[4]]      # 152.0 is within 2.005 nats of the best: a plateau
    assert watch.findings(within, 551.0, None, TrainConfig(), set()) == []
    rising_train = [*hist[:4], row(5, 155, 185)]           # the training -ELBO rose too: not overfitting
    assert watch.findings(rising_train, 551.0, None, TrainConfig(), set()) == []
    assert watch.findings(hist, 551.0, None, TrainConfig(), {"overfitting"}) == []  # raised once per run
    assert watch.findings(hist[:4], 551.0, None, TrainConfig(), set()) == []        # two evaluations after


# ---------------------------------------------------------------- runs
def run(cfg, out, data=None, **kw):
    """train(), quietly: (the final row, what it printed)."""
    stream = io.StringIO()
    return train(cfg, out, progress=False, stream=stream, figures=False, data=data, **kw), stream.getvalue()


#: the learning rate grows tenfold every epoch past 0.003: epoch 1 trains, epoch 3 (at 1.4) blows up
DIVERGING = TrainConfig(epochs=4, z_dim=4, hidden=(64,), train_size=1000, test_size=200, lr=3e-3, lr_final=30.0)


def test_a_diverging_run_stops_naming_the_step_and_keeps_the_best_epoch(tmp_path):
    out = tmp_path / "r"
    with pytest.raises(TrainingError) as err:
        run(DIVERGING, out)
    message = str(err.value)
    assert message.startswith("training diverged at step ") and "\n" not in message
    assert "try a smaller --lr" in message and "the untrained model's" in message
    _, _, _, rs = load_run(out)                   # the diverged epoch was not saved
    stopped = rs.epoch + 1
    steps_per_epoch = 8  # 1,000 images in batches of 128
    assert f"step {rs.step + steps_per_epoch} (epoch {stopped})" in message
    tests = [r["test_loss"] for r in rs.history]
    best = int(np.argmin(tests)) + 1
    assert f"holds the best epoch, {best} " in message
    _, best_vae, _, best_rs = load_run(out / "best.npz")
    assert best_rs.epoch == best and best_rs.history == rs.history[:best]
    assert len((out / "metrics.csv").read_text().splitlines()) == 1 + rs.epoch
    # --resume replays the same steps and stops at the same place, saving nothing
    before = (out / "checkpoint.npz").read_bytes()
    with pytest.raises(TrainingError) as again:
        run(DIVERGING, out, resume=True)
    assert str(again.value) == message and (out / "checkpoint.npz").read_bytes() == before


def test_the_command_line_stops_a_diverging_run_with_one_line_and_a_non_zero_exit(tmp_path):
    cwd = tmp_path / "elsewhere"
    cwd.mkdir()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    r = subprocess.run([sys.executable, "-m", "minivae", "train", "--epochs", "4", "--z-dim", "4", "--hidden", "64",
                        "--train-size", "1000", "--test-size", "200", "--lr", "3e-3", "--lr-final", "30",
                        "--no-figures", "--no-progress", "--out", "run"],
                       cwd=cwd, env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.startswith("minivae train: error: training diverged at step ") and r.stderr.count("\n") == 1
    assert "--lr" in r.stderr and "best.npz" in r.stderr
    assert r.stdout.count("\nepoch ") == load_run(cwd / "run")[3].epoch  # the good epochs' lines
    assert (cwd / "run" / "best.npz").is_file()


#: a powerful decoder for 1,000 images and a KL weight of 30: the code is not worth its price
COLLAPSING = TrainConfig(epochs=8, z_dim=8, hidden=(64,), batch_size=32, train_size=1000, test_size=200, beta=30.0)


@pytest.fixture(scope="module")
def collapsing_data():
    return load_dataset(COLLAPSING)


def test_a_collapsing_run_warns_once_with_the_kl_per_unit_and_the_remedies(tmp_path, collapsing_data):
    final, printed = run(COLLAPSING, tmp_path / "r", collapsing_data)
    assert final["epoch"] == COLLAPSING.epochs                             # a warning, not a stop
    [found] = final["warnings"]
    assert found["kind"] == "collapse"
    lines = [line for line in printed.splitlines() if line.startswith("warning: ")]
    assert lines == [found["text"]]
    for needle in ["posterior collapse", " z7 ", "--warmup-epochs", "--free-bits", "beta below 1 (now 30)",
                   "lesson 7"]:
        assert needle in found["text"], needle
    history = load_run(tmp_path / "r")[3].history
    at = [r for r in history if r["epoch"] == found["epoch"]][0]
    assert at["test_kl"] < watch.COLLAPSE_RATE or at["test_active"] == 0


def test_warnings_survive_an_interruption_and_the_resumed_run_decides_as_the_whole(tmp_path, collapsing_data):
    whole, _ = run(COLLAPSING, tmp_path / "whole", collapsing_data)
    warned_at = whole["warnings"][0]["epoch"]
    assert warned_at < COLLAPSING.epochs

    def interrupt(step):
        if step == warned_at * 32 + 5:  # in the epoch after the warning (32 steps of 32 images an epoch)
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(COLLAPSING, tmp_path / "cut", collapsing_data, on_step=interrupt)
    resumed, printed = run(COLLAPSING, tmp_path / "cut", collapsing_data, resume=True)
    assert resumed["warnings"] == whole["warnings"] and "warning:" not in printed  # not raised twice


def test_the_command_line_lists_the_warnings_at_the_end(tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--epochs", "8", "--z-dim", "8", "--hidden", "64", "--batch-size", "32", "--train-size", "1000",
            "--test-size", "200", "--beta", "30", "--no-figures", "--no-progress", "--out", "r"]
    assert main(argv) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-2].startswith("final test -ELBO")
    assert lines[-1].startswith("training raised: posterior collapse (epoch ")


def test_an_overfitting_run_gets_a_note_naming_the_best_epoch(tmp_path):
    # 300 images binarized once, small batches: the test -ELBO bottoms out, then climbs
    cfg = TrainConfig(epochs=30, train_size=300, test_size=500, batch_size=16, lr=3e-3, binarize="static")
    final, printed = run(cfg, tmp_path / "r")
    [found] = final["warnings"]
    assert found["kind"] == "overfitting" and found["text"] in printed.splitlines()
    history = load_run(tmp_path / "r")[3].history
    best = min(history[:found["epoch"]], key=lambda r: r["test_loss"])
    assert f"at epoch {best['epoch']}" in found["text"] and str(tmp_path / "r" / "best.npz") in found["text"]
    assert load_run(tmp_path / "r" / "best.npz")[3].epoch == min(history, key=lambda r: r["test_loss"])["epoch"]


def test_the_default_model_s_first_epochs_raise_nothing(tmp_path):
    cfg = dataclasses.replace(TrainConfig(), epochs=3, train_size=10_000, test_size=2000)
    final, printed = run(cfg, tmp_path / "r")
    assert final["warnings"] == [] and "warning:" not in printed and "note:" not in printed
    assert f"/{cfg.z_dim} units active" in printed.splitlines()[-1]
