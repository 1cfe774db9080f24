r"""A 3x3, stride-1, "same" convolution with 4x fewer multiplications (Winograd's minimal filtering).

Lavin & Gray (2016), *Fast Algorithms for Convolutional Neural Networks*, CVPR,
arXiv:1509.09308. Cut the zero-padded input into 6x6 tiles $d$ overlapping by 2;
each gives a 4x4 tile of the output, for each pair of channels,

$$ Y = A^\top \big[ (G\, g\, G^\top) \odot (B^\top d\, B) \big] A , $$

with $g$ the 3x3 filter and the constant matrices below ($F(4 \times 4, 3 \times 3)$,
interpolation points $0, \pm 1, \pm 2, \infty$). The elementwise product is
summed over input channels, so at each of the 36 positions of the tile it is a
matrix product, (tiles, C) @ (C, F): 36 GEMMs with 36 multiply-adds per 4x4
output tile where :func:`minivae.conv.conv2d_forward` spends 144. The
transforms by $A$, $B$, $G$ are linear maps with small constant matrices, so the
backward pass is their transposes in reverse order, like every linear layer's.

Same result as :func:`minivae.conv.conv2d_forward` with ``stride=1, pad=1`` (the
tests hold them equal): exact in exact arithmetic; in float32 the transforms
add round-off of about 1e-5 relative (the direct product: about 1e-6). Images
are NHWC, filters (F, C, 3, 3), as in :mod:`minivae.conv`. Lesson 11 shows why
it equals the textbook convolution.
"""
from __future__ import annotations

from typing import NamedTuple

import numpy as np

from .conv import _check, column_sums, filters_from_matrix, filters_matrix

__all__ = ["BT", "G", "AT", "winograd_conv3x3_forward", "winograd_conv3x3_backward"]

#: input transform $B^\top$ (6, 6), filter transform $G$ (6, 3), output transform $A^\top$ (4, 6):
#: in one dimension, $y = A^\top[(G g) \odot (B^\top d)]$ gives $y_k = \sum_{i<3} g_i d_{k+i}$ for k < 4
BT = np.array([[4, 0, -5, 0, 1, 0],
               [0, -4, -4, 1, 1, 0],
               [0, 4, -4, -1, 1, 0],
               [0, -2, -1, 2, 1, 0],
               [0, 2, -1, -2, 1, 0],
               [0, 4, 0, -5, 0, 1]], dtype=np.float64)
G = np.array([[1 / 4, 0, 0],
              [-1 / 6, -1 / 6, -1 / 6],
              [-1 / 6, 1 / 6, -1 / 6],
              [1 / 24, 1 / 12, 1 / 6],
              [1 / 24, -1 / 12, 1 / 6],
              [0, 0, 1]], dtype=np.float64)
AT = np.array([[1, 1, 1, 1, 1, 0],
               [0, 1, -1, 2, -2, 0],
               [0, 1, 1, 4, 4, 0],
               [0, 1, -1, 8, -8, 1]], dtype=np.float64)
# the 2-D transforms of a flattened tile, X -> M X M^T as (kron(M, M)) vec(X)
_BB, _GG, _AA = np.kron(BT, BT), np.kron(G, G), np.kron(AT, AT)  # (36, 36), (36, 9), (16, 36)


class WinogradCache(NamedTuple):
    x_shape: tuple        # (N, H, W, C)
    V: np.ndarray         # (36, T, C), the transformed input tiles, T = N * ceil(H/4) * ceil(W/4)
    U: np.ndarray         # (36, C, F), the transformed filters


def winograd_conv3x3_forward(x: np.ndarray, w: np.ndarray, b: np.ndarray):
    r"""$y$ = conv2d_forward(x, w, b, stride=1, pad=1), by $F(4 \times 4, 3 \times 3)$ tiles.

    x (N, H, W, C), w (F, C, 3, 3), b (F,) -> y (N, H, W, F).
    """
    _check(x, w, b)
    if w.shape[2:] != (3, 3):
        raise ValueError(f"winograd_conv3x3 needs 3x3 filters, got {w.shape[2:]}")
    N, H, W, C = x.shape
    F = w.shape[0]
    th, tw = -(-H // 4), -(-W // 4)                                     # tiles down and across
    xp = np.zeros((N, 4 * th + 2, 4 * tw + 2, C), dtype=x.dtype)        # padded by 1, then to whole tiles
    xp[:, 1:H + 1, 1:W + 1] = x
    d = np.empty((6, 6, N, th, tw, C), dtype=x.dtype)                   # entry (a, c) of every tile
    for a in range(6):
        for c in range(6):
            d[a, c] = xp[:, a:a + 4 * th:4, c:c + 4 * tw:4]
    T = N * th * tw
    V = (_BB.astype(x.dtype) @ d.reshape(36, -1)).reshape(36, T, C)    # B^T d B, (36, T, C)
    U = (_GG.astype(x.dtype) @ filters_matrix(w).reshape(9, -1)).reshape(36, C, F)  # G g G^T
    M = V @ U                                                           # (36, T, F): 36 GEMMs
    Y = (_AA.astype(x.dtype) @ M.reshape(36, -1)).reshape(4, 4, N, th, tw, F)  # A^T M A
    y = np.empty((N, th, 4, tw, 4, F), dtype=x.dtype)                   # the tiles in place, plus the bias
    np.add(Y.transpose(2, 3, 0, 4, 1, 5), b, out=y)
    return y.reshape(N, 4 * th, 4 * tw, F)[:, :H, :W], WinogradCache(x.shape, V, U)  # (N, H, W, F)


def winograd_conv3x3_backward(dy: np.ndarray, cache: WinogradCache):
    r"""The forward's linear steps transposed, in reverse: $\bar M = A \bar Y A^\top$ per tile,
    $\bar U = V^\top \bar M$ and $\bar V = \bar M U^\top$ (36 GEMMs each),
    $\bar g = G^\top \bar U G$, $\bar d = B \bar V B^\top$ added back onto the overlapping tiles.

    dy (N, H, W, F) -> dx (N, H, W, C), dw (F, C, 3, 3), db (F,).
    """
    N, H, W, C = cache.x_shape
    F = cache.U.shape[2]
    th, tw = -(-H // 4), -(-W // 4)
    dY = np.zeros((4, 4, N, th, tw, F), dtype=dy.dtype)                # entry (a, c) of every output tile
    for a in range(4):
        for c in range(4):  # the outputs past H, W had no effect: their gradient stays 0
            part = dy[:, a::4, c::4]
            dY[a, c, :, :part.shape[1], :part.shape[2]] = part
    dM = (_AA.T.astype(dy.dtype) @ dY.reshape(16, -1)).reshape(36, -1, F)  # (36, T, F)
    dU = cache.V.transpose(0, 2, 1) @ dM                                # (36, C, F)
    dw = filters_from_matrix((_GG.T.astype(dy.dtype) @ dU.reshape(36, -1)).reshape(9 * C, F), 3, 3)
    dV = dM @ cache.U.transpose(0, 2, 1)                                # (36, T, C)
    dd = (_BB.T.astype(dy.dtype) @ dV.reshape(36, -1)).reshape(6, 6, N, th, tw, C)
    dxp = np.zeros((N, 4 * th + 2, 4 * tw + 2, C), dtype=dy.dtype)
    for a in range(6):
        for c in range(6):  # within one (a, c) the tiles do not overlap: += is exact
            dxp[:, a:a + 4 * th:4, c:c + 4 * tw:4] += dd[a, c]
    return dxp[:, 1:H + 1, 1:W + 1], dw, column_sums(dy.reshape(-1, F))
