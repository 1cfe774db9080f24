"""The whole model: loss_and_grads (which runs every backward of the model: VAE._mlp_backward,
_posterior_backward, _encoder_backward, _decoder_backward and _backward, also ConvVAE's in test_convvae.py) against finite
differences, and the public contract."""
import itertools
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from minivae import VAE
from minivae.gradcheck import check_params
from minivae.likelihoods import LIKELIHOODS
from minivae.nn import ACTIVATIONS
from minivae.objectives import elbo_joint_form, elbo_kl_form, expected_log_prior
from minivae.gaussian import entropy, kl_std_normal_forward

from checks import assert_param_grads
from strategies import sample_data

D, K, N = 6, 3, 4


@pytest.mark.task_elbo
@pytest.mark.parametrize("likelihood,activation", list(itertools.product(LIKELIHOODS, ACTIVATIONS)))
@pytest.mark.parametrize("S", [1, 3])
def test_loss_and_grads_match_finite_differences(likelihood, activation, S):
    rng = np.random.default_rng(zlib.crc32(f"{likelihood}/{activation}/{S}".encode()))  # stable across runs
    vae = VAE(x_dim=D, hidden=(5, 4), z_dim=K, likelihood=likelihood, activation=activation,
              seed=1, dtype="float64", obs_scale=0.7)
    x = sample_data(likelihood, rng, N, D)
    eps = rng.standard_normal((S, N, K) if S > 1 else (N, K))
    beta = 0.7
    out = vae.loss_and_grads(x, eps, beta=beta)
    assert set(out.grads) == set(vae.params)
    assert all(out.grads[k].shape == vae.params[k].shape for k in vae.params)
    # h = 1e-4: the loss is O(10) nats, so a smaller step drowns in round-off.
    assert_param_grads(lambda: vae.loss_and_grads(x, eps, beta=beta).loss, vae.params, out.grads,
                       f"loss_and_grads, {likelihood} likelihood, {activation}, hidden (5, 4), S = {S}, beta 0.7")


@pytest.mark.task_elbo
def test_linear_model_gradcheck():
    """hidden=() is the linear-Gaussian (pPCA) model: still a VAE, still exact."""
    rng = np.random.default_rng(3)
    vae = VAE(x_dim=D, hidden=(), z_dim=2, likelihood="gaussian", seed=2, dtype="float64", obs_scale=0.5)
    x, eps = rng.standard_normal((N, D)), rng.standard_normal((5, N, 2))
    out = vae.loss_and_grads(x, eps, beta=1.3)
    assert_param_grads(lambda: vae.loss_and_grads(x, eps, beta=1.3).loss, vae.params, out.grads,
                       "loss_and_grads, the linear-Gaussian model (hidden = ()), S = 5, beta 1.3")
    assert sorted(vae.params) == ["dec.out.W", "dec.out.b", "enc.log_var.W", "enc.log_var.b",
                                  "enc.mu.W", "enc.mu.b"]


def test_loss_is_mean_negative_elbo_in_nats_per_example():
    rng = np.random.default_rng(0)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64")
    x, eps = sample_data("bernoulli", rng, N, D), rng.standard_normal((2, N, K))
    out = vae.loss_and_grads(x, eps, beta=2.5)
    t = vae.terms(x, eps)
    assert out.recon == pytest.approx(-t.log_px_z.mean(), rel=1e-14)
    assert out.kl == pytest.approx(t.kl.mean(), rel=1e-14)
    assert out.loss == pytest.approx(out.recon + 2.5 * out.kl, rel=1e-14)
    assert out.loss == pytest.approx(-vae.elbo(x, eps, beta=2.5).mean(), rel=1e-14)
    mu, log_var = vae.encode(x)
    assert t.mu == pytest.approx(mu) and t.log_var == pytest.approx(log_var)
    # a sum over pixels, never a mean
    lp_manual = np.sum(x * vae.decode(t.z) - np.logaddexp(0, vae.decode(t.z)), axis=-1)  # (S, N)
    np.testing.assert_allclose(t.log_px_z, lp_manual, rtol=1e-12)


