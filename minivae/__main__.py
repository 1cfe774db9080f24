"""The command line: ``python -m minivae {train,sample,evaluate,explore,lessons,derivations} ...``.

Every problem the user can cause (a bad option, a missing or corrupt file, bad
data, a diverging run) ends in one line on stderr and a non-zero exit, never a
traceback. ``python -m minivae COMMAND --help`` lists the options.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np

from .checkpoint import CheckpointError, resolve_checkpoint
from .data import DataError, escape_line_breaks
from .lessons import DEFAULT_OUT, LESSONS_DIR
from .likelihoods import LIKELIHOODS
from .nn import ACTIVATIONS
from .objectives import OBJECTIVES, nats_to_bits_per_dim
from .optim import OPTIMIZERS
from .train import (DATASETS, N_CLASSES, TrainConfig, TrainingError, evaluate, load_run, load_split,
                    one_hot, train)
from .vae import DTYPES
from .watch import summary

# AssignError is a ValueError; ImportError: an optional extra is missing (the message says which)
USER_ERRORS = (DataError, CheckpointError, TrainingError, ValueError, OSError, ImportError)


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line naming the command and the fix."""

    def error(self, message):
        # argparse quotes the offending arguments as typed, line breaks included
        self.exit(2, f"{self.prog}: error: {escape_line_breaks(message)} (see {self.prog} --help)\n")


def _number(kind, lowest: float, what: str):
    """An argparse type: parse with ``kind``, then require a finite value >= lowest."""
    def parse(s: str):
        try:
            v = kind(s)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}") from None
        if not (v >= lowest and v < float("inf")):  # also rejects nan
            raise argparse.ArgumentTypeError(f"expected {what}, got {s!r}")
        return v
    return parse


positive_int = _number(int, 1, "a positive integer")
nonneg_int = _number(int, 0, "an integer >= 0")
positive_float = _number(float, float.fromhex("0x1p-1074"), "a positive number")
nonneg_float = _number(float, 0.0, "a number >= 0")


def hidden_widths(s: str) -> tuple[int, ...]:
    """'400' -> (400,), '200,200' -> (200, 200), 'none' -> () (a linear encoder/decoder)."""
    if s.strip().lower() == "none":
        return ()
    return tuple(positive_int(p) for p in s.split(","))


