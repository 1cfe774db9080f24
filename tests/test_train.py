"""The trainer and the command line, on a small slice of the real MNIST."""
import dataclasses
import os
import io
import json
import subprocess
import sys

import numpy as np
import pytest

from minivae.__main__ import main
from minivae.checkpoint import CheckpointError, load_checkpoint
from minivae.train import TrainConfig, TrainingError, load_run, train

SMALL = TrainConfig(epochs=2, z_dim=4, hidden=(32,), batch_size=64, train_size=300, test_size=100)


def run(cfg=SMALL, out=None, **kw):
    kw.setdefault("figures", False)
    return train(cfg, out, progress=True, stream=io.StringIO(), **kw)


def test_run_folder_holds_config_metrics_and_a_loadable_checkpoint(tmp_path):
    row = run(out=tmp_path / "r")
    lines = (tmp_path / "r" / "metrics.csv").read_text().splitlines()
    assert lines[0].startswith("epoch,step,train_loss")
    assert len(lines) == 1 + SMALL.epochs
    assert json.loads((tmp_path / "r" / "config.json").read_text()) == SMALL.to_json()
    cfg, vae, opt_state, rs = load_run(tmp_path / "r")
    assert cfg == SMALL and rs.epoch == 2 and rs.batch == 0 and rs.step == 2 * 5 == opt_state.t
    assert row["test_loss"] == pytest.approx(row["test_recon"] + row["test_kl"])
    assert 100 < row["test_loss"] < 550  # nats per example: sums over 784 pixels, not means
    arrays, meta = load_checkpoint(tmp_path / "r")
    assert set(arrays) == {"params", "opt.m", "opt.v"}  # Adam's scratch buffer is not state


def test_same_seed_same_parameters_other_seed_differs(tmp_path):
    run(out=tmp_path / "a")
    run(out=tmp_path / "b")
    run(dataclasses.replace(SMALL, seed=1), out=tmp_path / "c")
    a, b, c = (load_run(tmp_path / k)[1].flat for k in "abc")
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize("stop_at", [3, 5, 7])  # mid-epoch, at an epoch boundary, in epoch 2
def test_interrupt_then_resume_reaches_the_same_parameters_bit_for_bit(tmp_path, stop_at):
    cfg = dataclasses.replace(SMALL, epochs=3)
    run(cfg, out=tmp_path / "whole")

    def interrupt(step):
        if step == stop_at:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, out=tmp_path / "cut", on_step=interrupt)
    assert load_run(tmp_path / "cut")[3].step == stop_at  # Ctrl-C saved where it stopped
    run(cfg, out=tmp_path / "cut", resume=True)
    _, whole, opt_w, rs_w = load_run(tmp_path / "whole")
    _, cut, opt_c, rs_c = load_run(tmp_path / "cut")
    np.testing.assert_array_equal(whole.flat, cut.flat)
    np.testing.assert_array_equal(opt_w.m, opt_c.m)
    np.testing.assert_array_equal(opt_w.v, opt_c.v)
    drop = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert drop(rs_w.history) == drop(rs_c.history)


def test_ctrl_c_inside_the_optimizer_step_still_resumes_bit_for_bit(tmp_path, monkeypatch):
    """SIGINT arriving between the in-place update and the bookkeeping of a step."""
    import os
    import signal

    from minivae import optim
    cfg = dataclasses.replace(SMALL, epochs=2)
    run(cfg, out=tmp_path / "whole")
    real, calls = optim.step, []

    def adam_then_sigint(*a, **kw):
        state = real(*a, **kw)
        calls.append(1)
        if len(calls) == 3:
            os.kill(os.getpid(), signal.SIGINT)  # lands after the update, before the bookkeeping
        return state

    monkeypatch.setattr(optim, "step", adam_then_sigint)
    with pytest.raises(KeyboardInterrupt):
        run(cfg, out=tmp_path / "cut")
    monkeypatch.setattr(optim, "step", real)
    assert load_run(tmp_path / "cut")[3].step == 3
    run(cfg, out=tmp_path / "cut", resume=True)
    np.testing.assert_array_equal(load_run(tmp_path / "whole")[1].flat, load_run(tmp_path / "cut")[1].flat)


def test_train_and_test_losses_are_the_same_quantity_whatever_beta(tmp_path):
    row = run(dataclasses.replace(SMALL, beta=4.0, epochs=1), out=tmp_path / "r")
    assert row["train_loss"] == pytest.approx(row["train_recon"] + row["train_kl"])
    assert row["train_objective"] == pytest.approx(row["train_recon"] + 4.0 * row["train_kl"])
    assert row["test_loss"] == pytest.approx(row["test_recon"] + row["test_kl"])