def test_elbo_forms_agree():
    """E_q[log p(x|z)] - KL and E_q[log p(x,z)] + H(q): equal in expectation, and
    exactly equal once E_q[log p(z)] is taken in closed form."""
    rng = np.random.default_rng(1)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64")
    x = sample_data("bernoulli", rng, N, D)
    S = 20000
    t = vae.terms(x, rng.standard_normal((S, N, K)))
    kl_form = elbo_kl_form(t.log_px_z, t.kl)
    joint = elbo_joint_form(t.log_px_z, t.z, t.log_var)
    # per-draw difference is mean_s log p(z_s) - E[log p(z)]: zero-mean noise
    from minivae.gaussian import log_density
    diff_draws = log_density(t.z, 0.0, np.zeros(K)) - expected_log_prior(t.mu, t.log_var)  # (S, N)
    se = diff_draws.std(axis=0) / np.sqrt(S)
    assert np.all(np.abs(joint - kl_form) < 4 * se + 1e-12)
    exact = t.log_px_z.mean(0) + expected_log_prior(t.mu, t.log_var) + entropy(t.log_var)
    np.testing.assert_allclose(exact, kl_form, rtol=0, atol=1e-10)


def test_dtype_float32_everywhere():
    rng = np.random.default_rng(0)
    for lik in LIKELIHOODS:
        vae = VAE(x_dim=D, hidden=(5,), z_dim=K, likelihood=lik, dtype="float32")
        x, eps = sample_data(lik, rng, N, D), rng.standard_normal((2, N, K))
        out = vae.loss_and_grads(x, eps)
        assert vae.flat.dtype == np.float32
        assert all(g.dtype == np.float32 for g in out.grads.values()), lik
        assert all(a.dtype == np.float32 for a in vae.terms(x, eps)), lik
        assert np.isfinite(out.loss)


@pytest.mark.parametrize("objective", ["elbo", "iwae"])
def test_float32_backward_never_promotes(monkeypatch, objective):
    """A float64 intermediate anywhere in the chain would show in the end only if it
    reached a gradient: check the arrays flowing into every affine backward instead."""
    import minivae.vae as vae_module
    real, seen = vae_module.affine_backward, []

    def checked(dy, cache, *a, **kw):
        seen.append((dy.dtype, cache.x.dtype, cache.W.dtype))
        return real(dy, cache, *a, **kw)

    monkeypatch.setattr(vae_module, "affine_backward", checked)
    rng = np.random.default_rng(3)
    for lik in LIKELIHOODS:
        vae = VAE(x_dim=D, hidden=(5,), z_dim=K, likelihood=lik, dtype="float32")
        vae.loss_and_grads(sample_data(lik, rng, N, D), rng.standard_normal((2, N, K)), objective=objective,
                           **({} if objective == "iwae" else {"beta": np.float64(0.5), "free_bits": 0.1}))
    assert seen and all(dt == np.float32 for triple in seen for dt in triple), set(seen)


def test_float32_and_float64_agree():
    rng = np.random.default_rng(2)
    x, eps = sample_data("bernoulli", rng, N, D), rng.standard_normal((N, K))
    a = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float32").loss_and_grads(x, eps)
    b = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64").loss_and_grads(x, eps)
    assert a.loss == pytest.approx(b.loss, rel=1e-5)
    for k in b.grads:
        np.testing.assert_allclose(a.grads[k], b.grads[k], rtol=1e-3, atol=1e-5)


def test_params_are_views_of_flat_and_grads_can_be_preallocated():
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64")
    assert sum(p.size for p in vae.params.values()) == vae.n_params == vae.flat.size
    vae.flat[:] = 0.5
    assert all(np.all(p == 0.5) for p in vae.params.values())
    with pytest.raises(TypeError):
        vae.params["enc.0.W"] = np.zeros((D, 5))  # the mapping is read-only
    buf = np.zeros(vae.n_params)
    rng = np.random.default_rng(0)
    x, eps = sample_data("bernoulli", rng, N, D), rng.standard_normal((N, K))
    out = vae.loss_and_grads(x, eps, grads=vae.views(buf))
    fresh = vae.loss_and_grads(x, eps)
    assert np.shares_memory(out.grads["dec.out.W"], buf)
    for k in fresh.grads:
        np.testing.assert_array_equal(out.grads[k], fresh.grads[k])


def test_same_seed_same_model_and_config_round_trip():
    a, b = VAE(seed=3), VAE(seed=3)
    np.testing.assert_array_equal(a.flat, b.flat)
    assert not np.array_equal(a.flat, VAE(seed=4).flat)
    c = VAE(**a.config())
    np.testing.assert_array_equal(a.flat, c.flat)


