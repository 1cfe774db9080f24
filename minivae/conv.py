r"""Convolutions for a convolutional VAE, and sub-pixel upsampling for its decoder.

Images are channels-last, NHWC: ``x`` (N, H, W, C). A layer of F filters has
weights ``w`` (F, C, kh, kw) (PyTorch's layout) and bias ``b`` (F,), and computes

$$ y_{n h w f} = b_f + \sum_{i,j,c} w_{f c i j}\, \tilde x_{n,\,s h + i,\,s w + j,\,c}, $$

with $\tilde x$ the input zero-padded by $p$ on each side and $s$ the stride, so the
output has $H' = \lfloor (H + 2p - k_h) / s \rfloor + 1$ rows (likewise $W'$).

**Convolution as a matrix product (im2col).** Copy every receptive field into a
row of a matrix ``cols`` (N*H'*W', kh*kw*C); then the whole layer is one GEMM,
$Y = \mathrm{cols}\, W + b$ with $W$ the filters as a (kh*kw*C, F) matrix. Its
backward is the affine layer's: $\bar W = \mathrm{cols}^\top \bar Y$,
$\bar{\mathrm{cols}} = \bar Y W^\top$, and $\bar x = \mathrm{col2im}(\bar{\mathrm{cols}})$,
where col2im is the adjoint (transpose) of im2col: it adds every entry of a row
back onto the pixel it was copied from, so a pixel shared by overlapping windows
collects the sum of their gradients. Channels last, the window under one kernel
offset is a run of C contiguous values per pixel, so im2col and col2im are one
strided block copy (or add) per kernel offset.

**The same convolution, taps first (scatter form).** Multiply every input pixel
by every tap first, $Z_{n h w i j f} = \sum_c x_{n h w c} w_{f c i j}$ (one GEMM),
then each output adds the kh*kw products that reach it,
$y_{n h w f} = b_f + \sum_{i,j} Z_{n,\,sh+i-p,\,sw+j-p,\,i,j,f}$. Its backward is the
mirror image: an im2col of $\bar y$ and two GEMMs. It holds kh*kw*F numbers per
pixel where im2col holds kh*kw*C: the cheaper form for a layer with few filters.

**Sub-pixel upsampling (the decoder's "deconvolution").** Shi et al. (2016),
*Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network*, CVPR, arXiv:1609.05158: a stride-1 convolution
producing $r^2 C$ channels at low resolution, followed by depth-to-space, which
rearranges (N, H, W, r*r*C) -> (N, H*r, W*r, C) with

$$ y_{n,\,h r + i,\,w r + j,\,c} = x_{n,\,h,\,w,\,(i r + j) C + c} $$

(channels last, the C channels of one sub-pixel stay contiguous; PyTorch's
``pixel_shuffle`` orders them $c r^2 + i r + j$ instead). Depth-to-space moves entries
without changing them, so its backward is its inverse, space-to-depth. Unlike a
strided transposed convolution, this cannot leave checkerboard gaps: every output
pixel is produced by a full kernel.

Ops follow ``minivae.nn``: ``forward(...) -> (y, cache)`` and
``backward(dy, cache)`` returning gradients in the order of forward's array
inputs; caches are immutable, no op mutates its inputs, and float32 stays
float32. Taught in lesson 11; :mod:`minivae.winograd` computes the stride-1 3x3
convolution with fewer multiplications.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "conv_output_size",
    "im2col", "col2im", "filters_matrix", "filters_from_matrix", "column_sums",
    "conv2d_forward", "conv2d_backward",
    "conv2d_scatter_forward", "conv2d_scatter_backward",
    "depth_to_space", "space_to_depth",
    "depth_to_space_forward", "depth_to_space_backward",
    "space_to_depth_forward", "space_to_depth_backward",
]


def conv_output_size(size: int, k: int, stride: int, pad: int) -> int:
    r"""$\lfloor (\mathrm{size} + 2p - k) / s \rfloor + 1$: output rows (or columns) of a convolution.

    Raises ValueError when the kernel does not fit in the padded input.
    """
    if stride < 1 or pad < 0 or k < 1:
        raise ValueError(f"need stride >= 1, pad >= 0, kernel >= 1; got {stride=}, {pad=}, {k=}")
    if size + 2 * pad < k:
        raise ValueError(f"kernel {k} does not fit in input {size} padded by {pad}")
    return (size + 2 * pad - k) // stride + 1


def _window(offset: int, stride: int, n_out: int) -> slice:
    """The padded-input rows (or columns) that kernel offset ``offset`` touches, one per output."""
    return slice(offset, offset + stride * n_out, stride)


def _overlap(offset: int, stride: int, pad: int, n_in: int, n_out: int) -> tuple[slice, slice]:
    """(outputs, inputs): the output rows whose tap ``offset`` lands inside the unpadded
    input, and the input rows it lands on (row ``stride * h + offset - pad``)."""
    first = max(0, -(-(pad - offset) // stride))                  # smallest h with s*h + i - p >= 0
    stop = min(n_out, (n_in - 1 + pad - offset) // stride + 1)    # past the largest with s*h + i - p < n_in
    stop = max(stop, first)
    start_in = stride * first + offset - pad
    return slice(first, stop), slice(start_in, start_in + stride * (stop - first), stride)


def _pad(x: np.ndarray, pad: int) -> np.ndarray:
    """x (N, H, W, C) with ``pad`` zero rows and columns on every side: (N, H+2p, W+2p, C)."""
    if not pad:
        return x
    N, H, W, C = x.shape
    xp = np.zeros((N, H + 2 * pad, W + 2 * pad, C), dtype=x.dtype)
    xp[:, pad:pad + H, pad:pad + W] = x
    return xp


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    r"""Every receptive field of ``x`` as one row of a matrix.

    x (N, H, W, C) -> cols (N*H'*W', kh*kw*C). Row ``(n*H' + h)*W' + w`` is the
    window under output pixel (h, w) of image n; column ``(i*kw + j)*C + c`` holds
    $\tilde x_{n, sh+i, sw+j, c}$ ($\tilde x$ zero-padded by ``pad``), so the columns
    are ordered like :func:`filters_matrix`'s rows.

    One strided block copy per kernel offset (kh*kw of them): no loop over pixels
    or images.
    """
    N, H, W, C = x.shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    xp = _pad(x, pad)  # (N, H+2p, W+2p, C)
    cols = np.empty((N, Ho, Wo, kh, kw, C), dtype=x.dtype)  # (N, H', W', kh, kw, C)
    for i in range(kh):
        for j in range(kw):
            cols[:, :, :, i, j] = xp[:, _window(i, stride, Ho), _window(j, stride, Wo)]  # (N, H', W', C)
    return cols.reshape(N * Ho * Wo, kh * kw * C)  # (N*H'*W', kh*kw*C)


def col2im(cols: np.ndarray, x_shape: tuple, kh: int, kw: int, stride: int = 1,
           pad: int = 0) -> np.ndarray:
    r"""The adjoint of :func:`im2col`: add each row back onto the pixels it came from.

    cols (N*H'*W', kh*kw*C), x_shape = (N, H, W, C) -> dx (N, H, W, C), the unique
    linear map with $\langle \mathrm{im2col}(x), c\rangle = \langle x, \mathrm{col2im}(c)\rangle$.
    Overlapping windows (kernel larger than stride) sum their contributions;
    entries that landed in the zero padding are dropped. One strided block add per
    kernel offset: within one offset the windows never overlap, so ``+=`` is exact.
    """
    N, H, W, C = x_shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    if cols.shape != (N * Ho * Wo, kh * kw * C):
        raise ValueError(f"cols has shape {cols.shape}, expected {(N * Ho * Wo, kh * kw * C)}")
    patches = cols.reshape(N, Ho, Wo, kh, kw, C)  # (N, H', W', kh, kw, C)
    dxp = np.zeros((N, H + 2 * pad, W + 2 * pad, C), dtype=cols.dtype)  # (N, H+2p, W+2p, C)
    for i in range(kh):
        for j in range(kw):
            dxp[:, _window(i, stride, Ho), _window(j, stride, Wo)] += patches[:, :, :, i, j]  # (N, H', W', C)
    return dxp[:, pad:pad + H, pad:pad + W]  # (N, H, W, C)


def column_sums(a: np.ndarray) -> np.ndarray:
    r"""$\mathbf 1^\top a$, the bias gradient of a layer whose rows share the bias: a (M, F) -> (F,).

    The same sum as ``a.sum(axis=0)``, as a matrix-vector product: several times
    faster on a tall array (the BLAS streams the rows; NumPy's reduction strides
    down the columns).
    """
    return np.ones(len(a), dtype=a.dtype) @ a


def filters_matrix(w: np.ndarray) -> np.ndarray:
    """The filters w (F, C, kh, kw) as the (kh*kw*C, F) matrix that multiplies im2col's rows."""
    F, C, kh, kw = w.shape
    return w.transpose(2, 3, 1, 0).reshape(kh * kw * C, F)  # (kh*kw*C, F)


def filters_from_matrix(m: np.ndarray, kh: int, kw: int) -> np.ndarray:
    """The inverse of :func:`filters_matrix`: a (kh*kw*C, F) matrix as filters (F, C, kh, kw)."""
    return m.reshape(kh, kw, -1, m.shape[-1]).transpose(3, 2, 0, 1)


def _check(x: np.ndarray, w: np.ndarray, b: np.ndarray) -> None:
    if x.ndim != 4 or w.ndim != 4:
        raise ValueError(f"need x (N, H, W, C) and w (F, C, kh, kw); got shapes {x.shape} and {w.shape}")
    if w.shape[1] != x.shape[3]:
        raise ValueError(f"input has {x.shape[3]} channels but the filters expect {w.shape[1]}")
    if b.shape != (w.shape[0],):
        raise ValueError(f"bias has shape {b.shape}, expected {(w.shape[0],)}")


class Conv2dCache(NamedTuple):
    x_shape: tuple        # (N, H, W, C)
    cols: np.ndarray      # (N*H'*W', kh*kw*C), im2col of the input
    w: np.ndarray         # (F, C, kh, kw)
    stride: int
    pad: int


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0):
    r"""$y_{nhwf} = b_f + \sum_{i,j,c} w_{fcij}\, \tilde x_{n,sh+i,sw+j,c}$, by im2col.

    A cross-correlation (no kernel flip), as in every deep learning library.

    x (N, H, W, C), w (F, C, kh, kw), b (F,) -> y (N, H', W', F) with
    $H' = \lfloor (H + 2p - k_h)/s \rfloor + 1$, $W' = \lfloor (W + 2p - k_w)/s \rfloor + 1$.
    Computed as one matrix product, im2col(x) @ filters_matrix(w).
    """
    _check(x, w, b)
    N, H, W, _ = x.shape
    F, _, kh, kw = w.shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = im2col(x, kh, kw, stride, pad)  # (N*H'*W', kh*kw*C)
    y = cols @ filters_matrix(w) + b  # (N*H'*W', F)
    return y.reshape(N, Ho, Wo, F), Conv2dCache(x.shape, cols, w, stride, pad)