def build_parser() -> Parser:
    d = TrainConfig()
    p = Parser(prog="python -m minivae", description="Variational autoencoders in NumPy, by hand.")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser("train", help="train a VAE (default: MLP VAE on dynamically binarized MNIST)")
    opt = t.add_argument
    opt("--epochs", type=positive_int, help=f"passes over the training set (default {d.epochs})")
    opt("--model", choices=("mlp", "conv"), help="mlp, or conv: convolutional encoder and sub-pixel "
        "convolutional decoder (default mlp)")
    opt("--channels", type=hidden_widths, help="conv feature maps at H/2 and H/4 (default 32,64)")
    opt("--z-dim", type=positive_int, help=f"latent dimension K (default {d.z_dim})")
    opt("--hidden", type=hidden_widths, help="hidden widths, e.g. 400 or 200,200, or none "
        f"(default {','.join(map(str, d.hidden))})")
    opt("--likelihood", choices=tuple(LIKELIHOODS), help=f"decoder likelihood (default {d.likelihood})")
    opt("--activation", choices=tuple(ACTIVATIONS), help=f"hidden activation (default {d.activation})")
    opt("--batch-size", type=positive_int, help=f"examples per step (default {d.batch_size})")
    opt("--lr", type=positive_float, help=f"learning rate (default {d.lr})")
    opt("--lr-final", type=nonneg_float,
        help="decay the learning rate geometrically, epoch by epoch, to this value (default 0: constant)")
    opt("--eval-every", type=positive_int, help="test -ELBO every n epochs and after the last (default 1)")
    opt("--optimizer", choices=OPTIMIZERS, help=f"(default {d.optimizer})")
    opt("--beta", type=nonneg_float, help=f"weight of the KL term (default {d.beta})")
    opt("--seed", type=nonneg_int, help=f"seeds initialization, data order and noise (default {d.seed})")
    opt("--obs-scale", type=positive_float,
        help=f"fixed sigma of 'gaussian' / scale b of 'laplace' (default {d.obs_scale})")
    opt("--binarize", choices=("auto", "dynamic", "static", "none"),
        help="binarization of the pixels; auto = dynamic for bernoulli (default auto)")
    opt("--dataset", choices=DATASETS, help=f"(default {d.dataset})")
    opt("--data-dir", help="--dataset text: a folder of .txt files (sub-folders become labels)")
    opt("--decoder-hidden", type=hidden_widths,
        help="decoder hidden widths if not the mirror of --hidden; none = linear softmax decoder")
    opt("--conditional", action="store_true", default=None,
        help="conditional VAE: feed the one-hot digit label to encoder and decoder")
    opt("--objective", choices=tuple(OBJECTIVES), help="elbo, or iwae: the importance-weighted bound (default elbo)")
    opt("--samples", type=positive_int, help="latent samples per example per step, S (default 1)")
    opt("--warmup-epochs", type=nonneg_float, help="ramp the KL weight from 0 to beta over these epochs (default 0)")
    opt("--free-bits", type=nonneg_float, help="floor on each latent dimension's batch-mean KL, nats (default 0)")
    opt("--train-size", type=nonneg_int, help="use only the first n training images (default 0: all)")
    opt("--test-size", type=nonneg_int, help="use only the first n test images (default 0: all)")
    opt("--dtype", choices=DTYPES, help=f"(default {d.dtype})")
    opt("--threads", type=nonneg_int, help="worker threads of a step, each on part of the batch; 0 or absent: "
        "all cores from 2048 decoded rows a step (batch x samples) on, one below")
    opt("--out", type=Path, help="run folder (default: the first free runs/run-NNN)")
    opt("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    opt("--no-progress", action="store_true", help="print one line per epoch only")
    opt("--no-figures", action="store_true", help="skip the figures at the end")

    w = sub.add_parser("sweep", help="train one model per beta and plot rate against distortion")
    w.add_argument("--betas", default="0.5,1,2,4,8", help="comma-separated KL weights (default 0.5,1,2,4,8)")
    w.add_argument("--out", type=Path, default=Path("runs/sweep"), help="folder for the runs and the plot")
    w.add_argument("--epochs", type=positive_int, default=20, help="epochs per run (default 20)")
    w.add_argument("--z-dim", type=positive_int, default=10, help="latent dimension (default 10)")
    w.add_argument("--hidden", type=hidden_widths, default=(400,), help="hidden widths (default 400)")
    w.add_argument("--seed", type=nonneg_int, default=0)
    w.add_argument("--train-size", type=nonneg_int, default=0)
    w.add_argument("--test-size", type=nonneg_int, default=0)
    w.add_argument("--no-progress", action="store_true")

    le = sub.add_parser("lessons", help="the course: list, run, copy, or write the lessons as notebooks")
    les = le.add_subparsers(dest="action", parser_class=Parser, metavar="{list,run,copy,notebooks}")
    les.add_parser("list", help="the lessons, numbered (the default)")
    r = les.add_parser("run", help="run lesson N as a script")
    r.add_argument("number", type=positive_int, help="the lesson to run")
    r.add_argument("--quick", action="store_true", help="small sizes, as in CI (seconds)")
    r.add_argument("--out", type=Path, help=f"folder for figures and runs (default ./{DEFAULT_OUT})")
    c = les.add_parser("copy", help="copy the lesson scripts into DIR, to edit and run there")
    c.add_argument("dir", type=Path, help="a folder (created if needed; existing files are never overwritten)")
    nb = les.add_parser("notebooks", help="write every lesson as a Jupyter notebook (.ipynb) into DIR")
    nb.add_argument("dir", type=Path, help="a folder (created if needed; existing files are never overwritten)")
    nb.add_argument("--quick", action="store_true", help="set the notebooks' quick-mode switch on")
    nb.add_argument("--source", help="what the notebooks' first cell installs when minivae is missing "
                    "(a pip requirement: git+URL, a wheel's URL or file); default: where this minivae came from")

    dv = sub.add_parser("derivations", help="check every identity the lessons derive; exit 1 if one fails")
    dv.add_argument("--quick", action="store_true", help="fewer draws and grid points, as in CI (seconds)")

    ### BEGIN INSTRUCTOR: the student copy has no assign command
    asg = sub.add_parser("assign", help="the classroom: build the student copy and prove it")
    asa = asg.add_subparsers(dest="action", required=True, parser_class=Parser,
                             metavar="{build,check,grade,grade-all,autograder}")
    a = asa.add_parser("build", help="write the student copy into the new folder OUT")
    a.add_argument("out", type=Path, help="a new folder for the student copy")
    a = asa.add_parser("check", help="prove a student copy: its tests, stubbed, solved and with wrong answers")
    a.add_argument("out", type=Path, help="the student copy (from assign build)")
    a.add_argument("--python", type=Path, help="an interpreter that cannot import the solution "
                   "(default: a new virtual environment, made for the check)")
    a = asa.add_parser("grade", help="grade one submission (a folder or a .zip)")
    a.add_argument("submission", type=Path, help="the student's folder or zip")
    a.add_argument("--json", type=Path, help="write Gradescope's results.json here")
    a.add_argument("--timeout", type=positive_float, help="seconds per task (default: points.ini's)")
    a = asa.add_parser("grade-all", help="grade a folder of submissions into a grade sheet")
    a.add_argument("folder", type=Path, help="one sub-folder or .zip per student")
    a.add_argument("--csv", type=Path, required=True, help="the grade sheet to write")
    a.add_argument("--jobs", type=positive_int, help="submissions at a time (default: the machine's cores)")
    a.add_argument("--timeout", type=positive_float, help="seconds per task (default: points.ini's)")
    a = asa.add_parser("autograder", help="write a Gradescope autograder bundle (.zip)")
    a.add_argument("out", type=Path, help="the .zip to write")
    ### END INSTRUCTOR

    s = sub.add_parser("sample", help="decode samples from the prior of a trained model")
    s.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or run folder")
    s.add_argument("-n", type=positive_int, default=64, help="number of samples (default 64)")
    s.add_argument("--seed", type=nonneg_int, default=0, help="noise seed (default 0)")
    s.add_argument("--output", type=Path, help="PNG to write (default RUN/samples-seedS.png)")

    x = sub.add_parser("explore", help="write an interactive page that decodes the latent space live: "
                       "explore RUN [--out PAGE.html]")
    x.add_argument("run", type=Path, help="run folder or checkpoint file of an MLP VAE on MNIST")
    x.add_argument("--out", type=Path, help="the page to write (default RUN/explore.html)")

    e = sub.add_parser("evaluate", help="test -ELBO, importance-sampled NLL and latent diagnostics")
    e.add_argument("--checkpoint", type=Path, required=True, help="checkpoint file or run folder")
    e.add_argument("--iw", type=nonneg_int, default=0,
                   help="importance samples per test image for the NLL estimate (5000 in the "
                        "literature; default 0: skip)")
    e.add_argument("--test-size", type=nonneg_int, default=None,
                   help="first n test images (default: as in training)")
    e.add_argument("--threads", type=positive_int, default=None,
                   help="worker threads (default: the machine's cores; the numbers do not depend on it)")
    return p


TRAIN_FIELDS = [f.name for f in dataclasses.fields(TrainConfig)]


def config_from_args(args, base: TrainConfig) -> TrainConfig:
    given = {k: getattr(args, k) for k in TRAIN_FIELDS if getattr(args, k, None) is not None}
    return dataclasses.replace(base, **given)


def bits_text(nats: float, dims: int, likelihood: str) -> str:
    """Bits per dimension for discrete data; for a density (continuous likelihood on
    8-bit pixels) nats are not comparable to bits of a code, so say so."""
    if likelihood == "bernoulli":
        return f"{nats_to_bits_per_dim(nats, dims):.4f} bits/dim"
    return "bits/dim n/a for a density"


def next_run_dir(root: Path = Path("runs")) -> Path:
    i = 1
    while (root / f"run-{i:03d}").exists():
        i += 1
    return root / f"run-{i:03d}"


def cmd_train(args) -> int:
    if args.resume:
        if args.out is None:
            raise TrainingError("--resume needs --out, the run folder to continue")
        stored = load_run(args.out)[0]
        cfg = config_from_args(args, stored)
    else:
        cfg = config_from_args(args, TrainConfig())
    out = args.out if args.out is not None else next_run_dir()
    print(f"run folder: {out}")
    start = time.perf_counter()
    row = train(cfg, out, resume=args.resume, progress=not args.no_progress, figures=not args.no_figures)
    if row:
        print(f"final test -ELBO {row['test_loss']:.2f} nats/example "
              f"({bits_text(row['test_loss'], cfg.x_dim, cfg.likelihood)}), "
              f"recon {row['test_recon']:.2f}, KL {row['test_kl']:.2f}; "
              f"{row['epoch']} epochs, training {row['seconds']:.0f} s, this command "
              f"{time.perf_counter() - start:.0f} s; saved in {out}")
        if row["warnings"]:
            print(summary(row["warnings"]))
    if row and cfg.dataset != "mnist":
        print(f"test perplexity <= {perplexity_bound(row['test_loss'], cfg):.1f} (from the ELBO)")
    return 0


def perplexity_bound(nats_per_doc: float, cfg) -> float:
    """exp(sum of -log p over test documents / number of test words)."""
    x, _ = load_split(cfg, "test")
    return float(np.exp(nats_per_doc * len(x) / x.sum()))


def cmd_sweep(args) -> int:
    """beta-VAE sweep: each beta trains in OUT/beta-B (resumed if already there), then
    OUT/rate_distortion.png plots test rate vs test distortion; each run folder has
    its traversals.png."""
    from .plots import rate_distortion

    try:
        betas = [float(b) for b in args.betas.split(",")]
    except ValueError:
        raise ValueError(f"--betas must be comma-separated numbers, got {args.betas!r}") from None
    if not betas or any(not (b >= 0 and b < float("inf")) for b in betas):
        raise ValueError(f"--betas must be numbers >= 0, got {args.betas!r}")
    rows = []
    for beta in betas:
        cfg = TrainConfig(beta=beta, epochs=args.epochs, z_dim=args.z_dim, hidden=args.hidden, seed=args.seed,
                          train_size=args.train_size, test_size=args.test_size)
        out = args.out / f"beta-{beta:g}"
        print(f"beta = {beta:g}: {out}")
        done = (out / "checkpoint.npz").exists()
        rows.append(train(cfg, out, resume=done, progress=not args.no_progress))
    table = ["beta,rate,distortion,test_elbo"] + [
        f"{b:g},{r['test_kl']:.3f},{r['test_recon']:.3f},{-r['test_loss']:.3f}" for b, r in zip(betas, rows)]
    (args.out / "rate_distortion.csv").write_text("\n".join(table) + "\n")
    path = args.out / "rate_distortion.png"
    rate_distortion([r["test_kl"] for r in rows], [r["test_recon"] for r in rows],
                    [f"beta={b:g}" for b in betas], path=path)
    print("\n".join(table))
    print(f"wrote {path}")
    return 0


def cmd_lessons(args) -> int:
    from .lessons import copy_lessons, find_lessons, lesson_title, out_dir, run_lesson

    if args.action in (None, "list"):
        lessons = find_lessons()
        if not lessons:
            raise OSError(f"no lessons in {LESSONS_DIR}: this installation lacks its bundled lessons")
        for n, path in lessons.items():
            print(f"{n:2d}  {lesson_title(path)}   ({path.name})")
        print(f"run one with: python -m minivae lessons run N   (figures go to ./{DEFAULT_OUT}/)")
        return 0
    if args.action == "run":
        try:
            seconds = run_lesson(args.number, quick_mode=args.quick, out=args.out)
        except KeyError as e:
            raise ValueError(e.args[0]) from None
        print(f"lesson {args.number} done in {seconds:.1f} s; figures in {out_dir()}")
        return 0
    if args.action == "copy":
        paths = copy_lessons(args.dir)
        print(f"copied {len(paths)} files to {args.dir}; run one with: python {args.dir / paths[0].name}")
        return 0
    from .notebooks import write_notebooks

    paths = write_notebooks(args.dir, quick=args.quick, source=args.source)
    print(f"wrote {len(paths)} notebooks to {args.dir}" + (" (quick mode on)" if args.quick else ""))
    return 0


### BEGIN INSTRUCTOR
def cmd_assign(args) -> int:
    import tempfile

    from .assign import build_student_copy, isolated_python, prove

    if args.action in ("grade", "grade-all", "autograder"):
        return cmd_grade(args)
    if args.action == "build":
        stubbed = build_student_copy(args.out)
        n = sum(len(t) for t in stubbed.values())
        print(f"wrote the student copy to {args.out}: {n} solution regions in {len(stubbed)} files stubbed, "
              f"checked clean; see {args.out / 'ASSIGNMENT.md'}; prove it with: python -m minivae assign check "
              f"{args.out}")
        return 0
    if not (args.out / "ASSIGNMENT.md").is_file():
        raise ValueError(f"{args.out} is not a student copy (no ASSIGNMENT.md); make one with assign build")
    with tempfile.TemporaryDirectory() as tmp:
        python = args.python or isolated_python(Path(tmp) / "venv")
        proof = prove(args.out, python)
    print(proof)
    return 0 if proof.ok else 1


def cmd_grade(args) -> int:
    import json

    from .grade import (autograder_bundle, grade, grade_all, gradescope_json, load_settings, reference_exposure,
                        reports_folder, summary)

    if args.action == "autograder":
        print(f"wrote {autograder_bundle(args.out)}: upload it as the Gradescope autograder (setup.sh, "
              f"run_autograder and the reference package)")
        return 0
    settings = load_settings(seconds=args.timeout)
    exposure = reference_exposure()
    if exposure:
        print(f"minivae assign {args.action}: warning: {exposure}", file=sys.stderr)
    if args.action == "grade":
        report = grade(args.submission, settings)
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(gradescope_json(report, settings), indent=1))
        print(summary(report))
        return 0
    start = time.perf_counter()
    reports = grade_all(args.folder, args.csv, settings, jobs=args.jobs)
    for r in reports:
        print(f"{r.student:30s} {r.total:6.2f} / {r.max_total:g}")
    print(f"graded {len(reports)} submissions in {time.perf_counter() - start:.0f} s; grade sheet {args.csv}, "
          f"reports in {reports_folder(args.csv)}")
    return 0