@pytest.mark.parametrize("changes", [
    dict(objective="iwae", samples=3), dict(samples=2, warmup_epochs=1.5, free_bits=0.1),
    dict(conditional=True, z_dim=2), dict(model="conv", channels=(4, 8)),
])
def test_model_variants_train_and_resume_exactly(tmp_path, changes):
    cfg = dataclasses.replace(SMALL, epochs=2, **changes)
    run(cfg, out=tmp_path / "whole", figures=True)

    def interrupt(step):
        if step == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, out=tmp_path / "cut", on_step=interrupt)
    row = run(cfg, out=tmp_path / "cut", resume=True)
    np.testing.assert_array_equal(load_run(tmp_path / "whole")[1].flat, load_run(tmp_path / "cut")[1].flat)
    assert np.isfinite(row["test_loss"])
    assert (tmp_path / "whole" / "traversals.png").exists() and (tmp_path / "whole" / "samples.png").exists()


def test_conv_model_trains_and_resumes(tmp_path):
    cfg = dataclasses.replace(SMALL, model="conv", channels=(4, 8), train_size=128, test_size=64, epochs=1)
    row = run(cfg, out=tmp_path / "r", figures=True)
    assert np.isfinite(row["test_loss"])
    cfg2, vae, _, _ = load_run(tmp_path / "r")
    assert type(vae).__name__ == "ConvVAE" and vae.channels == (4, 8)