def test_encode_decode_shapes():
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, likelihood="gaussian_learned", dtype="float64")
    mu, log_var = vae.encode(np.zeros((7, D)))
    assert mu.shape == log_var.shape == (7, K)
    mean, log_var_x = vae.decode(np.zeros((2, 7, K)))
    assert mean.shape == log_var_x.shape == (2, 7, D)
    assert vae.decode_mean(np.zeros((7, K))).shape == (7, D)
    b = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64")
    logits = b.decode(np.zeros((7, K)))
    np.testing.assert_allclose(b.decode_mean(np.zeros((7, K))), 1 / (1 + np.exp(-logits)))


def test_eps_zero_decodes_the_mean():
    rng = np.random.default_rng(5)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64")
    x = sample_data("bernoulli", rng, N, D)
    t = vae.terms(x, np.zeros((N, K)))
    np.testing.assert_array_equal(t.z[0], t.mu)


@pytest.mark.parametrize("kwargs,match", [
    (dict(z_dim=0), "z_dim"), (dict(x_dim=-1), "x_dim"), (dict(hidden=(4, 0)), "hidden"),
    (dict(likelihood="no-such-likelihood"), "bernoulli, gaussian"), (dict(activation="no-such-activation"), "relu, leaky_relu"),
    (dict(dtype="no-such-dtype"), "float32"), (dict(obs_scale=0.0), "scale"),
])
def test_constructor_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        VAE(**kwargs)


def test_bad_shapes_are_clear_errors():
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64")
    with pytest.raises(ValueError, match=r"x must have shape \(N, 6\)"):
        vae.loss_and_grads(np.zeros((N, D + 1)), np.zeros((N, K)))
    with pytest.raises(ValueError, match="eps must have shape"):
        vae.loss_and_grads(np.zeros((N, D)), np.zeros((N, K + 1)))
    with pytest.raises(ValueError, match="eps must have shape"):
        vae.loss_and_grads(np.zeros((N, D)), np.zeros((2, N + 1, K)))


def test_loss_and_grads_does_not_mutate_inputs():
    rng = np.random.default_rng(6)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64")
    x, eps = sample_data("bernoulli", rng, N, D), rng.standard_normal((3, N, K))
    x0, eps0, p0 = x.copy(), eps.copy(), vae.flat.copy()
    vae.loss_and_grads(x, eps)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(eps, eps0)
    np.testing.assert_array_equal(vae.flat, p0)


def test_more_samples_reduce_the_variance_of_the_loss():
    """With S samples the ELBO is an average: its spread over noise draws shrinks ~ 1/sqrt(S)."""
    rng = np.random.default_rng(7)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64")
    x = sample_data("bernoulli", rng, N, D)
    one = [vae.loss_and_grads(x, rng.standard_normal((N, K))).loss for _ in range(400)]
    many = [vae.loss_and_grads(x, rng.standard_normal((16, N, K))).loss for _ in range(400)]
    ratio = np.std(one) / np.std(many)
    assert 3.0 < ratio < 5.3  # sqrt(16) = 4
    assert abs(np.mean(one) - np.mean(many)) < 4 * np.std(one) / np.sqrt(400)


# ---------------------------------------------------------------- model variants
def _check_model(vae, x, eps, **kw):
    out = vae.loss_and_grads(x, eps, **kw)
    assert_param_grads(lambda: vae.loss_and_grads(x, eps, **kw).loss, vae.params, out.grads,
                       f"loss_and_grads of VAE({vae.config()}), eps {np.shape(eps)}, {kw}")
    return out


@pytest.mark.task_elbo
@pytest.mark.parametrize("S", [1, 4])
def test_conditional_vae_gradients(S):
    rng = np.random.default_rng(11)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, c_dim=3, activation="tanh", seed=2, dtype="float64")
    assert vae.shapes["enc.0.W"] == (D + 3, 5) and vae.shapes["dec.0.W"] == (K + 3, 5)
    x, c = sample_data("bernoulli", rng, N, D), np.eye(3)[rng.integers(0, 3, N)]
    _check_model(vae, x, rng.standard_normal((S, N, K)), c=c, beta=1.5)
    with pytest.raises(ValueError, match="needs a context"):
        vae.loss_and_grads(x, rng.standard_normal((N, K)))
    with pytest.raises(ValueError, match="no context"):
        VAE(x_dim=D, hidden=(5,), z_dim=K).encode(x, c=c)