### END INSTRUCTOR


def cmd_derivations(args) -> int:
    """The catalogue of :mod:`minivae.derivations` as a table, one row as each check finishes."""
    from .derivations import FULL, HEADER, QUICK, format_row, run
    from .verify import CONFIDENCE

    start = time.perf_counter()
    print(HEADER, flush=True)
    failed = total = 0
    for total, row in enumerate(run(quick=args.quick), 1):
        print(format_row(total, row), flush=True)
        failed += not row.result.ok
    sizes = QUICK if args.quick else FULL
    print(f"{total - failed} of {total} hold ({'quick: ' if args.quick else ''}{sizes.n:,} Monte Carlo draws "
          f"per expectation, judged at {100 * CONFIDENCE:g}% confidence; {time.perf_counter() - start:.1f} s)")
    return 1 if failed else 0


def cmd_sample(args) -> int:
    from .plots import image_grid

    cfg, vae, _, _ = load_run(args.checkpoint)
    z = np.random.default_rng(args.seed).standard_normal((args.n, vae.z_dim))  # (n, K)
    folder = resolve_checkpoint(args.checkpoint).parent
    path = args.output or folder / f"samples-seed{args.seed}.png"
    if cfg.conditional:  # the same n z's decoded as every class: one row per class
        labels = np.repeat(np.arange(N_CLASSES), args.n)
        images = vae.decode_mean(np.tile(z, (N_CLASSES, 1)), one_hot(labels, dtype=vae.dtype))
        image_grid(images, ncol=args.n, title="one row per class, the same z in each column", path=path)
    else:
        image_grid(vae.decode_mean(z), title=f"{args.n} samples from the prior", path=path)
    print(f"wrote {path}")
    return 0


