r"""A convolutional VAE: the same objective, a convolutional encoder and a
sub-pixel convolutional decoder.

    x (N, 1, 28, 28) ─conv 3x3 s2─▶ (N, c1, 14, 14) ─conv 3x3 s2─▶ (N, c2, 7, 7) ─flatten─▶ mu, log_var
    z ─affine─▶ (N, c2, 7, 7) ─conv 3x3 → 4 c1─▶ depth-to-space ─▶ (N, c1, 14, 14)
                              ─conv 3x3 → 4 P─▶ depth-to-space ─▶ (N, P, 28, 28) = the likelihood's parameters

Upsampling is a stride-1 convolution to $r^2$ times the channels followed by a
depth-to-space rearrangement (Shi et al. 2016): it has the expressive power of
a transposed convolution without its checkerboard overlap. Only the network
pieces differ from :class:`minivae.vae.VAE`: reparameterization, KL,
likelihoods, ELBO/IWAE objectives and the backward through them are inherited.
Taught in lesson 11.
"""
from __future__ import annotations

from typing import Sequence

import numpy as np

from .conv import conv2d_backward, conv2d_forward, depth_to_space_backward, depth_to_space_forward
from .nn import affine_backward, affine_forward
from .vae import VAE

__all__ = ["ConvVAE"]


class ConvVAE(VAE):
    """A VAE on images (C, H, W), H and W divisible by 4, with conv encoder and sub-pixel decoder.

    ``channels`` = (c1, c2) are the feature maps at H/2 and H/4; the other
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
        C, (c1, c2), K = self.image_shape[0], self.channels, self.z_dim
        h4, w4 = self._grid
        P = self.likelihood.params_per_dim * C      # output channels: the likelihood's parameters
        flat = c2 * h4 * w4
        return {
            "enc.conv0.W": (c1, C, 3, 3), "enc.conv0.b": (c1,),
            "enc.conv1.W": (c2, c1, 3, 3), "enc.conv1.b": (c2,),
            "enc.mu.W": (flat + self.c_dim, K), "enc.mu.b": (K,),
            "enc.log_var.W": (flat + self.c_dim, K), "enc.log_var.b": (K,),
            "dec.fc.W": (K + self.c_dim, flat), "dec.fc.b": (flat,),
            "dec.conv0.W": (4 * c1, c2, 3, 3), "dec.conv0.b": (4 * c1,),
            "dec.conv1.W": (4 * P, c1, 3, 3), "dec.conv1.b": (4 * P,),
        }

    def _fan_in(self, name: str) -> int:
        w = self.shapes[name.rsplit(".", 1)[0] + ".W"]
        return int(np.prod(w[1:])) if len(w) == 4 else w[0]  # conv: C * kh * kw

    # ------------------------------------------------------------ encoder
    def _encode(self, x: np.ndarray, c: np.ndarray | None = None):
        p, act = self._params, self._act_forward
        N = len(x)
        a0, c0 = conv2d_forward(x.reshape((N,) + self.image_shape), p["enc.conv0.W"], p["enc.conv0.b"], 2, 1)
        h0, a0c = act(a0)                                                     # (N, c1, H/2, W/2)
        a1, c1 = conv2d_forward(h0, p["enc.conv1.W"], p["enc.conv1.b"], 2, 1)
        h1, a1c = act(a1)                                                     # (N, c2, H/4, W/4)
        h = h1.reshape(N, -1)                                                 # (N, c2*H/4*W/4)
        if c is not None:
            h = np.concatenate([h, c], axis=1)                                # (N, flat + C)
        mu, c_mu = affine_forward(h, p["enc.mu.W"], p["enc.mu.b"])            # (N, K)
        log_var, c_lv = affine_forward(h, p["enc.log_var.W"], p["enc.log_var.b"])
        return mu, log_var, (c0, a0c, c1, a1c, h1.shape, c_mu, c_lv)

    def _encode_backward(self, dmu, dlog_var, cache, grads) -> None:
        c0, a0c, c1, a1c, h1_shape, c_mu, c_lv = cache
        g = grads
        dh = affine_backward(dmu, c_mu, out=(g["enc.mu.W"], g["enc.mu.b"]))[0]
        dh = dh + affine_backward(dlog_var, c_lv, out=(g["enc.log_var.W"], g["enc.log_var.b"]))[0]
        dh1 = dh[:, :int(np.prod(h1_shape[1:]))].reshape(h1_shape)            # drop the context part
        dh0, g["enc.conv1.W"][...], g["enc.conv1.b"][...] = conv2d_backward(self._act_backward(dh1, a1c), c1)
        _, g["enc.conv0.W"][...], g["enc.conv0.b"][...] = conv2d_backward(
            self._act_backward(dh0, a0c), c0, input_grad=False)               # the input is data

    # ------------------------------------------------------------ decoder
    def _decode(self, z: np.ndarray, c: np.ndarray | None = None):
        p, act = self._params, self._act_forward
        lead = z.shape[:-1]
        if c is not None:
            z = np.concatenate([z, np.broadcast_to(c, lead + c.shape[-1:])], axis=-1)  # (..., N, K + C)
        z = z.reshape(-1, z.shape[-1])                                        # (M, K + C), M = S*N
        M, (h4, w4), c2 = len(z), self._grid, self.channels[1]
        a, c_fc = affine_forward(z, p["dec.fc.W"], p["dec.fc.b"])
        h, ac_fc = act(a)
        a0, c0 = conv2d_forward(h.reshape(M, c2, h4, w4), p["dec.conv0.W"], p["dec.conv0.b"], 1, 1)
        u0, s0 = depth_to_space_forward(a0, 2)                                # (M, c1, H/2, W/2)
        h0, ac0 = act(u0)
        a1, c1 = conv2d_forward(h0, p["dec.conv1.W"], p["dec.conv1.b"], 1, 1)  # (M, 4P, H/2, W/2)
        out, s1 = depth_to_space_forward(a1, 2)                               # (M, P, H, W)
        return out.reshape(lead + (-1,)), (c_fc, ac_fc, c0, s0, ac0, c1, s1, lead, out.shape)

    def _decode_backward(self, dout, cache, grads) -> np.ndarray:
        c_fc, ac_fc, c0, s0, ac0, c1, s1, lead, out_shape = cache
        g = grads
        da1 = depth_to_space_backward(dout.reshape(out_shape), s1)           # (M, 4P, H/2, W/2)
        dh0, g["dec.conv1.W"][...], g["dec.conv1.b"][...] = conv2d_backward(da1, c1)
        da0 = depth_to_space_backward(self._act_backward(dh0, ac0), s0)       # (M, 4 c1, H/4, W/4)
        dh, g["dec.conv0.W"][...], g["dec.conv0.b"][...] = conv2d_backward(da0, c0)
        dz = affine_backward(self._act_backward(dh.reshape(len(dh), -1), ac_fc), c_fc,
                             out=(g["dec.fc.W"], g["dec.fc.b"]))[0]           # (M, K + C)
        return dz[:, :self.z_dim].reshape(lead + (self.z_dim,))