def conv2d_backward(dy: np.ndarray, cache: Conv2dCache):
    r"""$\bar W = \mathrm{cols}^\top \bar Y$, $\bar x = \mathrm{col2im}(\bar Y W^\top)$,
    $\bar b_f = \sum_{n,h,w} \bar y_{nhwf}$.

    dy (N, H', W', F) -> dx (N, H, W, C), dw (F, C, kh, kw), db (F,), where
    $\bar Y$ is dy as (N*H'*W', F) and $W$ = filters_matrix(w), (kh*kw*C, F).
    """
    F, _, kh, kw = cache.w.shape
    dY = dy.reshape(-1, F)  # (N*H'*W', F)
    dw = filters_from_matrix(cache.cols.T @ dY, kh, kw)  # (kh*kw*C, F) -> (F, C, kh, kw)
    dcols = dY @ filters_matrix(cache.w).T  # (N*H'*W', kh*kw*C)
    dx = col2im(dcols, cache.x_shape, kh, kw, cache.stride, cache.pad)  # (N, H, W, C)
    return dx, dw, column_sums(dY)


class ScatterCache(NamedTuple):
    x: np.ndarray         # (N, H, W, C)
    w: np.ndarray         # (F, C, kh, kw)
    stride: int
    pad: int


def _taps(w: np.ndarray) -> np.ndarray:
    """w (F, C, kh, kw) as the (kh*kw*F, C) matrix whose row (i*kw + j)*F + f is tap (i, j) of filter f."""
    F, C, kh, kw = w.shape
    return w.transpose(2, 3, 0, 1).reshape(kh * kw * F, C)  # (kh*kw*F, C)


