"""Convolution (im2col + GEMM, and the taps-first scatter form) and sub-pixel depth-to-space,
channels last: values against explicit loops, every backward against finite differences,
adjointness, purity, dtypes."""
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae.conv import (
    col2im, column_sums, conv2d_backward, conv2d_forward, conv2d_scatter_backward, conv2d_scatter_forward,
    conv_output_size, depth_to_space, depth_to_space_backward, depth_to_space_forward,
    filters_matrix, im2col, space_to_depth, space_to_depth_backward, space_to_depth_forward,
)
from minivae.gradcheck import check_backward

TOL = 1e-7

# (stride, pad, (kh, kw), C, F, (H, W)): square and non-square inputs and kernels,
# stride 2 that does and does not divide the padded size, padding 0, 1 and 2.
CONFIGS = [
    (1, 0, (3, 3), 2, 3, (5, 5)),
    (1, 1, (3, 3), 3, 2, (4, 6)),
    (2, 1, (3, 3), 2, 4, (7, 5)),
    (2, 0, (2, 2), 3, 2, (6, 4)),
    (2, 1, (4, 4), 2, 3, (8, 8)),
    (1, 2, (5, 3), 1, 2, (4, 5)),
    (2, 2, (3, 2), 2, 2, (5, 6)),
    (1, 0, (1, 1), 4, 3, (3, 2)),
    (3, 1, (3, 3), 2, 2, (7, 9)),
]
CONFIG_IDS = [f"s{s}p{p}k{k[0]}x{k[1]}C{C}F{F}_{H}x{W}" for s, p, k, C, F, (H, W) in CONFIGS]


def naive_conv2d(x, w, b, stride, pad):
    """The defining sum, one output entry at a time; padding by bounds checks. NHWC."""
    N, H, W, C = x.shape
    F, _, kh, kw = w.shape
    Ho = (H + 2 * pad - kh) // stride + 1
    Wo = (W + 2 * pad - kw) // stride + 1
    y = np.empty((N, Ho, Wo, F))
    for n in range(N):
        for f in range(F):
            for ho in range(Ho):
                for wo in range(Wo):
                    total = b[f]
                    for c in range(C):
                        for i in range(kh):
                            for j in range(kw):
                                row, col = ho * stride + i - pad, wo * stride + j - pad
                                if 0 <= row < H and 0 <= col < W:
                                    total += w[f, c, i, j] * x[n, row, col, c]
                    y[n, ho, wo, f] = total
    return y


def naive_depth_to_space(x, r):
    N, H, W, Crr = x.shape
    C = Crr // (r * r)
    y = np.empty((N, H * r, W * r, C), dtype=x.dtype)
    for n in range(N):
        for c in range(C):
            for h in range(H):
                for w in range(W):
                    for i in range(r):
                        for j in range(r):
                            y[n, h * r + i, w * r + j, c] = x[n, h, w, (i * r + j) * C + c]
    return y


def random_conv_inputs(rng, config, N=2, dtype=np.float64):
    stride, pad, (kh, kw), C, F, (H, W) = config
    x = rng.standard_normal((N, H, W, C)).astype(dtype)
    w = rng.standard_normal((F, C, kh, kw)).astype(dtype)
    b = rng.standard_normal(F).astype(dtype)
    return x, w, b


# ---------------------------------------------------------------- values
def test_output_size_formula():
    assert conv_output_size(14, 3, 2, 1) == 7
    assert conv_output_size(28, 3, 2, 1) == 14
    assert conv_output_size(5, 3, 1, 0) == 3
    assert conv_output_size(5, 3, 1, 1) == 5   # "same"
    assert conv_output_size(6, 3, 2, 0) == 2   # floor: the last row does not fit a window
    assert conv_output_size(1, 3, 1, 1) == 1


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_conv2d_forward_matches_loops(config):
    rng = np.random.default_rng(CONFIGS.index(config))
    x, w, b = random_conv_inputs(rng, config)
    stride, pad = config[:2]
    y, _ = conv2d_forward(x, w, b, stride, pad)
    expected = naive_conv2d(x, w, b, stride, pad)
    assert y.shape == expected.shape
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