def test_document_vae_on_the_topic_corpus(tmp_path, capsys):
    out = tmp_path / "t"
    assert main(["train", "--dataset", "topics", "--likelihood", "categorical", "--hidden", "32",
                 "--decoder-hidden", "none", "--z-dim", "2", "--epochs", "2", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test perplexity <=" in text
    lines = (out / "top_words.txt").read_text().splitlines()
    assert len(lines) == 2 and all("|" in line for line in lines)
    assert (out / "latent.png").exists()
    cfg, vae, _, _ = load_run(out)
    assert vae.decoder_hidden == () and vae.x_dim == 200
    with pytest.raises(ValueError, match="categorical"):
        TrainConfig(dataset="topics")


def test_warmup_ramps_the_kl_weight():
    cfg = TrainConfig(beta=2.0, warmup_epochs=4)
    assert [cfg.beta_at(e) for e in (0, 1, 2, 4, 10)] == [0.0, 0.5, 1.0, 2.0, 2.0]


def test_resume_can_extend_epochs_but_not_change_the_model(tmp_path):
    run(out=tmp_path / "r")
    row = run(dataclasses.replace(SMALL, epochs=3), out=tmp_path / "r", resume=True)
    assert row["epoch"] == 3
    with pytest.raises(TrainingError, match="written with z_dim=4, this run asks for z_dim=8"):
        run(dataclasses.replace(SMALL, z_dim=8), out=tmp_path / "r", resume=True)
    decaying = dataclasses.replace(SMALL, lr_final=1e-4)
    run(decaying, out=tmp_path / "d")
    with pytest.raises(TrainingError, match="cannot change"):
        run(dataclasses.replace(decaying, epochs=3), out=tmp_path / "d", resume=True)


def test_an_existing_run_is_never_overwritten(tmp_path):
    run(out=tmp_path / "r")
    before = (tmp_path / "r" / "checkpoint.npz").read_bytes()
    with pytest.raises(TrainingError, match="already holds a checkpoint"):
        run(out=tmp_path / "r")
    assert (tmp_path / "r" / "checkpoint.npz").read_bytes() == before


def test_a_non_finite_term_stops_training_naming_step_and_term(tmp_path, monkeypatch):
    from minivae.vae import VAE
    real = VAE.loss_and_grads
    calls = []

    def poisoned(self, *a, **kw):  # the KL goes bad at step 8, in epoch 2
        out = real(self, *a, **kw)
        calls.append(1)
        return out._replace(kl=float("nan"), loss=float("nan")) if len(calls) == 8 else out

    monkeypatch.setattr(VAE, "loss_and_grads", poisoned)
    with pytest.raises(TrainingError, match=r"step 8 \(epoch 2, batch 3\): the KL term became non-finite"):
        run(dataclasses.replace(SMALL, epochs=3), out=tmp_path / "r")
    cfg, vae, _, rs = load_run(tmp_path / "r")  # the last good checkpoint: end of epoch 1
    assert rs.epoch == 1 and rs.step == 5 and np.isfinite(vae.flat).all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")  # overflow is the point
def test_a_real_divergence_is_caught(tmp_path):
    wild = dataclasses.replace(SMALL, optimizer="sgd", lr=1e30)
    with pytest.raises(TrainingError, match="non-finite"):
        run(wild, out=tmp_path / "w")


def test_figures_are_written(tmp_path):
    run(dataclasses.replace(SMALL, z_dim=2, epochs=1), out=tmp_path / "r", figures=True)
    for name in ["samples", "reconstructions", "curves", "latent", "manifold"]:
        assert (tmp_path / "r" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name


def test_progress_line_reports_the_epoch(tmp_path):
    s = io.StringIO()
    train(SMALL, tmp_path / "r", stream=s, figures=False)
    lines = s.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("epoch 2/2  train -ELBO")
    assert "test -ELBO" in lines[1]
    assert all(line == line.rstrip() for line in lines)  # no padding where nothing is redrawn


def test_progress_on_a_terminal_redraws_one_line_with_rate_and_eta(tmp_path, monkeypatch):
    class Terminal(io.StringIO):
        def isatty(self):
            return True

    monkeypatch.setattr("minivae.train.time.perf_counter", iter(np.arange(0, 1e4, 0.25)).__next__)
    s = Terminal()
    train(SMALL, tmp_path / "r", stream=s, figures=False)
    text = s.getvalue()
    status = [p for p in text.split("\r") if p.startswith("epoch 1/2  step")]
    assert status and all("-ELBO" in p and "KL" in p and "samples/s" in p and "ETA" in p for p in status)
    assert "epoch 2/2  train -ELBO" in text


@pytest.mark.parametrize("kwargs,match", [
    (dict(z_dim=0), "z-dim"), (dict(lr=-1.0), "lr"), (dict(epochs=0), "epochs"),
    (dict(likelihood="no-such-likelihood"), "bernoulli, gaussian"), (dict(batch_size=0), "batch-size"),
    (dict(binarize="dynamic", likelihood="gaussian"), "bernoulli"),
    (dict(objective="iwae", beta=0.5), "iwae"), (dict(samples=0), "samples"), (dict(test_size=1), "test-size"),
])
def test_config_rejects_impossible_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TrainConfig(**kwargs)


# ---------------------------------------------------------------- command line
CLI_SMALL = ["--epochs", "1", "--z-dim", "2", "--hidden", "16", "--train-size", "200",
             "--test-size", "100", "--no-figures"]


def test_cli_train_evaluate_sample(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *CLI_SMALL, "--out", str(out)]) == 0
    assert "final test -ELBO" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(out)]) == 0
    text = capsys.readouterr().out
    assert "test -ELBO" in text and "bits/dim" in text and "NLL" not in text
    assert main(["evaluate", "--checkpoint", str(out), "--iw", "20", "--test-size", "30"]) == 0
    captured = capsys.readouterr()
    for needle in ["30 test examples", "IW bound L_20", "NLL estimate", "Monte Carlo s.e.", "active units",
                   "importance samples/s"]:
        assert needle in captured.out, needle
    assert "IW S=20: 30/30 images" in captured.err  # the progress display
    assert main(["sample", "--checkpoint", str(out / "checkpoint.npz"), "-n", "9"]) == 0
    assert (out / "samples-seed0.png").exists()
    assert main(["train", "--epochs", "2", "--out", str(out), "--resume", "--no-figures"]) == 0
    assert load_run(out)[3].epoch == 2


@pytest.mark.parametrize("argv,match", [
    (["train", "--z-dim", "0"], "positive integer"),
    (["train", "--lr", "-0.1"], "positive number"),
    (["train", "--lr", "nan"], "positive number"),
    (["train", "--hidden", "400,x"], "positive integer"),
    (["train", "--likelihood", "no-such-likelihood"], "invalid choice"),
    (["train", "--activation", "no-such-activation"], "invalid choice"),
    (["train", "--resume"], "--resume needs --out"),
    (["evaluate", "--checkpoint", "/nonexistent/run"], "no checkpoint at"),
    (["sample"], "required"),
])
def test_cli_errors_are_one_line(argv, match, capsys):
    try:
        code = main(argv)
    except SystemExit as e:  # argparse exits
        code = e.code
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert match in err and "\n" not in err and "Traceback" not in err


