r"""Convolutions for a convolutional VAE, and sub-pixel upsampling for its decoder.

Images are NCHW: ``x`` (N, C, H, W). A layer of F filters has weights ``w``
(F, C, kh, kw) and bias ``b`` (F,), and computes

$$ y_{n f h w} = b_f + \sum_{c,i,j} w_{f c i j}\, \tilde x_{n,c,\,s h + i,\,s w + j}, $$

with $\tilde x$ the input zero-padded by $p$ on each side and $s$ the stride, so the
output has $H' = \lfloor (H + 2p - k_h) / s \rfloor + 1$ rows (likewise $W'$).

**Convolution as a matrix product (im2col).** Copy every receptive field into a
row of a matrix ``cols`` (N*H'*W', C*kh*kw); then the whole layer is one GEMM,
$Y = \mathrm{cols}\, W^\top + b$ with $W$ = ``w.reshape(F, C*kh*kw)``. Its backward
is the affine layer's: $\bar W = \bar Y^\top \mathrm{cols}$,
$\bar{\mathrm{cols}} = \bar Y W$, and $\bar x = \mathrm{col2im}(\bar{\mathrm{cols}})$,
where col2im is the adjoint (transpose) of im2col: it adds every entry of a row
back onto the pixel it was copied from, so a pixel shared by overlapping windows
collects the sum of their gradients.

**Sub-pixel upsampling (the decoder's "deconvolution").** Shi et al. (2016),
*Real-Time Single Image and Video Super-Resolution Using an Efficient Sub-Pixel
Convolutional Neural Network*, CVPR, arXiv:1609.05158: a stride-1 convolution
producing $r^2 C$ channels at low resolution, followed by depth-to-space, which
rearranges (N, C*r*r, H, W) -> (N, C, H*r, W*r) with

$$ y_{n,\,c,\,h r + i,\,w r + j} = x_{n,\,c r^2 + i r + j,\,h,\,w} $$

(the convention of PyTorch's ``pixel_shuffle``). Depth-to-space moves entries
without changing them, so its backward is its inverse, space-to-depth. Unlike a
strided transposed convolution, this cannot leave checkerboard gaps: every output
pixel is produced by a full kernel.

Ops follow ``minivae.nn``: ``forward(...) -> (y, cache)`` and
``backward(dy, cache)`` returning gradients in the order of forward's array
inputs; caches are immutable, no op mutates its inputs, and float32 stays
float32. Taught in lesson 11.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

__all__ = [
    "conv_output_size",
    "im2col", "col2im",
    "conv2d_forward", "conv2d_backward",
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


def im2col(x: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    r"""Every receptive field of ``x`` as one row of a matrix.

    x (N, C, H, W) -> cols (N*H'*W', C*kh*kw). Row ``(n*H' + h)*W' + w`` is the
    window under output pixel (h, w) of image n; column ``(c*kh + i)*kw + j`` holds
    $\tilde x_{n, c, sh+i, sw+j}$ ($\tilde x$ zero-padded by ``pad``), so the columns
    are ordered like ``w.reshape(F, C*kh*kw)``.

    One strided slice copy per kernel offset (kh*kw of them): no loop over pixels
    or images.
    """
    N, C, H, W = x.shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))  # (N, C, H+2p, W+2p)
    patches = np.empty((N, Ho, Wo, C, kh, kw), dtype=x.dtype)  # (N, H', W', C, kh, kw)
    for i in range(kh):
        for j in range(kw):
            window = xp[:, :, _window(i, stride, Ho), _window(j, stride, Wo)]  # (N, C, H', W')
            patches[:, :, :, :, i, j] = window.transpose(0, 2, 3, 1)  # (N, H', W', C)
    return patches.reshape(N * Ho * Wo, C * kh * kw)  # (N*H'*W', C*kh*kw)


def col2im(cols: np.ndarray, x_shape: tuple, kh: int, kw: int, stride: int = 1,
           pad: int = 0) -> np.ndarray:
    r"""The adjoint of :func:`im2col`: add each row back onto the pixels it came from.

    cols (N*H'*W', C*kh*kw), x_shape = (N, C, H, W) -> dx (N, C, H, W), the unique
    linear map with $\langle \mathrm{im2col}(x), c\rangle = \langle x, \mathrm{col2im}(c)\rangle$.
    Overlapping windows (kernel larger than stride) sum their contributions;
    entries that landed in the zero padding are dropped. One strided slice-add per
    kernel offset: within one offset the windows never overlap, so ``+=`` is exact.
    """
    N, C, H, W = x_shape
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    if cols.shape != (N * Ho * Wo, C * kh * kw):
        raise ValueError(f"cols has shape {cols.shape}, expected {(N * Ho * Wo, C * kh * kw)}")
    patches = cols.reshape(N, Ho, Wo, C, kh, kw)  # (N, H', W', C, kh, kw)
    dxp = np.zeros((N, C, H + 2 * pad, W + 2 * pad), dtype=cols.dtype)  # (N, C, H+2p, W+2p)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, _window(i, stride, Ho), _window(j, stride, Wo)] += (
                patches[:, :, :, :, i, j].transpose(0, 3, 1, 2))  # (N, C, H', W')
    if pad:
        dxp = dxp[:, :, pad:pad + H, pad:pad + W].copy()  # (N, C, H, W)
    return dxp


class Conv2dCache(NamedTuple):
    x_shape: tuple        # (N, C, H, W)
    cols: np.ndarray      # (N*H'*W', C*kh*kw), im2col of the input
    w: np.ndarray         # (F, C, kh, kw)
    stride: int
    pad: int


def conv2d_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray, stride: int = 1, pad: int = 0):
    r"""$y_{nfhw} = b_f + \sum_{c,i,j} w_{fcij}\, \tilde x_{n,c,sh+i,sw+j}$.

    A cross-correlation (no kernel flip), as in every deep learning library.

    x (N, C, H, W), w (F, C, kh, kw), b (F,) -> y (N, F, H', W') with
    $H' = \lfloor (H + 2p - k_h)/s \rfloor + 1$, $W' = \lfloor (W + 2p - k_w)/s \rfloor + 1$.
    Computed as one matrix product, im2col(x) @ w.reshape(F, -1).T.
    """
    N, C, H, W = x.shape
    F, Cw, kh, kw = w.shape
    if Cw != C:
        raise ValueError(f"input has {C} channels but the filters expect {Cw}")
    if b.shape != (F,):
        raise ValueError(f"bias has shape {b.shape}, expected {(F,)}")
    Ho, Wo = conv_output_size(H, kh, stride, pad), conv_output_size(W, kw, stride, pad)
    cols = im2col(x, kh, kw, stride, pad)  # (N*H'*W', C*kh*kw)
    y = cols @ w.reshape(F, C * kh * kw).T + b  # (N*H'*W', F)
    y = y.reshape(N, Ho, Wo, F).transpose(0, 3, 1, 2)  # (N, F, H', W')
    return np.ascontiguousarray(y), Conv2dCache(x.shape, cols, w, stride, pad)


def conv2d_backward(dy: np.ndarray, cache: Conv2dCache, input_grad: bool = True):
    r"""$\bar W = \bar Y^\top \mathrm{cols}$, $\bar x = \mathrm{col2im}(\bar Y W)$,
    $\bar b_f = \sum_{n,h,w} \bar y_{nfhw}$.

    dy (N, F, H', W') -> dx (N, C, H, W), dw (F, C, kh, kw), db (F,), where
    $\bar Y$ is dy laid out as (N*H'*W', F) and $W$ = w.reshape(F, C*kh*kw).
    ``input_grad=False`` skips dx (returned as None) for a layer that reads data.
    """
    w = cache.w
    F, C, kh, kw = w.shape
    dY = dy.transpose(0, 2, 3, 1).reshape(-1, F)  # (N*H'*W', F)
    dw = (dY.T @ cache.cols).reshape(F, C, kh, kw)  # (F, C*kh*kw) -> (F, C, kh, kw)
    dx = None
    if input_grad:
        dcols = dY @ w.reshape(F, C * kh * kw)  # (N*H'*W', C*kh*kw)
        dx = col2im(dcols, cache.x_shape, kh, kw, cache.stride, cache.pad)  # (N, C, H, W)
    return dx, dw, dy.sum(axis=(0, 2, 3))


# ---------------------------------------------------------------- sub-pixel rearrangement

def depth_to_space(x: np.ndarray, r: int) -> np.ndarray:
    r"""$y_{n, c, hr+i, wr+j} = x_{n, cr^2 + ir + j, h, w}$: x (N, C*r*r, H, W) -> y (N, C, H*r, W*r)."""
    N, Crr, H, W = x.shape
    if r < 1 or Crr % (r * r):
        raise ValueError(f"{Crr} channels is not a multiple of r*r = {r * r}")
    C = Crr // (r * r)
    y = x.reshape(N, C, r, r, H, W)  # (N, C, i, j, H, W)
    y = y.transpose(0, 1, 4, 2, 5, 3)  # (N, C, H, i, W, j)
    return y.reshape(N, C, H * r, W * r)  # (N, C, H*r, W*r)


def space_to_depth(y: np.ndarray, r: int) -> np.ndarray:
    r"""The inverse of :func:`depth_to_space`: y (N, C, H*r, W*r) -> x (N, C*r*r, H, W)."""
    N, C, Hr, Wr = y.shape
    if r < 1 or Hr % r or Wr % r:
        raise ValueError(f"spatial size {(Hr, Wr)} is not a multiple of r = {r}")
    H, W = Hr // r, Wr // r
    x = y.reshape(N, C, H, r, W, r)  # (N, C, H, i, W, j)
    x = x.transpose(0, 1, 3, 5, 2, 4)  # (N, C, i, j, H, W)
    return x.reshape(N, C * r * r, H, W)  # (N, C*r*r, H, W)


class ShuffleCache(NamedTuple):
    r: int


def depth_to_space_forward(x: np.ndarray, r: int):
    r"""$y_{n, c, hr+i, wr+j} = x_{n, cr^2 + ir + j, h, w}$: x (N, C*r*r, H, W) -> y (N, C, H*r, W*r)."""
    return depth_to_space(x, r), ShuffleCache(r)


def depth_to_space_backward(dy: np.ndarray, cache: ShuffleCache):
    r"""A permutation's adjoint is its inverse: $\bar x$ = space_to_depth($\bar y$).

    dy (N, C, H*r, W*r) -> dx (N, C*r*r, H, W).
    """
    return space_to_depth(dy, cache.r)


def space_to_depth_forward(y: np.ndarray, r: int):
    r"""y (N, C, H*r, W*r) -> x (N, C*r*r, H, W), the inverse of depth-to-space."""
    return space_to_depth(y, r), ShuffleCache(r)


def space_to_depth_backward(dx: np.ndarray, cache: ShuffleCache):
    r"""$\bar y$ = depth_to_space($\bar x$): dx (N, C*r*r, H, W) -> dy (N, C, H*r, W*r)."""
    return depth_to_space(dx, cache.r)