@settings(max_examples=40, deadline=None)
@given(N=st.integers(1, 2), C=st.integers(1, 3), F=st.integers(1, 3),
       H=st.integers(1, 7), W=st.integers(1, 7), kh=st.integers(1, 4), kw=st.integers(1, 4),
       stride=st.integers(1, 3), pad=st.integers(0, 2), seed=st.integers(0, 2**32 - 1))
def test_both_forms_match_loops_for_any_geometry(N, C, F, H, W, kh, kw, stride, pad, seed):
    for forward in (conv2d_forward, conv2d_scatter_forward):
        if H + 2 * pad < kh or W + 2 * pad < kw:
            with pytest.raises(ValueError, match="does not fit"):
                forward(np.zeros((N, H, W, C)), np.zeros((F, C, kh, kw)), np.zeros(F), stride, pad)
            continue
        rng = np.random.default_rng(seed)
        x, w, b = random_conv_inputs(rng, (stride, pad, (kh, kw), C, F, (H, W)), N=N)
        y, _ = forward(x, w, b, stride, pad)
        np.testing.assert_allclose(y, naive_conv2d(x, w, b, stride, pad), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_scatter_form_equals_im2col_form_forward_and_backward(config):
    """The taps-first form is the same function: same y, and the same three gradients."""
    stride, pad = config[:2]
    rng = np.random.default_rng(50 + CONFIGS.index(config))
    x, w, b = random_conv_inputs(rng, config)
    y, cache = conv2d_forward(x, w, b, stride, pad)
    ys, scache = conv2d_scatter_forward(x, w, b, stride, pad)
    np.testing.assert_allclose(ys, y, rtol=1e-12, atol=1e-12)
    dy = rng.standard_normal(y.shape)
    for g, gs in zip(conv2d_backward(dy, cache), conv2d_scatter_backward(dy, scache)):
        np.testing.assert_allclose(gs, g, rtol=1e-12, atol=1e-12)


def test_conv2d_one_by_one_kernel_is_a_per_pixel_affine_map():
    rng = np.random.default_rng(3)
    x, w, b = rng.standard_normal((2, 3, 5, 4)), rng.standard_normal((6, 4, 1, 1)), rng.standard_normal(6)
    y, _ = conv2d_forward(x, w, b)
    expected = np.einsum("nhwc,fc->nhwf", x, w[:, :, 0, 0]) + b
    np.testing.assert_allclose(y, expected, rtol=1e-12, atol=1e-12)


def test_im2col_layout():
    """Row (n*H' + h)*W' + w, column (i*kw + j)*C + c holds padded x[n, s*h+i, s*w+j, c]."""
    N, C, H, W, kh, kw, stride, pad = 2, 2, 5, 4, 3, 2, 2, 1
    x = np.arange(N * H * W * C, dtype=np.float64).reshape(N, H, W, C) + 1
    cols = im2col(x, kh, kw, stride, pad)
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    assert cols.shape == (N * Ho * Wo, kh * kw * C)
    for n in range(N):
        for h in range(Ho):
            for w in range(Wo):
                for c in range(C):
                    for i in range(kh):
                        for j in range(kw):
                            row, col = stride * h + i - pad, stride * w + j - pad
                            inside = 0 <= row < H and 0 <= col < W
                            value = x[n, row, col, c] if inside else 0.0
                            assert cols[(n * Ho + h) * Wo + w, (i * kw + j) * C + c] == value


def test_filters_matrix_rows_follow_im2col_columns():
    w = np.arange(4 * 2 * 3 * 2, dtype=float).reshape(4, 2, 3, 2)  # (F, C, kh, kw)
    m = filters_matrix(w)
    assert m.shape == (3 * 2 * 2, 4)
    for f, c, i, j in np.ndindex(w.shape):
        assert m[(i * 2 + j) * 2 + c, f] == w[f, c, i, j]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_column_sums_are_the_sums_down_the_columns(dtype):
    a = np.random.default_rng(6).standard_normal((1000, 7)).astype(dtype)
    sums = column_sums(a)
    assert sums.dtype == dtype and sums.shape == (7,)
    atol = 1e-4 if dtype == np.float32 else 1e-11  # sums of 1000 numbers of size 1, with cancellation
    np.testing.assert_allclose(sums, a.astype(np.float64).sum(axis=0), rtol=0, atol=atol)


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_col2im_is_the_adjoint_of_im2col(config):
    """<im2col(x), c> = <x, col2im(c)> for random x and c."""
    stride, pad, (kh, kw), C, _, (H, W) = config
    rng = np.random.default_rng(100 + CONFIGS.index(config))
    x = rng.standard_normal((3, H, W, C))
    cols = im2col(x, kh, kw, stride, pad)
    c = rng.standard_normal(cols.shape)
    lhs = np.sum(cols * c)
    rhs = np.sum(x * col2im(c, x.shape, kh, kw, stride, pad))
    assert abs(lhs - rhs) <= 1e-12 * max(1.0, abs(lhs))


def test_col2im_counts_how_many_windows_cover_each_pixel():
    """col2im of all-ones counts the windows over each pixel: 3x3 stride 1 "same" on 4x4."""
    cols = np.ones((16, 9))
    counts = col2im(cols, (1, 4, 4, 1), 3, 3, stride=1, pad=1)[0, :, :, 0]
    edge = [[4, 6, 6, 4], [6, 9, 9, 6], [6, 9, 9, 6], [4, 6, 6, 4]]
    np.testing.assert_array_equal(counts, edge)


def test_depth_to_space_matches_index_formula():
    rng = np.random.default_rng(5)
    for r, shape in [(2, (2, 3, 2, 8)), (3, (1, 2, 3, 18)), (1, (2, 2, 2, 3))]:
        x = rng.standard_normal(shape)
        np.testing.assert_array_equal(depth_to_space(x, r), naive_depth_to_space(x, r))
        np.testing.assert_array_equal(depth_to_space_forward(x, r)[0], naive_depth_to_space(x, r))


def test_depth_to_space_small_example_by_hand():
    """One image, 4 channels of one pixel each -> one channel of 2x2, in reading order."""
    x = np.array([10.0, 11.0, 12.0, 13.0]).reshape(1, 1, 1, 4)
    np.testing.assert_array_equal(depth_to_space(x, 2)[..., 0], [[[10.0, 11.0], [12.0, 13.0]]])


@pytest.mark.parametrize("r, shape", [(2, (2, 3, 2, 8)), (3, (1, 2, 2, 9))])
def test_space_to_depth_inverts_depth_to_space(r, shape):
    rng = np.random.default_rng(r)
    x = rng.standard_normal(shape)
    np.testing.assert_array_equal(space_to_depth(depth_to_space(x, r), r), x)
    N, H, W, Crr = shape
    y = rng.standard_normal((N, H * r, W * r, Crr // (r * r)))
    np.testing.assert_array_equal(depth_to_space(space_to_depth(y, r), r), y)


@pytest.mark.parametrize("r", [2, 3])
def test_subpixel_upsampling_multiplies_height_and_width(r):
    """A stride-1 "same" conv to C*r*r channels, then depth-to-space: (N, H*r, W*r, C)."""
    rng = np.random.default_rng(7)
    N, C_in, C, H, W = 2, 3, 2, 4, 5
    x = rng.standard_normal((N, H, W, C_in))
    w, b = rng.standard_normal((C * r * r, C_in, 3, 3)), rng.standard_normal(C * r * r)
    h, _ = conv2d_forward(x, w, b, stride=1, pad=1)
    assert h.shape == (N, H, W, C * r * r)
    y, _ = depth_to_space_forward(h, r)
    assert y.shape == (N, H * r, W * r, C)
    # each low-resolution pixel becomes an r x r block of its own channels
    np.testing.assert_array_equal(y[:, :r, :r, :].reshape(N, r * r * C), h[:, 0, 0, :])


# ---------------------------------------------------------------- gradient checks
@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
@pytest.mark.parametrize("form", ["im2col", "scatter"])
def test_conv2d_backward_gradcheck(config, form):
    forward, backward = {"im2col": (conv2d_forward, conv2d_backward),
                         "scatter": (conv2d_scatter_forward, conv2d_scatter_backward)}[form]
    stride, pad = config[:2]
    rng = np.random.default_rng(200 + CONFIGS.index(config))
    x, w, b = random_conv_inputs(rng, config)
    errors = check_backward(lambda x, w, b: forward(x, w, b, stride, pad), backward, [x, w, b], rng)
    assert len(errors) == 3 and max(errors) <= TOL


@pytest.mark.parametrize("config", CONFIGS, ids=CONFIG_IDS)
def test_col2im_is_im2col_backward_gradcheck(config):
    stride, pad, (kh, kw), C, _, (H, W) = config
    rng = np.random.default_rng(300 + CONFIGS.index(config))
    x = rng.standard_normal((2, H, W, C))
    errors = check_backward(lambda x: (im2col(x, kh, kw, stride, pad), None),
                            lambda dcols, _: col2im(dcols, x.shape, kh, kw, stride, pad),
                            [x], rng)
    assert errors[0] <= TOL


@pytest.mark.parametrize("r, shape", [(2, (2, 3, 2, 8)), (3, (1, 2, 3, 9)), (1, (2, 2, 2, 2))])
def test_depth_to_space_backward_gradcheck(r, shape):
    rng = np.random.default_rng(400 + r)
    x = rng.standard_normal(shape)
    errors = check_backward(lambda x: depth_to_space_forward(x, r), depth_to_space_backward, [x], rng)
    assert errors[0] <= TOL


@pytest.mark.parametrize("r, shape", [(2, (2, 6, 4, 2)), (3, (1, 6, 9, 1))])
def test_space_to_depth_backward_gradcheck(r, shape):
    rng = np.random.default_rng(500 + r)
    y = rng.standard_normal(shape)
    errors = check_backward(lambda y: space_to_depth_forward(y, r), space_to_depth_backward, [y], rng)
    assert errors[0] <= TOL


def test_subpixel_block_backward_gradcheck():
    """Conv then depth-to-space, chained by hand, checked end to end."""
    rng = np.random.default_rng(9)
    r, pad = 2, 1
    x, w, b = rng.standard_normal((2, 3, 4, 2)), rng.standard_normal((8, 2, 3, 3)), rng.standard_normal(8)

    def forward(x, w, b):
        h, conv_cache = conv2d_forward(x, w, b, 1, pad)
        y, shuffle_cache = depth_to_space_forward(h, r)
        return y, (conv_cache, shuffle_cache)

    def backward(dy, cache):
        conv_cache, shuffle_cache = cache
        return conv2d_backward(depth_to_space_backward(dy, shuffle_cache), conv_cache)

    errors = check_backward(forward, backward, [x, w, b], rng)
    assert max(errors) <= TOL


# ---------------------------------------------------------------- purity and dtypes
@pytest.mark.parametrize("form", ["im2col", "scatter"])
def test_conv2d_never_mutates_its_inputs(form):
    forward, backward = {"im2col": (conv2d_forward, conv2d_backward),
                         "scatter": (conv2d_scatter_forward, conv2d_scatter_backward)}[form]
    rng = np.random.default_rng(11)
    x, w, b = random_conv_inputs(rng, CONFIGS[2])
    x0, w0, b0 = x.copy(), w.copy(), b.copy()
    y, cache = forward(x, w, b, stride=2, pad=1)
    dy = rng.standard_normal(y.shape)
    kept = [a for a in cache if isinstance(a, np.ndarray)]
    dy0, kept0 = dy.copy(), [a.copy() for a in kept]
    backward(dy, cache)
    for after, before in [(x, x0), (w, w0), (b, b0), (dy, dy0)] + list(zip(kept, kept0)):
        np.testing.assert_array_equal(after, before)


def test_im2col_col2im_and_shuffles_never_mutate_their_inputs():
    rng = np.random.default_rng(12)
    x = rng.standard_normal((2, 3, 4, 8))
    x0 = x.copy()
    cols = im2col(x, 3, 3, 2, 1)
    cols0 = cols.copy()
    col2im(cols, x.shape, 3, 3, 2, 1)
    y, cache = depth_to_space_forward(x, 2)
    y0 = y.copy()
    depth_to_space_backward(y, cache)
    space_to_depth(y, 2)
    for after, before in [(x, x0), (cols, cols0), (y, y0)]:
        np.testing.assert_array_equal(after, before)


def test_outputs_do_not_alias_inputs():
    x = np.ones((1, 2, 2, 4))
    y, cache = conv2d_forward(x, np.ones((2, 4, 1, 1)), np.zeros(2))
    dx = conv2d_backward(np.ones_like(y), cache)[0]
    assert not np.shares_memory(dx, y) and not np.shares_memory(cache.cols, x)
    assert not np.shares_memory(col2im(cache.cols, x.shape, 1, 1), cache.cols)
    ys, scache = conv2d_scatter_forward(x, np.ones((2, 4, 1, 1)), np.zeros(2))
    dxs = conv2d_scatter_backward(np.ones_like(ys), scache)[0]
    assert not np.shares_memory(ys, x) and not np.shares_memory(dxs, x) and not np.shares_memory(dxs, ys)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_dtype_is_preserved(dtype):
    rng = np.random.default_rng(13)
    x, w, b = random_conv_inputs(rng, CONFIGS[2], dtype=dtype)
    for forward, backward in [(conv2d_forward, conv2d_backward), (conv2d_scatter_forward, conv2d_scatter_backward)]:
        y, cache = forward(x, w, b, stride=2, pad=1)
        dx, dw, db = backward(np.ones_like(y), cache)
        assert {a.dtype for a in (y, dx, dw, db)} == {np.dtype(dtype)}
    z, zcache = depth_to_space_forward(y[..., :4], 2)
    assert z.dtype == dtype and depth_to_space_backward(z, zcache).dtype == dtype
    assert space_to_depth(z, 2).dtype == dtype
    cols = im2col(x, 3, 3, 2, 1)
    assert cols.dtype == dtype and col2im(cols, x.shape, 3, 3, 2, 1).dtype == dtype


def test_float32_agrees_with_float64():
    rng = np.random.default_rng(14)
    x, w, b = random_conv_inputs(rng, CONFIGS[4])
    for forward, backward in [(conv2d_forward, conv2d_backward), (conv2d_scatter_forward, conv2d_scatter_backward)]:
        y64, c64 = forward(x, w, b, 2, 1)
        y32, c32 = forward(*(a.astype(np.float32) for a in (x, w, b)), 2, 1)
        np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-4)
        dy = rng.standard_normal(y64.shape)
        for g32, g64 in zip(backward(dy.astype(np.float32), c32), backward(dy, c64)):
            np.testing.assert_allclose(g32, g64, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------- errors
@pytest.mark.parametrize("forward", [conv2d_forward, conv2d_scatter_forward])
def test_bad_shapes_are_rejected(forward):
    x = np.zeros((1, 4, 4, 3))
    with pytest.raises(ValueError, match="channels"):
        forward(x, np.zeros((2, 2, 3, 3)), np.zeros(2))
    with pytest.raises(ValueError, match="bias"):
        forward(x, np.zeros((2, 3, 3, 3)), np.zeros(3))
    with pytest.raises(ValueError, match="does not fit"):
        forward(x, np.zeros((2, 3, 5, 5)), np.zeros(2))
    with pytest.raises(ValueError, match="stride"):
        forward(x, np.zeros((2, 3, 3, 3)), np.zeros(2), stride=0)
    with pytest.raises(ValueError, match=r"\(N, H, W, C\)"):
        forward(x[0], np.zeros((2, 3, 3, 3)), np.zeros(2))


def test_bad_rearrangements_are_rejected():
    with pytest.raises(ValueError, match="cols"):
        col2im(np.zeros((5, 27)), (1, 4, 4, 3), 3, 3)
    with pytest.raises(ValueError, match="multiple of r"):
        depth_to_space(np.zeros((1, 4, 4, 3)), 2)
    with pytest.raises(ValueError, match="multiple of r"):
        space_to_depth(np.zeros((1, 4, 5, 1)), 2)