def test_cli_corrupt_checkpoint_is_one_line(tmp_path, capsys):
    bad = tmp_path / "checkpoint.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    assert main(["evaluate", "--checkpoint", str(bad)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a readable minivae checkpoint" in err and "\n" not in err


def test_python_dash_m_entry_point(tmp_path):
    r = subprocess.run([sys.executable, "-m", "minivae", "train", "--help"], capture_output=True, text=True)
    assert r.returncode == 0 and "--resume" in r.stdout and "--z-dim" in r.stdout
    r = subprocess.run([sys.executable, "-m", "minivae", "evaluate", "--checkpoint", str(tmp_path)],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("\n") == 1 and "no checkpoint at" in r.stderr


def test_loading_refuses_a_checkpoint_that_is_not_a_run(tmp_path):
    from minivae.checkpoint import save_checkpoint
    save_checkpoint(tmp_path / "checkpoint.npz", {"params": np.zeros(3)}, {"hello": 1})
    with pytest.raises(CheckpointError, match="not a minivae run"):
        load_run(tmp_path)


def test_lr_schedule_is_geometric_from_lr_to_lr_final():
    cfg = TrainConfig(epochs=5, lr=1e-3, lr_final=1e-5)
    lrs = [cfg.lr_at(e) for e in range(5)]
    assert lrs[0] == pytest.approx(1e-3) and lrs[-1] == pytest.approx(1e-5)
    np.testing.assert_allclose(np.diff(np.log10(lrs)), -0.5)
    assert TrainConfig(epochs=5, lr=1e-3).lr_at(4) == 1e-3  # lr_final 0: constant


def test_eval_every_skips_test_epochs_but_not_the_last(tmp_path):
    run(dataclasses.replace(SMALL, epochs=3, eval_every=2), out=tmp_path / "r")
    rows = load_run(tmp_path / "r")[3].history
    assert [r["test_loss"] is not None for r in rows] == [False, True, True]
    assert (tmp_path / "r" / "metrics.csv").read_text().splitlines()[1].split(",")[6] == ""  # not NaN


def test_sweep_trains_each_beta_and_plots_rate_against_distortion(tmp_path, capsys):
    out = tmp_path / "sweep"
    argv = ["sweep", "--betas", "0.5,4", "--epochs", "1", "--z-dim", "3", "--hidden", "16",
            "--train-size", "200", "--test-size", "100", "--out", str(out), "--no-progress"]
    assert main(argv) == 0
    rows = (out / "rate_distortion.csv").read_text().splitlines()
    assert rows[0] == "beta,rate,distortion,test_elbo" and len(rows) == 3
    assert (out / "rate_distortion.png").exists() and (out / "beta-4" / "traversals.png").exists()
    assert main(argv) == 0  # again: the finished runs are reused, not retrained
    assert "already trained" in capsys.readouterr().out
    assert main(["sweep", "--betas", "1,x"]) == 2


def test_sigkill_at_random_moments_then_resume_matches_an_uninterrupted_run(tmp_path):
    """Kill -9 the training process several times; every time the run folder holds a
    loadable checkpoint, and the resumed run ends bit for bit where a clean run ends."""
    import signal
    import time

    out = tmp_path / "killed"
    args = [sys.executable, "-m", "minivae", "train", "--epochs", "40", "--z-dim", "4", "--hidden", "128",
            "--batch-size", "64", "--train-size", "6000", "--test-size", "100", "--no-figures",
            "--no-progress", "--out"]
    # the same thread count for both runs: BLAS sums in another order with another count
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1")
    start = time.perf_counter()
    clean = subprocess.run(args + [str(tmp_path / "clean")], env=env, capture_output=True, text=True, timeout=300)
    whole = time.perf_counter() - start  # start-up included, which every resumed attempt pays again
    assert clean.returncode == 0, clean.stderr[-2000:]
    args = args + [str(out)]
    rng = np.random.default_rng(0)

    def mtime():
        try:
            return (out / "checkpoint.npz").stat().st_mtime_ns
        except FileNotFoundError:
            return None

    for attempt in range(4):  # killed at a random moment, four times
        saved = mtime()
        resume = ["--resume"] if saved is not None else []
        proc = subprocess.Popen(args + resume, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        while mtime() == saved and proc.poll() is None:  # wait out the start-up: until it saves an epoch
            time.sleep(0.005)
        # then at a random moment, maybe mid-save; four attempts never finish the 40 epochs
        time.sleep(rng.uniform(0, 0.1) * whole)
        assert proc.poll() is None, f"attempt {attempt} ended before its kill: {proc.stderr.read().decode()[-2000:]}"
        proc.send_signal(signal.SIGKILL)
        assert proc.wait() == -signal.SIGKILL
        load_run(out)  # never a torn or unloadable checkpoint (it exists: an epoch was saved)
    assert 4 <= load_run(out)[3].epoch < 40  # each attempt trained at least one epoch
    done = subprocess.run(args + ["--resume"], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    np.testing.assert_array_equal(load_run(tmp_path / "clean")[1].flat, load_run(out)[1].flat)
    assert load_run(out)[3].epoch == 40


# ---------------------------------------------------------------- both cores
def test_a_data_parallel_step_is_the_serial_step_up_to_rounding():
    from minivae import parallel
    from minivae.train import split_loss_and_grads
    from minivae.vae import VAE

    rng = np.random.default_rng(31)
    for kw, c_dim in [({}, 0), ({"objective": "iwae"}, 0), ({"beta": 0.3}, 3)]:
        vae = VAE(x_dim=12, hidden=(7,), z_dim=3, dtype="float64", seed=2, c_dim=c_dim)
        x = (rng.random((11, 12)) < 0.4).astype(float)
        eps = rng.standard_normal((2, 11, 3))
        c = np.eye(3)[rng.integers(0, 3, 11)] if c_dim else None
        serial = vae.loss_and_grads(x, eps, c=c, **kw)
        for workers in (2, 3):
            with parallel.pinned():
                split = split_loss_and_grads(vae, x, eps, workers, c, **kw)
            for field in ("loss", "recon", "kl"):
                assert getattr(split, field) == pytest.approx(getattr(serial, field), rel=1e-12), (kw, workers, field)
            for name in serial.grads:
                np.testing.assert_allclose(split.grads[name], serial.grads[name], rtol=1e-10, atol=1e-12,
                                           err_msg=f"{kw} {workers} {name}")


def test_step_workers_follow_the_batch_size_unless_told():
    from minivae import parallel
    from minivae.train import PARALLEL_ROWS, step_workers

    cores = parallel.threads()
    assert step_workers(dataclasses.replace(SMALL, batch_size=PARALLEL_ROWS)) == cores
    assert step_workers(dataclasses.replace(SMALL, batch_size=PARALLEL_ROWS - 1)) == 1
    assert step_workers(dataclasses.replace(SMALL, batch_size=PARALLEL_ROWS // 4, samples=4)) == cores
    assert step_workers(dataclasses.replace(SMALL, batch_size=4 * PARALLEL_ROWS, free_bits=0.1)) == 1
    assert step_workers(dataclasses.replace(SMALL, threads=3)) == 3
    with pytest.raises(ValueError, match="free bits"):
        dataclasses.replace(SMALL, threads=2, free_bits=0.1)


def test_data_parallel_runs_are_bit_identical_again_and_after_an_interrupt(tmp_path):
    cfg = dataclasses.replace(SMALL, epochs=2, threads=2)
    run(cfg, out=tmp_path / "a")
    run(cfg, out=tmp_path / "b")

    def interrupt(step):
        if step == 6:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run(cfg, out=tmp_path / "cut", on_step=interrupt)
    run(cfg, out=tmp_path / "cut", resume=True)
    a, b, cut = (load_run(tmp_path / k)[1].flat for k in ("a", "b", "cut"))
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, cut)
    serial = run(dataclasses.replace(cfg, threads=1), out=tmp_path / "serial")
    assert serial["train_loss"] == pytest.approx(load_run(tmp_path / "a")[3].history[-1]["train_loss"], rel=1e-3)


def test_the_test_elbo_does_not_depend_on_the_number_of_threads():
    from minivae.train import evaluate_elbo
    from minivae.vae import VAE

    vae = VAE(x_dim=12, hidden=(7,), z_dim=3, seed=4)
    x = (np.random.default_rng(5).random((2500, 12)) < 0.3).astype(np.float32)
    one, two, three = (evaluate_elbo(vae, x, batch=1000, threads=t) for t in (1, 2, 3))
    for other in (two, three):
        assert [one[k] for k in ("loss", "recon", "kl", "active_units")] == \
               [other[k] for k in ("loss", "recon", "kl", "active_units")]
        np.testing.assert_array_equal(one["kl_per_dim"], other["kl_per_dim"])