def conv2d_scatter_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0):
    r""":func:`conv2d_forward`'s $y$, taps first: $Z_{ijf,nhw} = \sum_c w_{fcij} x_{nhwc}$,
    then $y_{nhwf} = b_f + \sum_{i,j} Z_{ijf,\,n,\,sh+i-p,\,sw+j-p}$ (taps outside the input are 0).

    x (N, H, W, C), w (F, C, kh, kw), b (F,) -> y (N, H', W', F). One GEMM,
    (kh*kw*F, C) @ (C, N*H*W), then one strided block add per kernel offset over
    (F, N, H', W') planes: the cheaper form when F is small (see the module docstring).
    """
    _check(x, w, b)
    N, H, W, C = x.shape
    F, _, kh, kw = w.shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    Z = (_taps(w) @ x.reshape(-1, C).T).reshape(kh, kw, F, N, H, W)  # (kh, kw, F, N, H, W)
    yt = np.empty((F, N, Ho, Wo), dtype=x.dtype)  # (F, N, H', W')
    yt[...] = b[:, None, None, None]
    for i in range(kh):
        rows_out, rows_in = _overlap(i, stride, pad, H, Ho)
        for j in range(kw):
            cols_out, cols_in = _overlap(j, stride, pad, W, Wo)
            yt[:, :, rows_out, cols_out] += Z[i, j, :, :, rows_in, cols_in]
    return yt.transpose(1, 2, 3, 0), ScatterCache(x, w, stride, pad)  # (N, H', W', F)


