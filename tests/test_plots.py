"""Tests for minivae.plots: the tile layout, the PCA projection, and every figure (returned, and saved where asked)."""

import subprocess
import sys
from pathlib import Path
from statistics import NormalDist

import numpy as np
import pytest
from matplotlib.figure import Figure
from matplotlib.image import imread

from minivae import plots
from minivae.plots import (image_grid, latent_plane, latent_scatter, manifold, pca_2d, reconstructions, tile,
                           training_curves)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SHAPE = (6, 5)  # small, non-square images keep the figures fast and catch H/W mix-ups
D = SHAPE[0] * SHAPE[1]


def read_png(path: Path) -> np.ndarray:
    """Assert ``path`` is a non-empty PNG that is not a single flat colour; return its pixels (h, w, c)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, data[:8]
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[0] >= 100 and pixels.shape[1] >= 100, pixels.shape
    assert pixels[..., :3].std() > 0.01, "the figure is blank"
    return pixels


def saved(fig, path: Path) -> np.ndarray:
    """Assert a plotting helper returned its Figure and wrote it to ``path``; the pixels (h, w, c)."""
    assert isinstance(fig, Figure), type(fig)
    return read_png(path)


def probabilities(n: int, rng: np.random.Generator) -> np.ndarray:
    """n random images (n, D) of pixel probabilities in [0, 1]."""
    return rng.uniform(size=(n, D))


# --- tile -------------------------------------------------------------------

@pytest.mark.parametrize("N, ncol, rows, cols", [(7, None, 3, 3), (7, 2, 4, 2), (4, None, 2, 2),
                                                 (1, None, 1, 1), (5, 5, 1, 5), (3, 5, 1, 5)])
def test_tile_puts_image_i_in_its_block(N, ncol, rows, cols):
    H, W = SHAPE
    images = np.repeat(10.0 + np.arange(N), D).reshape(N, D)  # image i is filled with 10 + i
    out = tile(images, SHAPE, ncol=ncol, pad=-1.0)
    assert out.shape == (rows * (H + 1) - 1, cols * (W + 1) - 1)
    mask = np.zeros(out.shape, dtype=bool)
    for i in range(N):
        r, c = divmod(i, cols)
        block = out[r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W]
        assert np.all(block == 10.0 + i), (i, block)
        mask[r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W] = True
    assert np.all(out[~mask] == -1.0)  # gaps and unused cells hold the pad value


def test_tile_keeps_each_image_in_row_major_order():
    H, W = SHAPE
    rng = np.random.default_rng(0)
    images = rng.uniform(size=(5, D))
    before = images.copy()
    out = tile(images, SHAPE, ncol=3)
    for i in range(5):
        r, c = divmod(i, 3)
        np.testing.assert_array_equal(out[r * (H + 1):r * (H + 1) + H, c * (W + 1):c * (W + 1) + W],
                                      images[i].reshape(H, W))
    np.testing.assert_array_equal(images, before)
    assert np.all(out[H, :] == 1.0) and np.all(out[:, W] == 1.0)  # default pad is white


@pytest.mark.parametrize("images, ncol", [(np.zeros((4, D + 1)), None), (np.zeros(D), None),
                                          (np.zeros((0, D)), None), (np.zeros((4, D)), 0)])
def test_tile_rejects_bad_input(images, ncol):
    with pytest.raises(ValueError):
        tile(images, SHAPE, ncol=ncol)


# --- pca_2d -----------------------------------------------------------------

def test_pca_2d_recovers_a_dominant_direction():
    rng = np.random.default_rng(1)
    u = rng.standard_normal(8)
    u /= np.linalg.norm(u)
    t = rng.standard_normal(500)
    x = 3.0 + 5.0 * t[:, None] * u + 0.1 * rng.standard_normal((500, 8))  # (500, 8)
    proj, explained = pca_2d(x)
    assert proj.shape == (500, 2) and explained.shape == (2,)
    direction = (x - x.mean(axis=0)).T @ proj[:, 0]  # the axis the first coordinate measures
    cos = direction @ u / np.linalg.norm(direction)
    assert abs(cos) > 0.99, cos
    assert abs(np.corrcoef(proj[:, 0], t)[0, 1]) > 0.99
    assert explained[0] > 0.95 and explained[1] < 0.01


def test_pca_2d_explained_variance_fractions_are_exact():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((200, 3))
    z -= z.mean(axis=0)
    z = z @ np.linalg.inv(np.linalg.cholesky(z.T @ z / 200)).T  # sample covariance exactly I
    z *= np.array([3.0, 2.0, 1.0])                              # variances 9, 4, 1
    q, _ = np.linalg.qr(rng.standard_normal((5, 5)))
    x = 7.0 + np.column_stack([z, np.zeros((200, 2))]) @ q.T    # rotate into 5-D
    proj, explained = pca_2d(x)
    np.testing.assert_allclose(explained, [9 / 14, 4 / 14], rtol=1e-10)
    np.testing.assert_allclose(proj.mean(axis=0), 0.0, atol=1e-10)
    np.testing.assert_allclose(proj.T @ proj / 200, np.diag([9.0, 4.0]), atol=1e-9)


@pytest.mark.parametrize("K", [1, 2, 5])
def test_latent_plane_axes_place_a_latent_point_where_its_mean_is_drawn(K):
    mu = np.random.default_rng(K).standard_normal((50, K)) * np.arange(1, K + 1)  # (50, K)
    plane = latent_plane(mu)
    assert plane.xy.shape == (50, 2) and plane.center.shape == (K,) and plane.axes.shape == (2, K)
    drawn = (mu - plane.center) @ plane.axes.T                                    # (50, 2)
    np.testing.assert_allclose(plane.xy[:, 0], drawn[:, 0], atol=1e-12)
    if K == 1:  # the height is jitter, not a function of z
        assert np.all(drawn[:, 1] == 0) and 0 < np.abs(plane.xy[:, 1]).max() <= 0.1
    else:
        np.testing.assert_allclose(plane.xy, drawn, atol=1e-12)
    if K == 2:
        np.testing.assert_array_equal(plane.xy, mu)
    if K > 2:
        np.testing.assert_allclose(plane.xy, pca_2d(mu)[0], atol=1e-12)
        np.testing.assert_allclose(plane.explained, pca_2d(mu)[1])


def test_pca_2d_is_deterministic_in_sign_and_leaves_input_alone():
    x = np.random.default_rng(3).standard_normal((50, 4))
    before = x.copy()
    p1, _ = pca_2d(x)
    p2, _ = pca_2d(x[::-1])
    np.testing.assert_allclose(p1[::-1], p2, atol=1e-10)
    np.testing.assert_array_equal(x, before)


@pytest.mark.parametrize("shape", [(10, 1), (1, 5), (10,)])
def test_pca_2d_rejects_too_few_points_or_dimensions(shape):
    with pytest.raises(ValueError):
        pca_2d(np.zeros(shape))


# --- saved figures ----------------------------------------------------------

def test_module_does_not_import_pyplot():
    code = "import sys, minivae.plots; assert 'matplotlib.pyplot' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_image_grid_returns_its_figure_and_saves_only_where_asked(tmp_path, monkeypatch):
    rng = np.random.default_rng(4)
    target = tmp_path / "a" / "b" / "samples.png"
    saved(image_grid(probabilities(9, rng), shape=SHAPE, title="samples", path=target), target)
    monkeypatch.chdir(tmp_path / "a")
    fig = image_grid(probabilities(9, rng), shape=SHAPE)
    assert isinstance(fig, Figure) and fig.axes
    assert sorted(p.name for p in (tmp_path / "a").rglob("*")) == ["b", "samples.png"]  # nothing new written


def test_image_grid_shows_the_pixels(tmp_path):
    dark = saved(image_grid(np.zeros((16, D)), shape=SHAPE, path=tmp_path / "dark.png"), tmp_path / "dark.png")
    light = saved(image_grid(np.ones((16, D)), shape=SHAPE, path=tmp_path / "light.png"), tmp_path / "light.png")
    assert dark.shape == light.shape
    assert dark[..., :3].mean() < light[..., :3].mean() - 0.2


def test_reconstructions_is_a_wide_png(tmp_path):
    rng = np.random.default_rng(5)
    x = probabilities(20, rng)
    pixels = saved(reconstructions(x, 1 - x, shape=SHAPE, n=16, path=tmp_path / "recon.png"), tmp_path / "recon.png")
    assert pixels.shape[1] > 2 * pixels.shape[0]  # two rows of 16 images
    saved(reconstructions(x[:3], x[:3], shape=SHAPE, path=tmp_path / "few.png"), tmp_path / "few.png")  # n capped


def test_reconstructions_rejects_mismatched_shapes(tmp_path):
    with pytest.raises(ValueError):
        reconstructions(np.zeros((4, D)), np.zeros((3, D)), shape=SHAPE, path=tmp_path / "r.png")


def test_training_curves_tolerate_missing_test_loss(tmp_path):
    rows = [
        {"epoch": 1, "train_loss": 200.0, "train_recon": 190.0, "train_kl": 10.0, "test_loss": 198.0},
        {"epoch": 2, "train_loss": 150.0, "train_recon": 135.0, "train_kl": 15.0, "test_loss": float("nan")},
        {"epoch": 3, "train_loss": 120.0, "train_recon": 102.0, "train_kl": 18.0},
        {"epoch": 4, "train_loss": 110.0, "train_recon": 91.0, "train_kl": 19.0, "test_loss": 112.0},
    ]
    pixels = saved(training_curves(rows, path=tmp_path / "curves.png"), tmp_path / "curves.png")
    assert pixels.shape[1] > pixels.shape[0]  # two panels side by side
    no_test = [{k: v for k, v in row.items() if k != "test_loss"} for row in rows]
    saved(training_curves(no_test, path=tmp_path / "no_test.png"), tmp_path / "no_test.png")


@pytest.mark.parametrize("K", [1, 2, 5])
def test_latent_scatter_for_each_latent_size(tmp_path, K):
    rng = np.random.default_rng(6)
    labels = rng.integers(0, 10, size=300)
    mu = labels[:, None] * 0.3 + rng.standard_normal((300, K))  # (300, K)
    saved(latent_scatter(mu, labels, path=tmp_path / f"latent{K}.png"), tmp_path / f"latent{K}.png")


def test_latent_scatter_rejects_mismatched_labels(tmp_path):
    with pytest.raises(ValueError):
        latent_scatter(np.zeros((10, 2)), np.zeros(9, dtype=int), path=tmp_path / "l.png")


def test_manifold_decodes_the_quantile_grid_in_one_call(tmp_path):
    n, calls = 7, []

    def decode_mean(z):
        calls.append(np.array(z, copy=True))
        return 1 / (1 + np.exp(-(z @ np.ones((2, D)))))  # (M, D)

    saved(manifold(decode_mean, n=n, shape=SHAPE, path=tmp_path / "m" / "manifold.png"),
          tmp_path / "m" / "manifold.png")
    assert len(calls) == 1
    z = calls[0]
    assert z.shape == (n * n, 2)
    q = np.array([NormalDist().inv_cdf(p) for p in np.linspace(0.05, 0.95, n)])
    grid = z.reshape(n, n, 2)  # row i, column j of the figure
    np.testing.assert_allclose(grid[:, :, 0], np.tile(q, (n, 1)))           # z1 grows to the right
    np.testing.assert_allclose(grid[:, :, 1], np.tile(q[::-1, None], (1, n)))  # z2 grows upwards


def test_manifold_extent_spaces_points_evenly(tmp_path):
    calls = []

    def decode_mean(z):
        calls.append(z)
        return np.full((len(z), D), 0.5) + 0.1 * np.sin(z[:, :1])

    manifold(decode_mean, n=3, shape=SHAPE, extent=(-1.0, 1.0, 0.0, 4.0), path=tmp_path / "m.png")
    grid = calls[0].reshape(3, 3, 2)
    np.testing.assert_allclose(grid[0, :, 0], [-1.0, 0.0, 1.0])
    np.testing.assert_allclose(grid[:, 0, 1], [4.0, 2.0, 0.0])


@pytest.mark.parametrize("wrong", [lambda z: np.zeros((len(z), D + 1)),
                                   lambda z: np.zeros(len(z) * D),
                                   lambda z: np.zeros((len(z) - 1, D))])
def test_manifold_rejects_wrong_decode_shape(tmp_path, wrong):
    target = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="decode_mean"):
        manifold(wrong, n=4, shape=SHAPE, path=target)
    assert not target.exists()


def test_all_public_functions_are_exported():
    assert set(plots.__all__) == {"tile", "pca_2d", "pca_axes", "LatentPlane", "latent_plane", "save", "image_grid",
                                  "reconstructions", "training_curves", "latent_scatter", "manifold",
                                  "rate_distortion"}
