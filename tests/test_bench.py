"""The benchmark script: its GEMM floor has the step's products, and it runs end to end."""
import numpy as np
import pytest

from minivae import bench
from minivae.convvae import ConvVAE
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


def test_conv_gemm_shapes_are_the_products_of_one_step():
    # 8x12 images, 2 and 3 maps, K=2: enc.conv0 on 4x6 outputs, enc.conv1 on 2x3, one Winograd
    # tile per image (2x3 maps fit in 4x4), dec.conv1 taps first on the 4x6 maps, 4 outputs each
    B, T = 5, 5
    expected = [(5 * 24, 9, 2), (9, 5 * 24, 2), (1, 5 * 24, 2),               # enc.conv0: data, no dx
                (5 * 6, 18, 3), (18, 5 * 6, 3), (5 * 6, 3, 18), (1, 5 * 6, 3),  # enc.conv1
                (5, 18, 2), (18, 5, 2), (5, 2, 18),                           # enc.mu
                (5, 18, 2), (18, 5, 2), (5, 2, 18),                           # enc.log_var
                (5, 2, 18), (2, 5, 18), (5, 18, 2),                           # dec.fc
                (36, 36, T * 3), (36, 9, 3 * 8), (36, T, 3, 8), (16, 36, T * 8),  # dec.conv0 forward
                (36, 16, T * 8), (36, 3, T, 8), (9, 36, 3 * 8), (36, T, 8, 3), (36, 36, T * 3), (1, 16 * T, 8),
                (36, 2, 5 * 24), (5 * 24, 36, 2), (36, 5 * 24, 2), (1, 5 * 24, 4)]  # dec.conv1
    assert bench.gemm_shapes(ConvVAE(image_shape=(1, 8, 12), channels=(2, 3), z_dim=2), batch=B) == expected


def test_conv_bench_runs_and_prints_every_figure(capsys):
    bench.main(["--model", "conv", "--channels", "2,3", "--z-dim", "2", "--batch-sizes", "4", "--steps", "1",
                "--reps", "1", "--iw", "4", "--iw-images", "1", "--no-torch"])
    out = capsys.readouterr().out
    assert "model conv" in out and "of floor" in out and "importance samples/s" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] == ["4"]]
    assert len(rows) == 1 and rows[0][-1] == "torch)" and float(rows[0][1].replace(",", "")) > 0


@pytest.mark.parametrize("model", [VAE(x_dim=64, hidden=(5,), z_dim=2, seed=3, dtype="float64"),
                                   ConvVAE(image_shape=(1, 8, 8), channels=(2, 3), z_dim=2, seed=3,
                                           dtype="float64")], ids=["mlp", "conv"])
def test_the_pytorch_model_is_the_same_model(model):
    """Same parameters, same data and noise: PyTorch's loss is minivae's, to round-off."""
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x, eps = (rng.random((3, 64)) < 0.3).astype(float), rng.standard_normal((3, 2))
    P = {k: torch.tensor(np.array(v)) for k, v in model.params.items()}
    loss = float(bench.torch_loss(model, P)(torch.tensor(x), torch.tensor(eps)))
    assert abs(loss - model.loss_and_grads(x, eps).loss) <= 1e-10 * abs(loss)


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