def conv2d_scatter_backward(dy: np.ndarray, cache: ScatterCache):
    r"""$\bar Z_{ijf,\,n,\,sh+i-p,\,sw+j-p} = \bar y_{nhwf}$ (an im2col of $\bar y$), then
    $\bar x = \bar Z^\top T$ and $\bar T = \bar Z X$ with $T$ the taps matrix, (kh*kw*F, C).

    dy (N, H', W', F) -> dx (N, H, W, C), dw (F, C, kh, kw), db (F,).
    """
    x, w, stride, pad = cache
    N, H, W, C = x.shape
    F, _, kh, kw = w.shape
    dyt = dy.transpose(3, 0, 1, 2)  # (F, N, H', W')
    Ho, Wo = dyt.shape[2:]
    dZ = np.zeros((kh, kw, F, N, H, W), dtype=dy.dtype)  # (kh, kw, F, N, H, W)
    for i in range(kh):
        rows_out, rows_in = _overlap(i, stride, pad, H, Ho)
        for j in range(kw):
            cols_out, cols_in = _overlap(j, stride, pad, W, Wo)
            dZ[i, j, :, :, rows_in, cols_in] = dyt[:, :, rows_out, cols_out]
    dZ = dZ.reshape(kh * kw * F, N * H * W)  # (kh*kw*F, N*H*W)
    dx = (dZ.T @ _taps(w)).reshape(N, H, W, C)  # (N, H, W, C)
    dw = (dZ @ x.reshape(-1, C)).reshape(kh, kw, F, C).transpose(2, 3, 0, 1)  # (F, C, kh, kw)
    return dx, dw, column_sums(dy.reshape(-1, F))


# ---------------------------------------------------------------- sub-pixel rearrangement

def depth_to_space(x: np.ndarray, r: int) -> np.ndarray:
    r"""$y_{n, hr+i, wr+j, c} = x_{n, h, w, (ir + j)C + c}$: x (N, H, W, r*r*C) -> y (N, H*r, W*r, C)."""
    N, H, W, Crr = x.shape
    if r < 1 or Crr % (r * r):
        raise ValueError(f"{Crr} channels is not a multiple of r*r = {r * r}")
    C = Crr // (r * r)
    y = x.reshape(N, H, W, r, r, C)  # (N, H, W, i, j, C)
    y = y.transpose(0, 1, 3, 2, 4, 5)  # (N, H, i, W, j, C)
    return y.reshape(N, H * r, W * r, C)  # (N, H*r, W*r, C)


def space_to_depth(y: np.ndarray, r: int) -> np.ndarray:
    r"""The inverse of :func:`depth_to_space`: y (N, H*r, W*r, C) -> x (N, H, W, r*r*C)."""
    N, Hr, Wr, C = y.shape
    if r < 1 or Hr % r or Wr % r:
        raise ValueError(f"spatial size {(Hr, Wr)} is not a multiple of r = {r}")
    H, W = Hr // r, Wr // r
    x = y.reshape(N, H, r, W, r, C)  # (N, H, i, W, j, C)
    x = x.transpose(0, 1, 3, 2, 4, 5)  # (N, H, W, i, j, C)
    return x.reshape(N, H, W, r * r * C)  # (N, H, W, r*r*C)


class ShuffleCache(NamedTuple):
    r: int


def depth_to_space_forward(x: np.ndarray, r: int):
    r"""$y_{n, hr+i, wr+j, c} = x_{n, h, w, (ir + j)C + c}$: x (N, H, W, r*r*C) -> y (N, H*r, W*r, C)."""
    return depth_to_space(x, r), ShuffleCache(r)


def depth_to_space_backward(dy: np.ndarray, cache: ShuffleCache):
    r"""A permutation's adjoint is its inverse: $\bar x$ = space_to_depth($\bar y$).

    dy (N, H*r, W*r, C) -> dx (N, H, W, r*r*C).
    """
    return space_to_depth(dy, cache.r)


def space_to_depth_forward(y: np.ndarray, r: int):
    r"""y (N, H*r, W*r, C) -> x (N, H, W, r*r*C), the inverse of depth-to-space."""
    return space_to_depth(y, r), ShuffleCache(r)


def space_to_depth_backward(dx: np.ndarray, cache: ShuffleCache):
    r"""$\bar y$ = depth_to_space($\bar x$): dx (N, H, W, r*r*C) -> dy (N, H*r, W*r, C)."""
    return depth_to_space(dx, cache.r)
