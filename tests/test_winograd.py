"""Winograd's 3x3 convolution: the same function as the im2col convolution (forward and all
three gradients), its backward against finite differences, its constants, dtypes, purity."""
import numpy as np
import pytest

from minivae.conv import conv2d_backward, conv2d_forward
from minivae.gradcheck import check_backward
from minivae.winograd import AT, BT, G, winograd_conv3x3_backward, winograd_conv3x3_forward

# (N, H, W, C, F): whole tiles, partial tiles, a single pixel, one tile across and many down
SHAPES = [(2, 4, 4, 2, 3), (2, 7, 7, 3, 2), (1, 1, 1, 2, 2), (2, 5, 9, 1, 3), (1, 12, 3, 2, 1)]


def random_inputs(rng, shape, dtype=np.float64):
    N, H, W, C, F = shape
    return (rng.standard_normal((N, H, W, C)).astype(dtype), rng.standard_normal((F, C, 3, 3)).astype(dtype),
            rng.standard_normal(F).astype(dtype))


def test_one_dimensional_minimal_filtering():
    """A^T [(G g) * (B^T d)] is the correlation y_k = sum_i g_i d_{k+i}, k = 0..3, for any d and g."""
    rng = np.random.default_rng(0)
    for _ in range(5):
        d, g = rng.standard_normal(6), rng.standard_normal(3)
        expected = [d[k:k + 3] @ g for k in range(4)]
        np.testing.assert_allclose(AT @ ((G @ g) * (BT @ d)), expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", SHAPES)
def test_equals_the_im2col_convolution_forward_and_backward(shape):
    rng = np.random.default_rng(sum(shape))
    x, w, b = random_inputs(rng, shape)
    y, cache = conv2d_forward(x, w, b, stride=1, pad=1)
    yw, wcache = winograd_conv3x3_forward(x, w, b)
    np.testing.assert_allclose(yw, y, rtol=1e-11, atol=1e-11)
    dy = rng.standard_normal(y.shape)
    for g, gw in zip(conv2d_backward(dy, cache), winograd_conv3x3_backward(dy, wcache)):
        np.testing.assert_allclose(gw, g, rtol=1e-11, atol=1e-11)


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_gradcheck(shape):
    rng = np.random.default_rng(100 + sum(shape))
    errors = check_backward(winograd_conv3x3_forward, winograd_conv3x3_backward, random_inputs(rng, shape), rng)
    assert len(errors) == 3 and max(errors) <= 1e-7


def test_float32_stays_float32_and_close_to_float64():
    rng = np.random.default_rng(3)
    x, w, b = random_inputs(rng, (4, 7, 7, 16, 8))
    y64, c64 = winograd_conv3x3_forward(x, w, b)
    y32, c32 = winograd_conv3x3_forward(*(a.astype(np.float32) for a in (x, w, b)))
    assert y32.dtype == np.float32
    scale = np.abs(y64).max()
    assert np.abs(y32 - y64).max() <= 1e-5 * scale
    dy = rng.standard_normal(y64.shape)
    for g32, g64 in zip(winograd_conv3x3_backward(dy.astype(np.float32), c32), winograd_conv3x3_backward(dy, c64)):
        assert g32.dtype == np.float32
        assert np.abs(g32 - g64).max() <= 1e-5 * np.abs(g64).max()


def test_never_mutates_its_inputs_and_outputs_are_fresh():
    rng = np.random.default_rng(4)
    x, w, b = random_inputs(rng, (2, 6, 5, 3, 2))
    dy = rng.standard_normal((2, 6, 5, 2))
    before = [a.copy() for a in (x, w, b, dy)]
    y, cache = winograd_conv3x3_forward(x, w, b)
    dx, dw, db = winograd_conv3x3_backward(dy, cache)
    for after, kept in zip((x, w, b, dy), before):
        np.testing.assert_array_equal(after, kept)
    assert not any(np.shares_memory(out, a) for out in (y, dx, dw, db) for a in (x, w, b, dy))


def test_rejects_other_kernels_and_shapes():
    x = np.zeros((1, 4, 4, 2))
    with pytest.raises(ValueError, match="3x3"):
        winograd_conv3x3_forward(x, np.zeros((3, 2, 5, 5)), np.zeros(3))
    with pytest.raises(ValueError, match="channels"):
        winograd_conv3x3_forward(x, np.zeros((3, 1, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="bias"):
        winograd_conv3x3_forward(x, np.zeros((3, 2, 3, 3)), np.zeros(2))
