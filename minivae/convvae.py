r"""A convolutional VAE: the same objective, a convolutional encoder and a
sub-pixel convolutional decoder.

    x (N, 28, 28, 1) ─conv 3x3 s2─▶ (N, 14, 14, f1) ─conv 3x3 s2─▶ (N, 7, 7, f2) ─flatten─▶ mu, log_var
    z ─affine─▶ (N, 7, 7, f2) ─conv 3x3 → 4 f1─▶ depth-to-space ─▶ (N, 14, 14, f1)
                              ─conv 3x3 → 4 P─▶ depth-to-space ─▶ (N, 28, 28, P) = the likelihood's parameters

(f1, f2 are the feature maps, ``channels``; P the likelihood's parameters per pixel.)

Upsampling is a stride-1 convolution to $r^2$ times the channels followed by a
depth-to-space rearrangement (Shi et al. 2016): it has the expressive power of
a transposed convolution without its checkerboard overlap. Only the network
pieces differ from :class:`minivae.vae.VAE`: reparameterization, KL,
likelihoods, ELBO/IWAE objectives and the backward through them are inherited.

Inside, images are channels last (see :mod:`minivae.conv`). The encoder's
stride-2 convolutions run by im2col, the decoder's 3x3 convolution by Winograd
tiles (:mod:`minivae.winograd`), its output layer (4P filters) taps first; tests
hold each equal to im2col. What the model exchanges keeps PyTorch's layouts: x
and the decoder's output are flattened channels first, (N, C*H*W), filters are
(F, C, kh, kw), the heads read the maps flattened channels first, and the
sub-pixel layers' channels are in ``pixel_shuffle`` order. So a parameter means
the same as in the identical PyTorch model, and checkpoints the same as before.
Taught in lesson 11.
"""
from __future__ import annotations

from typing import NamedTuple, Sequence

import numpy as np

from .conv import (Conv2dCache, ScatterCache, ShuffleCache, conv2d_backward, conv2d_forward,
                   conv2d_scatter_backward, conv2d_scatter_forward, depth_to_space_backward, depth_to_space_forward)
from .nn import ActCache, AffineCache, affine_backward, affine_forward
from .vae import VAE
from .winograd import WinogradCache, winograd_conv3x3_backward, winograd_conv3x3_forward

__all__ = ["ConvVAE", "ConvEncoderCache", "ConvDecoderCache"]


class ConvEncoderCache(NamedTuple):
    conv0: Conv2dCache
    act0: ActCache
    conv1: Conv2dCache
    act1: ActCache
    maps_shape: tuple[int, ...]   # (N, H/4, W/4, f2), the feature maps the heads read, flattened
    mu: AffineCache
    log_var: AffineCache


class ConvDecoderCache(NamedTuple):
    fc: AffineCache
    act_fc: ActCache
    conv0: WinogradCache
    up0: ShuffleCache
    act0: ActCache
    conv1: ScatterCache
    up1: ShuffleCache
    lead: tuple[int, ...]         # z's leading shape, (S, N)
    out_shape: tuple[int, ...]    # (S*N, H, W, P)


