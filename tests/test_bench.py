"""The benchmark script: its GEMM floor has the step's products, and it runs end to end."""
import numpy as np
import pytest

from minivae import bench
from minivae.train import keep_freed_memory
from minivae.vae import VAE


def test_gemm_shapes_are_the_products_of_one_step():
    # (m, k, n) per product: forward, weight gradient, input gradient (none for enc.0: data)
    expected = [(5, 12, 7), (12, 5, 7),                  # enc.0
                (5, 7, 3), (7, 5, 3), (5, 3, 7),         # enc.mu
                (5, 7, 3), (7, 5, 3), (5, 3, 7),         # enc.log_var
                (5, 3, 7), (3, 5, 7), (5, 7, 3),         # dec.0
                (5, 7, 12), (7, 5, 12), (5, 12, 7)]      # dec.out
    assert bench.gemm_shapes(VAE(x_dim=12, hidden=(7,), z_dim=3), batch=5) == expected


def test_bench_runs_and_prints_every_figure(capsys):
    bench.main(["--hidden", "16", "--z-dim", "2", "--batch-sizes", "4,8", "--steps", "1", "--reps", "1",
                "--iw", "10", "--iw-images", "2", "--no-torch"])
    out = capsys.readouterr().out
    assert "of floor" in out and "importance samples/s" in out and "peak NumPy memory" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["4"], ["8"])]
    assert [r[0] for r in rows] == ["4", "8"] and all(r[-1] == "torch)" for r in rows)


def test_freed_memory_is_reused_without_page_faults():
    resource = pytest.importorskip("resource")
    if not keep_freed_memory():
        pytest.skip("not glibc's malloc")

    def step():  # a forward pass's arrays, alive together, then freed
        a = np.ones((512, 784), np.float32)
        b = np.exp(a)
        return float(a.sum() + b.sum())
    for _ in range(3):
        step()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(20):
        step()
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
    assert faults < 200  # each step touches 800 pages; reused memory faults none of them
