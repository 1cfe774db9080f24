r"""Benchmarks: training and evaluation throughput, against the GEMM floor and PyTorch.

    python -m minivae.bench                      # default MLP VAE, batch sweep, IW evaluation
    python -m minivae.bench --hidden 200,200 --z-dim 50 --activation tanh
    python -m minivae.bench --model conv         # the convolutional VAE (32, 64 maps), batch 32 and 128

For each batch size it reports, as medians over interleaved repetitions:

* training samples/s of one full step (loss, gradients, Adam);
* the *GEMM floor*: the time of the same step's matrix products alone, run
  with the same shapes on the same thread pool, and the fraction of that floor
  the full step reaches (1.0 would mean everything but the GEMMs is free);
* if PyTorch is installed, the identical model trained by PyTorch eager (and
  ``torch.compile`` with ``--compile``): same shapes, float32, same threads,
  Adam, summed BCE-with-logits + closed-form KL, and the ratio minivae/PyTorch.
  For ``--model conv``: ``Conv2d`` layers (``F.conv2d``) and ``pixel_shuffle``,
  on the same parameters.
  PyTorch runs in a child process, as it would train alone, and is timed in
  turn with minivae.

Then importance-sampled evaluation (S = 5000 by default) on some test images:
importance samples/s, the projected time for the 10,000-image test set, and the
peak memory of the evaluation (NumPy's allocations, via tracemalloc).
Machines are noisy: every figure comes from one run, the contenders
interleaved, and medians are quoted.
"""
from __future__ import annotations

import argparse
import functools
import multiprocessing
import time
import tracemalloc

import numpy as np

from . import optim, parallel
from .convvae import ConvVAE
from .estimate import estimate_log_px
from .train import keep_freed_memory, split_loss_and_grads
from .vae import VAE

__all__ = ["train_step_timer", "gemm_shapes", "conv_gemm_shapes", "gemm_floor_timer", "torch_step_timer",
           "torch_loss", "main"]


# Seconds of rest before each timing. NumPy's BLAS threads and PyTorch's OpenMP
# threads spin for a while after their last task; without the rest, whichever
# contender runs next shares its cores with the other's spinning threads (in one
# process this halved PyTorch's measured speed here, which flattered minivae).
SETTLE = 0.3


def _seconds_per_call(fn, steps: int) -> float:
    """Mean seconds per call of ``fn`` over ``steps`` calls."""
    t = time.perf_counter()
    for _ in range(steps):
        fn()
    return (time.perf_counter() - t) / steps


def train_step_timer(vae: VAE, batch: int, rng: np.random.Generator, workers: int = 1):
    """A zero-argument function doing one full minivae training step on random binary data,
    as the trainer does it: on this thread, or data-parallel on ``workers`` threads with the
    BLAS pinned to one thread each (minivae.train.split_loss_and_grads)."""
    x = (rng.random((batch, vae.x_dim)) < 0.2).astype(vae.dtype)   # (B, D)
    eps = rng.standard_normal((1, batch, vae.z_dim), dtype=vae.dtype)  # (1, B, K)
    state = [optim.init_state("adam", vae.flat)]
    each = (lambda fn, items: parallel.pool_map(fn, items, workers)) if workers > 1 else None  # noqa: E731

    def step():
        res = vae.loss_and_grads(x, eps) if workers == 1 else split_loss_and_grads(vae, x, eps, workers)
        state[0] = optim.step(vae.flat, [res.grads[k] for k in vae.shapes], state[0], 1e-4, each=each)

    if workers == 1:
        return step

    def pinned_step():
        with parallel.pinned():
            step()
    return pinned_step


MODELS = {"mlp": VAE, "conv": ConvVAE}


