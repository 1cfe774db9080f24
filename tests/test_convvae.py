"""The convolutional VAE: the whole model against finite differences, and its shapes."""
import numpy as np
import pytest

from minivae.conv import conv2d_forward
from minivae.convvae import ConvVAE
from minivae.gradcheck import check_params


@pytest.mark.parametrize("likelihood,S,c_dim", [("bernoulli", 1, 0), ("gaussian_learned", 2, 0),
                                                ("bernoulli", 2, 3)])
def test_conv_vae_gradients(likelihood, S, c_dim):
    rng = np.random.default_rng(0)
    vae = ConvVAE(image_shape=(1, 8, 8), channels=(2, 3), z_dim=2, likelihood=likelihood,
                  activation="tanh", seed=1, dtype="float64", c_dim=c_dim)
    N = 2
    x = (rng.random((N, 64)) < 0.5).astype(float) if likelihood == "bernoulli" else rng.random((N, 64))
    c = np.eye(3)[[0, 2]] if c_dim else None
    eps = rng.standard_normal((S, N, 2))
    out = vae.loss_and_grads(x, eps, beta=0.8 if S == 1 else 1.0, c=c)
    errors = check_params(lambda: vae.loss_and_grads(x, eps, beta=0.8 if S == 1 else 1.0, c=c).loss,
                          vae.params, out.grads, h=1e-4)
    worst = max(errors, key=errors.get)
    assert errors[worst] <= 1e-7, f"{worst}: {errors[worst]:.2e}"


def test_conv_vae_iwae_gradients():
    rng = np.random.default_rng(1)
    vae = ConvVAE(image_shape=(1, 4, 8), channels=(2, 2), z_dim=2, activation="softplus", seed=2,
                  dtype="float64")
    x, eps = (rng.random((2, 32)) < 0.5).astype(float), rng.standard_normal((3, 2, 2))
    out = vae.loss_and_grads(x, eps, objective="iwae")
    errors = check_params(lambda: vae.loss_and_grads(x, eps, objective="iwae").loss, vae.params,
                          out.grads, h=1e-4)
    assert max(errors.values()) <= 1e-7


def test_conv_vae_shapes_and_config():
    vae = ConvVAE(channels=(4, 8), z_dim=5, dtype="float32")
    mu, log_var = vae.encode(np.zeros((3, 784)))
    assert mu.shape == log_var.shape == (3, 5)
    assert vae.decode(np.zeros((2, 3, 5))).shape == (2, 3, 784)
    assert vae.decode_mean(np.zeros((3, 5))).dtype == np.float32
    assert vae.shapes["dec.conv0.W"] == (16, 8, 3, 3)  # 4x the channels, then depth-to-space
    again = ConvVAE(**vae.config())
    np.testing.assert_array_equal(again.flat, vae.flat)
    with pytest.raises(ValueError, match="divisible by 4"):
        ConvVAE(image_shape=(1, 30, 30))


def pixel_shuffle_order(x, r):
    """PyTorch's pixel_shuffle on NHWC: y[n, h*r + i, w*r + j, c] = x[n, h, w, c*r*r + i*r + j]."""
    N, H, W, Crr = x.shape
    return x.reshape(N, H, W, Crr // (r * r), r, r).transpose(0, 1, 4, 2, 5, 3).reshape(N, H * r, W * r, -1)


@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian_learned"])
def test_stored_parameters_mean_what_pytorch_layers_mean(likelihood):
    """The model, written out with the im2col convolution on the stored (F, C, kh, kw) filters,
    PyTorch's pixel_shuffle channel order and channels-first flattening, gives the same numbers:
    the parameters (and checkpoints) keep their meaning whatever order the layers compute in."""
    rng = np.random.default_rng(3)
    vae = ConvVAE(image_shape=(1, 8, 12), channels=(3, 4), z_dim=2, likelihood=likelihood, seed=4,
                  dtype="float64")
    p, relu = vae.params, (lambda a: np.maximum(a, 0))
    x = rng.random((2, 96))
    h = relu(conv2d_forward(x.reshape(2, 1, 8, 12).transpose(0, 2, 3, 1), p["enc.conv0.W"], p["enc.conv0.b"], 2, 1)[0])
    h = relu(conv2d_forward(h, p["enc.conv1.W"], p["enc.conv1.b"], 2, 1)[0])   # (2, 2, 3, 4)
    h = h.transpose(0, 3, 1, 2).reshape(2, -1)                                 # channels first
    mu, log_var = vae.encode(x)
    np.testing.assert_allclose(mu, h @ p["enc.mu.W"] + p["enc.mu.b"], rtol=1e-12, atol=1e-12)
    z = rng.standard_normal((2, 2))
    h = relu(z @ p["dec.fc.W"] + p["dec.fc.b"]).reshape(2, 4, 2, 3).transpose(0, 2, 3, 1)
    h = relu(pixel_shuffle_order(conv2d_forward(h, p["dec.conv0.W"], p["dec.conv0.b"], 1, 1)[0], 2))
    out = pixel_shuffle_order(conv2d_forward(h, p["dec.conv1.W"], p["dec.conv1.b"], 1, 1)[0], 2)  # (2, 8, 12, P)
    expected = out.transpose(0, 3, 1, 2).reshape(2, -1)                        # (2, P*H*W), channels first
    np.testing.assert_allclose(vae._decoder_forward(z)[0], expected, rtol=1e-10, atol=1e-10)