def cmd_explore(args) -> int:
    from .explore import write_explorer

    path = write_explorer(args.run, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1024:.0f} KB): open it in a browser, no server needed; "
          f"{path.name}#selftest checks its decoder against NumPy")
    return 0


def cmd_evaluate(args) -> int:
    cfg, vae, _, rs = load_run(args.checkpoint)
    if args.test_size is not None:
        cfg = dataclasses.replace(cfg, test_size=args.test_size)
    x, y = load_split(cfg, "test")
    D, N = vae.x_dim, len(x)
    c = one_hot(y, dtype=vae.dtype) if cfg.conditional else None
    print(f"{resolve_checkpoint(args.checkpoint)}: {rs.epoch} epochs, {rs.step} steps, "
          f"trained {rs.seconds:.0f} s; {N} test examples")
    start = time.perf_counter()
    r = evaluate(vae, x, iw=args.iw, progress=_iw_progress(N, args.iw) if args.iw else None, c=c,
                 threads=args.threads)
    el = r["elbo"]
    bits = lambda nats: bits_text(nats, D, vae.likelihood_name)  # noqa: E731
    print(f"test -ELBO (1 sample)   {el['loss']:9.3f} nats  {bits(el['loss'])}   "
          f"distortion {el['recon']:.3f}  rate (KL) {el['kl']:.3f}")
    if args.iw:
        print(f"IW bound L_{args.iw:<6d}      {r['iw_bound']:9.3f} nats")
        print(f"NLL estimate  -L_{args.iw:<6d} {r['nll']:9.3f} nats  {bits(r['nll'])}   "
              f"+- {r['nll_se']:.3f} (Monte Carlo s.e.)   mean ESS {r['ess']:.0f} of {args.iw}")
    if cfg.dataset != "mnist":
        ppl = f"test perplexity         <= {perplexity_bound(el['loss'], cfg):.1f} (ELBO)"
        if args.iw:
            ppl += f", {perplexity_bound(r['nll'], cfg):.1f} (IW estimate)"
        print(ppl)
    kl = r["kl_per_dim"]
    top = ", ".join(f"z{k}: {kl[k]:.2f}" for k in np.argsort(kl)[::-1][:5])
    print(f"active units            {r['active_units']} of {vae.z_dim} (Var_x E_q[z_k] > 0.01); "
          f"KL per dimension, largest: {top}")
    took = time.perf_counter() - start
    rate = f" ({r['iw_samples_per_s']:,.0f} importance samples/s)" if args.iw else ""
    print(f"time                    {took:.1f} s{rate}")
    return 0