class ConvVAE(VAE):
    """A VAE on images (C, H, W), H and W divisible by 4, with conv encoder and sub-pixel decoder.

    ``channels`` = (f1, f2) are the feature maps at H/2 and H/4; the other
    arguments are those of :class:`minivae.vae.VAE` (``x`` is still passed
    flattened, (N, C*H*W), so data, likelihoods and the trainer are shared).
    """

    def __init__(self, image_shape: Sequence[int] = (1, 28, 28), channels: Sequence[int] = (32, 64),
                 z_dim: int = 20, likelihood: str = "bernoulli", activation: str = "relu", seed: int = 0,
                 dtype: str = "float32", obs_scale: float = 1.0, c_dim: int = 0):
        self.image_shape = tuple(int(v) for v in image_shape)
        self.channels = tuple(int(v) for v in channels)
        if len(self.image_shape) != 3 or self.image_shape[1] % 4 or self.image_shape[2] % 4:
            raise ValueError(f"image_shape must be (C, H, W) with H and W divisible by 4, got {image_shape}")
        if len(self.channels) != 2 or min(self.channels) < 1:
            raise ValueError(f"channels must be two positive integers, got {channels}")
        super().__init__(x_dim=int(np.prod(self.image_shape)), hidden=(), z_dim=z_dim, likelihood=likelihood,
                         activation=activation, seed=seed, dtype=dtype, obs_scale=obs_scale, c_dim=c_dim)

    def config(self) -> dict:
        return dict(image_shape=list(self.image_shape), channels=list(self.channels), z_dim=self.z_dim,
                    likelihood=self.likelihood_name, activation=self.activation, seed=self.seed,
                    dtype=str(self.dtype), obs_scale=self.obs_scale, c_dim=self.c_dim)

    @property
    def _grid(self) -> tuple[int, int]:
        return self.image_shape[1] // 4, self.image_shape[2] // 4

    def _param_shapes(self) -> dict[str, tuple[int, ...]]:
        n_in, (f1, f2), K = self.image_shape[0], self.channels, self.z_dim
        h4, w4 = self._grid
        P = self.likelihood.params_per_dim * n_in   # output channels: the likelihood's parameters
        flat = f2 * h4 * w4
        return {
            "enc.conv0.W": (f1, n_in, 3, 3), "enc.conv0.b": (f1,),
            "enc.conv1.W": (f2, f1, 3, 3), "enc.conv1.b": (f2,),
            "enc.mu.W": (flat + self.c_dim, K), "enc.mu.b": (K,),
            "enc.log_var.W": (flat + self.c_dim, K), "enc.log_var.b": (K,),
            "dec.fc.W": (K + self.c_dim, flat), "dec.fc.b": (flat,),
            "dec.conv0.W": (4 * f1, f2, 3, 3), "dec.conv0.b": (4 * f1,),
            "dec.conv1.W": (4 * P, f1, 3, 3), "dec.conv1.b": (4 * P,),
        }

    def _fan_in(self, name: str) -> int:
        w = self.shapes[name.rsplit(".", 1)[0] + ".W"]
        return int(np.prod(w[1:])) if len(w) == 4 else w[0]  # conv: channels * kh * kw

    # ------------------------------------------------------------ sub-pixel filter order
    def _subpixel(self, layer: str) -> tuple[np.ndarray, np.ndarray]:
        """The filters (4C, C_in, 3, 3) and bias (4C,) of a layer before depth-to-space, their outputs
        reordered from the stored c*4 + k (PyTorch's ``pixel_shuffle`` order, so parameters and
        checkpoints match PyTorch's) to k*C + c, the order of :func:`minivae.conv.depth_to_space`
        (k = 2i + j, the sub-pixel)."""
        w, b = self._params[layer + ".W"], self._params[layer + ".b"]
        C = len(b) // 4
        return w.reshape((C, 4) + w.shape[1:]).swapaxes(0, 1).reshape(w.shape), b.reshape(C, 4).T.reshape(-1)

    def _put_subpixel(self, grads: dict, layer: str, dW: np.ndarray, db: np.ndarray) -> None:
        """Store the gradients of a :meth:`_subpixel` layer, back in the stored order."""
        C = len(db) // 4
        self._put(grads, layer, dW.reshape((4, C) + dW.shape[1:]).swapaxes(0, 1).reshape(dW.shape),
                  db.reshape(4, C).T.reshape(-1))

    # ------------------------------------------------------------ encoder
    def _encoder_forward(self, x: np.ndarray, c: np.ndarray | None = None):
        """x (N, C*H*W) [, c (N, C)] -> mu (N, K), the raw log-variance (N, K), ConvEncoderCache."""
        p, act = self._params, self._act_forward
        N = len(x)
        image = x.reshape((N,) + self.image_shape).transpose(0, 2, 3, 1)     # (N, H, W, C): channels last
        a0, conv0 = conv2d_forward(image, p["enc.conv0.W"], p["enc.conv0.b"], 2, 1)
        h0, act0 = act(a0)                                                    # (N, H/2, W/2, f1)
        a1, conv1 = conv2d_forward(h0, p["enc.conv1.W"], p["enc.conv1.b"], 2, 1)
        h1, act1 = act(a1)                                                    # (N, H/4, W/4, f2)
        h = h1.transpose(0, 3, 1, 2).reshape(N, -1)                           # (N, f2*H/4*W/4), channels first
        if c is not None:
            h = np.concatenate([h, c], axis=1)                                # (N, flat + C)
        mu, mu_cache = affine_forward(h, p["enc.mu.W"], p["enc.mu.b"])      # (N, K)
        raw, log_var_cache = affine_forward(h, p["enc.log_var.W"], p["enc.log_var.b"])
        return mu, raw, ConvEncoderCache(conv0, act0, conv1, act1, h1.shape, mu_cache, log_var_cache)

    def _encoder_backward(self, dmu, draw, cache: ConvEncoderCache, grads) -> None:
        """dmu, draw (N, K) -> the encoder's gradients, in ``grads`` (none for the data)."""
        dh_mu, dW, db = affine_backward(dmu, cache.mu)
        self._put(grads, "enc.mu", dW, db)
        dh_lv, dW, db = affine_backward(draw, cache.log_var)
        self._put(grads, "enc.log_var", dW, db)
        N, h4, w4, f2 = cache.maps_shape
        dh1 = (dh_mu + dh_lv)[:, :f2 * h4 * w4].reshape(N, f2, h4, w4).transpose(0, 2, 3, 1)  # no context
        dh0, dW, db = conv2d_backward(self._act_backward(dh1, cache.act1), cache.conv1)
        self._put(grads, "enc.conv1", dW, db)
        _, dW, db = conv2d_backward(self._act_backward(dh0, cache.act0), _skip_input_gradient(cache.conv0))
        self._put(grads, "enc.conv0", dW, db)

    # ------------------------------------------------------------ decoder
    def _decoder_forward(self, z: np.ndarray, c: np.ndarray | None = None):
        """z (..., N, K) [, c (N, C)] -> the likelihood's parameters (..., N, P*H*W), ConvDecoderCache."""
        p, act = self._params, self._act_forward
        lead = z.shape[:-1]
        if c is not None:
            z = np.concatenate([z, np.broadcast_to(c, lead + c.shape[-1:])], axis=-1)  # (..., N, K + C)
        z = z.reshape(-1, z.shape[-1])                                        # (M, K + C), M = S*N
        M, (h4, w4), f2 = len(z), self._grid, self.channels[1]
        a, fc = affine_forward(z, p["dec.fc.W"], p["dec.fc.b"])
        h, act_fc = act(a)
        maps = h.reshape(M, f2, h4, w4).transpose(0, 2, 3, 1)               # (M, H/4, W/4, f2)
        a0, conv0 = winograd_conv3x3_forward(maps, *self._subpixel("dec.conv0"))
        u0, up0 = depth_to_space_forward(a0, 2)                               # (M, H/2, W/2, f1)
        h0, act0 = act(u0)
        a1, conv1 = conv2d_scatter_forward(h0, *self._subpixel("dec.conv1"), 1, 1)  # (M, H/2, W/2, 4P)
        out, up1 = depth_to_space_forward(a1, 2)                              # (M, H, W, P)
        cache = ConvDecoderCache(fc, act_fc, conv0, up0, act0, conv1, up1, lead, out.shape)
        return out.transpose(0, 3, 1, 2).reshape(lead + (-1,)), cache         # channels first, like x

    def _decoder_backward(self, dout, cache: ConvDecoderCache, grads) -> np.ndarray:
        """dout (..., N, P*H*W) -> dz (..., N, K), filling the decoder's gradients."""
        M, H, W, P = cache.out_shape
        dout = dout.reshape(M, P, H, W).transpose(0, 2, 3, 1)                 # (M, H, W, P)
        da1 = depth_to_space_backward(dout, cache.up1)                        # (M, H/2, W/2, 4P)
        dh0, dW, db = conv2d_scatter_backward(da1, cache.conv1)
        self._put_subpixel(grads, "dec.conv1", dW, db)
        da0 = depth_to_space_backward(self._act_backward(dh0, cache.act0), cache.up0)  # (M, H/4, W/4, 4 f1)
        dmaps, dW, db = winograd_conv3x3_backward(da0, cache.conv0)
        self._put_subpixel(grads, "dec.conv0", dW, db)
        dh = dmaps.transpose(0, 3, 1, 2).reshape(M, -1)                       # (M, f2*H/4*W/4)
        dz, dW, db = affine_backward(self._act_backward(dh, cache.act_fc), cache.fc)
        self._put(grads, "dec.fc", dW, db)                                    # dz (M, K + C)
        return dz[:, :self.z_dim].reshape(cache.lead + (self.z_dim,))


def _skip_input_gradient(cache: Conv2dCache) -> Conv2dCache:
    """The cache of a convolution that reads data, for :func:`minivae.conv.conv2d_backward`:
    its input given no channels (and the filters none to read), so the input's gradient,
    which nobody needs, is an empty product and an empty col2im. dw and db come out unchanged."""
    return cache._replace(x_shape=cache.x_shape[:3] + (0,), w=cache.w[:, :0])