def gemm_shapes(vae: VAE, batch: int) -> list[tuple[int, ...]]:
    """(m, k, n) of every matrix product one training step needs, or (b, m, k, n) for b
    products of one shape done as one stacked ``matmul``. For the MLP, per affine layer:
    the forward product, the weight gradient and (except for the first encoder layer,
    whose input is data) the input gradient. For the ConvVAE: see :func:`conv_gemm_shapes`."""
    if isinstance(vae, ConvVAE):
        return conv_gemm_shapes(vae, batch)
    reads_data = {"enc.0"} if vae.hidden else {"enc.mu", "enc.log_var"}
    shapes = []
    for name, (fan_in, fan_out) in ((k[:-2], s) for k, s in vae.shapes.items() if k.endswith(".W")):
        shapes.append((batch, fan_in, fan_out))       # y = x W
        shapes.append((fan_in, batch, fan_out))       # dW = x^T dy
        if name not in reads_data:
            shapes.append((batch, fan_out, fan_in))   # dx = dy W^T
    return shapes


def conv_gemm_shapes(vae: ConvVAE, batch: int) -> list[tuple[int, ...]]:
    """The matrix products of one ConvVAE training step (one sample per image), as the layers
    compute them: the encoder's stride-2 convolutions by im2col (forward, weight gradient,
    input gradient but for the data layer), the heads and the decoder's first affine layer
    as in the MLP, the decoder's first convolution by Winograd tiles (transforms and 36
    stacked products each way) and its output layer taps first; every bias gradient is a
    matrix-vector product (:func:`minivae.conv.column_sums`)."""
    (n_in, H, W), (f1, f2), K, C = vae.image_shape, vae.channels, vae.z_dim, vae.c_dim
    flat, P = f2 * (H // 4) * (W // 4), 4 * vae.likelihood.params_per_dim * n_in
    shapes = []
    for m, k, n, data in [(batch * (H // 2) * (W // 2), 9 * n_in, f1, True),  # enc.conv0: im2col
                          (batch * (H // 4) * (W // 4), 9 * f1, f2, False)]:  # enc.conv1
        shapes += [(m, k, n), (k, m, n)] + ([] if data else [(m, n, k)]) + [(1, m, n)]
    for m, k, n in [(batch, flat + C, K), (batch, flat + C, K), (batch, K + C, flat)]:  # heads, dec.fc
        shapes += [(m, k, n), (k, m, n), (m, n, k)]
    T = batch * -(-H // 16) * -(-W // 16)  # dec.conv0: Winograd 4x4 output tiles on the H/4 x W/4 maps
    shapes += [(36, 36, T * f2), (36, 9, f2 * 4 * f1), (36, T, f2, 4 * f1), (16, 36, T * 4 * f1),  # forward
               (36, 16, T * 4 * f1), (36, f2, T, 4 * f1), (9, 36, f2 * 4 * f1), (36, T, 4 * f1, f2),
               (36, 36, T * f2), (1, 16 * T, 4 * f1)]
    M = batch * (H // 2) * (W // 2)  # dec.conv1: taps first
    shapes += [(9 * P, f1, M), (M, 9 * P, f1), (9 * P, M, f1), (1, M, P)]
    return shapes


def gemm_floor_timer(vae: VAE, batch: int, rng: np.random.Generator):
    """A zero-argument function running exactly the step's GEMMs, into preallocated outputs."""
    ops = []
    for shape in gemm_shapes(vae, batch):
        *b, m, k, n = shape  # b: a stack of products, or none
        a = rng.standard_normal((*b, m, k), dtype=vae.dtype)
        w = rng.standard_normal((*b, k, n), dtype=vae.dtype)
        ops.append((a, w, np.empty((*b, m, n), vae.dtype)))

    def run():
        for a, b, out in ops:
            np.matmul(a, b, out=out)
    return run


def torch_step_timer(vae: VAE, batch: int, rng: np.random.Generator, compile: bool = False):
    """The identical model and step in PyTorch, or None if PyTorch is not installed."""
    try:
        import torch
    except ImportError:
        return None
    try:  # give PyTorch as many threads as NumPy's BLAS uses
        from threadpoolctl import threadpool_info
        torch.set_num_threads(max(i["num_threads"] for i in threadpool_info() if i["user_api"] == "blas"))
    except (ImportError, ValueError, KeyError):
        pass
    P = {k: torch.tensor(np.array(v, np.float32), requires_grad=True) for k, v in vae.params.items()}
    loss_fn = torch_loss(vae, P)
    if compile:
        loss_fn = torch.compile(loss_fn)
    opt = torch.optim.Adam(list(P.values()), lr=1e-4)
    x = torch.tensor((rng.random((batch, vae.x_dim)) < 0.2).astype(np.float32))
    eps = torch.tensor(rng.standard_normal((batch, vae.z_dim), dtype=np.float32))

    def step():
        opt.zero_grad(set_to_none=True)
        loss_fn(x, eps).backward()
        opt.step()
    return step


def torch_loss(vae: VAE, P: dict):
    """The model's loss in PyTorch, x (N, D), eps (N, K) -> the mean negative ELBO, on the
    tensors ``P`` (name -> tensor, the values of ``vae.params``): summed BCE with logits plus
    the closed-form KL."""
    import torch
    acts = {"relu": torch.relu, "tanh": torch.tanh, "sigmoid": torch.sigmoid,
            "softplus": torch.nn.functional.softplus,
            "leaky_relu": lambda t: torch.nn.functional.leaky_relu(t, 0.01)}
    nets = _torch_conv_nets if isinstance(vae, ConvVAE) else _torch_mlp_nets
    encode, decode = nets(vae, P, acts[vae.activation])

    def loss_fn(x, eps):
        mu, log_var = encode(x)
        z = mu + torch.exp(0.5 * log_var) * eps
        logits = decode(z)
        recon = torch.nn.functional.binary_cross_entropy_with_logits(logits, x, reduction="sum")
        kl = 0.5 * torch.sum(mu * mu + torch.exp(log_var) - 1 - log_var)
        return (recon + kl) / x.shape[0]
    return loss_fn


def _torch_mlp_nets(vae: VAE, P: dict, act):
    """The MLP's encoder x -> (mu, log_var) and decoder z -> logits, on PyTorch tensors ``P``."""
    L = len(vae.hidden)

    def encode(x):
        h = x
        for i in range(L):
            h = act(h @ P[f"enc.{i}.W"] + P[f"enc.{i}.b"])
        return h @ P["enc.mu.W"] + P["enc.mu.b"], h @ P["enc.log_var.W"] + P["enc.log_var.b"]

    def decode(z):
        h = z
        for i in range(L):
            h = act(h @ P[f"dec.{i}.W"] + P[f"dec.{i}.b"])
        return h @ P["dec.out.W"] + P["dec.out.b"]
    return encode, decode


def _torch_conv_nets(vae: ConvVAE, P: dict, act):
    """The ConvVAE's networks in PyTorch's own layers: NCHW ``conv2d`` and ``pixel_shuffle``
    (whose channel order the ConvVAE's parameters are stored in)."""
    from torch.nn.functional import conv2d, pixel_shuffle
    C, H, W = vae.image_shape
    f2 = vae.channels[1]

    def encode(x):
        h = act(conv2d(x.view(-1, C, H, W), P["enc.conv0.W"], P["enc.conv0.b"], stride=2, padding=1))
        h = act(conv2d(h, P["enc.conv1.W"], P["enc.conv1.b"], stride=2, padding=1)).flatten(1)
        return h @ P["enc.mu.W"] + P["enc.mu.b"], h @ P["enc.log_var.W"] + P["enc.log_var.b"]

    def decode(z):
        h = act(z @ P["dec.fc.W"] + P["dec.fc.b"]).view(-1, f2, H // 4, W // 4)
        h = act(pixel_shuffle(conv2d(h, P["dec.conv0.W"], P["dec.conv0.b"], padding=1), 2))
        return pixel_shuffle(conv2d(h, P["dec.conv1.W"], P["dec.conv1.b"], padding=1), 2).flatten(1)
    return encode, decode


def _torch_worker(conn, model: str, vae_args: dict, batch: int, compile: bool) -> None:
    """Child process: build the PyTorch step, then answer each request ``steps`` with
    the seconds per step of that many steps (0 ends it)."""
    keep_freed_memory()
    step = torch_step_timer(MODELS[model](**vae_args), batch, np.random.default_rng(0), compile)
    if step is not None:
        for _ in range(5):  # warm up (and compile)
            step()
    conn.send(step is not None)
    for steps in iter(conn.recv, 0):
        step(), step()  # untimed: wake the thread pool up again
        conn.send(_seconds_per_call(step, steps))


class _TorchProcess:
    """PyTorch's step in its own process, as it would train alone: the two libraries'
    thread pools and heaps do not meet. ``ok`` is False if PyTorch is not installed."""

    def __init__(self, model: str, vae_args: dict, batch: int, compile: bool):
        ctx = multiprocessing.get_context("spawn")
        self.conn, child = ctx.Pipe()
        self.proc = ctx.Process(target=_torch_worker, args=(child, model, vae_args, batch, compile), daemon=True)
        self.proc.start()
        self.ok = self.conn.recv()

    def seconds_per_step(self, steps: int) -> float:
        self.conn.send(steps)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(0)
        self.proc.join()


def bench_training(model: str, vae_args: dict, batches: list[int], steps: int, reps: int, compile: bool,
                   torch: bool = True, threads: int | None = None) -> None:
    n_workers = parallel.threads(threads)
    print(f"training step, float32, Adam ({steps} steps x {reps} interleaved repetitions, medians); "
          f"serial: one thread (the BLAS on all); parallel: {n_workers} workers, a part of the batch each, BLAS pinned")
    head = (f"{'batch':>6} {'serial/s':>9} {'step ms':>8} {'parallel/s':>10} {'step ms':>8} {'par/ser':>7} "
            f"{'GEMM ms':>8} {'of floor':>8} {'peak MiB':>8}")
    print(head + f" {'torch/s':>11} {'ser/t':>6} {'par/t':>6}" + (f" {'compiled/s':>11} {'ser/c':>6}" if compile else ""))
    rng = np.random.default_rng(0)
    for B in batches:
        timers = {}  # name -> seconds_per_step(steps)
        step = train_step_timer(MODELS[model](**vae_args), B, rng)
        peak = _peak_bytes(step)
        for name, fn in [("minivae", step), ("parallel", train_step_timer(MODELS[model](**vae_args), B, rng, n_workers)),
                         ("floor", gemm_floor_timer(MODELS[model](**vae_args), B, rng))]:
            for _ in range(5):  # warm up
                fn()
            timers[name] = functools.partial(_wake_and_time, fn)
        workers = [(name, _TorchProcess(model, vae_args, B, name == "compiled"))
                   for name in (("torch", "compiled") if compile else ("torch",)) if torch]
        timers.update((name, w.seconds_per_step) for name, w in workers if w.ok)
        times = {k: [] for k in timers}
        for _ in range(reps):
            for k, seconds_per_step in timers.items():
                time.sleep(SETTLE)
                times[k].append(seconds_per_step(steps))
        for _, w in workers:
            w.close()
        med = {k: float(np.median(v)) for k, v in times.items()}
        ser, par = med["minivae"], med["parallel"]
        line = (f"{B:>6} {B / ser:>9,.0f} {ser * 1e3:>8.2f} {B / par:>10,.0f} {par * 1e3:>8.2f} {ser / par:>7.2f} "
                f"{med['floor'] * 1e3:>8.2f} {med['floor'] / min(ser, par):>8.0%} {peak / 2**20:>8.1f}")
        if "torch" in med:
            line += f" {B / med['torch']:>11,.0f} {med['torch'] / ser:>6.2f} {med['torch'] / par:>6.2f}"
        else:
            line += f" {'(no torch)':>11} {'':>6} {'':>6}"
        if "compiled" in med:
            line += f" {B / med['compiled']:>11,.0f} {med['compiled'] / ser:>6.2f}"
        print(line, flush=True)


def _peak_bytes(fn) -> int:
    """Peak bytes NumPy allocates during one call of ``fn`` beyond what already exists
    (for a training step: activations, caches and temporaries; the parameters,
    gradients and Adam moments are allocated before)."""
    tracemalloc.start()
    fn()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def _wake_and_time(fn, steps: int) -> float:
    fn(), fn()  # untimed: wake the thread pool up again
    return _seconds_per_call(fn, steps)


def bench_evaluation(model: str, vae_args: dict, S: int, images: int, reps: int = 3, test_images: int = 10_000,
                     workers: int | None = None) -> None:
    """Importance-sampled evaluation, serial (one thread, the BLAS on all cores) against
    parallel (``workers`` threads, the BLAS pinned), interleaved, medians of ``reps``."""
    vae = MODELS[model](**vae_args)
    workers = parallel.threads(workers)
    x = (np.random.default_rng(1).random((images, vae.x_dim)) < 0.2).astype(vae.dtype)
    estimate_log_px(vae, x[:workers], min(S, 500), np.random.default_rng(2), threads=workers)  # warm up
    seconds = {"serial": [], "parallel": []}
    for _ in range(reps):
        for name, threads in (("serial", 0), ("parallel", workers)):
            time.sleep(SETTLE)
            start = time.perf_counter()
            estimate_log_px(vae, x, S, np.random.default_rng(3), threads=threads)
            seconds[name].append(time.perf_counter() - start)
    peak = _peak_bytes(lambda: estimate_log_px(vae, x[:2 * workers], S, np.random.default_rng(4), threads=workers))
    rate = {k: images * S / float(np.median(v)) for k, v in seconds.items()}
    print(f"importance-sampled evaluation, S={S}, {images} images x {reps} interleaved repetitions, medians: "
          f"serial {rate['serial']:,.0f} importance samples/s, parallel ({workers} workers) "
          f"{rate['parallel']:,.0f} importance samples/s, "
          f"{rate['parallel'] / rate['serial']:.2f}x; {test_images:,} test images would take "
          f"{test_images * S / rate['parallel'] / 60:.1f} min; peak NumPy memory {peak / 2**20:.0f} MiB")


def main(argv=None) -> None:
    p = argparse.ArgumentParser(prog="python -m minivae.bench", description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=tuple(MODELS), default="mlp",
                   help="mlp, or conv: the convolutional VAE of --model conv training (default mlp)")
    p.add_argument("--hidden", default="400", help="hidden widths of the MLP (default 400)")
    p.add_argument("--channels", default="32,64", help="the ConvVAE's feature maps (default 32,64)")
    p.add_argument("--z-dim", type=int, default=20)
    p.add_argument("--activation", default="relu")
    p.add_argument("--batch-sizes", help="default 32,128,512 for the MLP, 32,128 for the ConvVAE")
    p.add_argument("--steps", type=int, default=20, help="steps per timing (default 20)")
    p.add_argument("--reps", type=int, default=7, help="interleaved repetitions (default 7)")
    p.add_argument("--compile", action="store_true", help="also time torch.compile")
    p.add_argument("--no-torch", action="store_true", help="skip PyTorch even if it is installed")
    p.add_argument("--iw", type=int, default=5000, help="importance samples (default 5000; 0 skips)")
    p.add_argument("--iw-images", type=int, default=20, help="images timed for the IW evaluation")
    p.add_argument("--threads", type=int, default=None, help="workers of the parallel runs (default: the cores)")
    a = p.parse_args(argv)
    keep_freed_memory()  # as train() does; PyTorch, in the same process, profits alike
    if a.model == "conv":
        vae_args = dict(channels=tuple(int(c) for c in a.channels.split(",")), z_dim=a.z_dim,
                        activation=a.activation, dtype="float32")
        print(f"model conv 3x3 stride 2 ({a.channels.replace(',', ', ')} maps), sub-pixel decoder, "
              f"K={a.z_dim} {a.activation}, bernoulli")
    else:
        vae_args = dict(x_dim=784, hidden=tuple(int(h) for h in a.hidden.split(",")), z_dim=a.z_dim,
                        activation=a.activation, dtype="float32")
        print(f"model 784-{a.hidden.replace(',', '-')}-{a.z_dim} {a.activation}, bernoulli")
    batches = a.batch_sizes or ("32,128" if a.model == "conv" else "32,128,512")
    bench_training(a.model, vae_args, [int(b) for b in batches.split(",")], a.steps, a.reps, a.compile,
                   torch=not a.no_torch, threads=a.threads)
    if a.iw:
        bench_evaluation(a.model, vae_args, a.iw, a.iw_images, workers=a.threads)


if __name__ == "__main__":
    main()