def test_context_changes_the_decoding():
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, c_dim=2, dtype="float64")
    z = np.zeros((1, K))
    assert not np.allclose(vae.decode_mean(z, c=[[1.0, 0.0]]), vae.decode_mean(z, c=[[0.0, 1.0]]))


@pytest.mark.task_elbo
def test_separate_decoder_widths_and_linear_decoder():
    rng = np.random.default_rng(12)
    vae = VAE(x_dim=D, hidden=(7, 5), decoder_hidden=(), z_dim=K, likelihood="categorical",
              seed=3, dtype="float64")
    assert "dec.0.W" not in vae.shapes and vae.shapes["dec.out.W"] == (K, D)
    _check_model(vae, sample_data("categorical", rng, N, D), rng.standard_normal((2, N, K)))
    assert VAE(**vae.config()).shapes == vae.shapes


@pytest.mark.task_elbo
@pytest.mark.parametrize("likelihood", ["bernoulli", "gaussian_learned"])
@pytest.mark.parametrize("S", [1, 5])
def test_iwae_objective_gradients(likelihood, S):
    rng = np.random.default_rng(13)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, likelihood=likelihood, activation="tanh", seed=4, dtype="float64")
    _check_model(vae, sample_data(likelihood, rng, N, D), rng.standard_normal((S, N, K)), objective="iwae")


def test_iwae_loss_is_minus_the_iw_bound_and_tighter_than_the_elbo():
    from minivae.estimate import log_weights
    rng = np.random.default_rng(14)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, activation="tanh", dtype="float64")
    x, eps = sample_data("bernoulli", rng, N, D), rng.standard_normal((50, N, K))
    lw = log_weights(vae, x, eps)
    expected = -(np.logaddexp.reduce(lw, axis=0) - np.log(50)).mean()
    assert vae.loss_and_grads(x, eps, objective="iwae").loss == pytest.approx(expected, rel=1e-12)
    iw = [vae.loss_and_grads(x, rng.standard_normal((50, N, K)), objective="iwae").loss for _ in range(50)]
    el = [vae.loss_and_grads(x, rng.standard_normal((50, N, K))).loss for _ in range(50)]
    assert np.mean(iw) < np.mean(el) - 4 * np.hypot(np.std(iw), np.std(el)) / np.sqrt(50)
    with pytest.raises(ValueError, match="neither beta"):
        vae.loss_and_grads(x, eps, objective="iwae", beta=0.5)


@pytest.mark.task_elbo
def test_free_bits_gradients_and_value():
    rng = np.random.default_rng(15)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, activation="tanh", seed=5, dtype="float64")
    x, eps = sample_data("bernoulli", rng, N, D), rng.standard_normal((2, N, K))
    t = vae.terms(x, eps)
    kl_dims = kl_std_normal_forward(t.mu[..., None], t.log_var[..., None])[0]  # (N, K): one KL per dimension
    means = np.sort(kl_dims.mean(0))
    floor = float(means[:2].mean())  # one dimension below the floor, two above (none at the kink)
    out = _check_model(vae, x, eps, beta=2.0, free_bits=floor)
    assert out.loss == pytest.approx(out.recon + 2.0 * np.maximum(kl_dims.mean(0), floor).sum(), rel=1e-12)
    assert out.kl == pytest.approx(kl_dims.sum(1).mean(), rel=1e-12)  # the true KL is still reported


@settings(max_examples=40, deadline=None)
@given(likelihood=st.sampled_from(list(LIKELIHOODS)), dtype=st.sampled_from(["float32", "float64"]),
       objective=st.sampled_from(["elbo", "iwae"]), log_var=st.floats(-50, 50),
       logit=st.sampled_from([-1e4, 1e4]), seed=st.integers(0, 2**16))