def _iw_progress(n: int, S: int):
    """A progress callback for the importance-sampled estimate, on stderr."""
    start, last = time.perf_counter(), [0.0]
    tty = sys.stderr.isatty()

    def report(done: int):
        now = time.perf_counter()
        if done < n and now - last[0] < (0.5 if tty else 30):
            return
        last[0] = now
        eta = (now - start) / done * (n - done)
        text = (f"IW S={S}: {done}/{n} images, {done * S / (now - start):,.0f} samples/s, "
                f"ETA {eta:.0f} s")
        sys.stderr.write(("\r" + text + "   ") if tty else text + "\n")
        if tty and done == n:
            sys.stderr.write("\n")
        sys.stderr.flush()

    return report


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        commands = {"train": cmd_train, "sweep": cmd_sweep, "sample": cmd_sample, "evaluate": cmd_evaluate,
                    "lessons": cmd_lessons, "derivations": cmd_derivations, "explore": cmd_explore}
        ### BEGIN INSTRUCTOR
        commands["assign"] = cmd_assign
        ### END INSTRUCTOR
        return commands[args.command](args)
    except USER_ERRORS as e:
        print(f"minivae {args.command}: error: {escape_line_breaks(str(e))}", file=sys.stderr)
        return 2
    except MemoryError as e:  # e.g. sample -n 1000000000
        print(f"minivae {args.command}: error: out of memory ({escape_line_breaks(str(e))}); "
              f"ask for smaller sizes", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"minivae {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