def test_extreme_weights_and_inputs_give_finite_loss_and_gradients(likelihood, dtype, objective, log_var,
                                                                  logit, seed):
    """Posterior log-variances driven to +-50 (clipped to the safe range), decoder outputs
    of +-1e4 (logits, means, log-variances), data at the edge of each support: the loss and
    every gradient stay finite, without one overflow, in float32 as in float64."""
    rng = np.random.default_rng(seed)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, likelihood=likelihood, seed=seed % 7, dtype=dtype,
              obs_scale=0.1)
    vae.params["enc.log_var.b"][...] = log_var
    vae.params["dec.out.b"][...] = logit
    x = sample_data(likelihood, rng, N, D) * (1 if likelihood in ("bernoulli", "categorical") else 1e3)
    eps = rng.standard_normal((3, N, K))
    with np.errstate(over="raise", invalid="raise", divide="raise"):
        out = vae.loss_and_grads(x, eps, objective=objective)
    assert np.isfinite(out.loss) and np.isfinite(out.recon) and np.isfinite(out.kl)
    for name, g in out.grads.items():
        assert g.dtype == np.dtype(dtype) and np.all(np.isfinite(g)), name


@pytest.mark.parametrize("c_dim", [0, 2])
def test_posterior_backward_gradcheck_with_clipped_units(c_dim):
    """VAE._posterior_backward on its own: from random dmu, dlog_var to the encoder's
    parameters, through the log-variance clip (two units pushed below its range get
    exactly 0), against finite differences; the decoder's gradients are not touched."""
    rng = np.random.default_rng(12)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, dtype="float64", seed=3, c_dim=c_dim)
    vae.params["enc.log_var.b"][:2] = -40.0
    x = sample_data("bernoulli", rng, N, D)
    c = np.eye(c_dim)[rng.integers(0, c_dim, N)] if c_dim else None
    dmu, dlog_var = rng.standard_normal((N, K)), rng.standard_normal((N, K))

    def loss():
        mu, log_var, _ = vae._posterior_forward(x, c)
        return float(np.sum(dmu * mu) + np.sum(dlog_var * log_var))
    grads = vae.views(np.full(vae.n_params, np.nan))
    vae._posterior_backward(dmu, dlog_var, vae._posterior_forward(x, c)[2], grads)
    enc = [k for k in vae.params if k.startswith("enc.")]
    errors = check_params(loss, {k: vae.params[k] for k in enc}, {k: grads[k] for k in enc})
    assert max(errors.values()) <= 1e-7, errors
    assert np.all(grads["enc.log_var.b"][:2] == 0) and np.all(grads["enc.log_var.W"][:, :2] == 0)
    assert all(np.all(np.isnan(g)) for k, g in grads.items() if not k.startswith("enc."))


def test_gradient_through_the_log_var_clip_matches_finite_differences():
    """Some posterior units below the safe range, one inside: the whole model's gradient
    (0 through the clipped units) still matches finite differences. (Above the range the
    KL is ~e^30 / 2 nats, too large for a finite difference to resolve.)"""
    rng = np.random.default_rng(11)
    vae = VAE(x_dim=D, hidden=(5,), z_dim=K, seed=3, dtype="float64")
    vae.params["enc.log_var.b"][...] = [-40.0, -34.0, 0.0]
    x, eps = sample_data("bernoulli", rng, N, D), rng.standard_normal((2, N, K))
    out = vae.loss_and_grads(x, eps)
    assert np.all(out.grads["enc.log_var.W"][:, :2] == 0) and np.any(out.grads["enc.log_var.W"][:, 2] != 0)
    errors = check_params(lambda: vae.loss_and_grads(x, eps).loss, vae.params, out.grads, h=1e-4)
    assert max(errors.values()) <= 1e-7


def test_a_layer_that_reads_data_skips_only_its_input_gradient():
    """The model's data layers call affine_backward with W emptied: the same dW and db, and
    an empty product where the data's gradient, which nobody needs, would be."""
    from minivae.nn import affine_backward, affine_forward
    from minivae.vae import _skip_input_gradient

    rng = np.random.default_rng(11)
    x, W, b, dy = (rng.standard_normal(s) for s in [(5, 4), (4, 3), (3,), (5, 3)])
    cache = affine_forward(x, W, b)[1]
    dx, dW, db = affine_backward(dy, cache)
    dx2, dW2, db2 = affine_backward(dy, _skip_input_gradient(cache))
    assert dx2.shape == (5, 0) and dx.shape == (5, 4)
    np.testing.assert_array_equal(dW2, dW)
    np.testing.assert_array_equal(db2, db)
