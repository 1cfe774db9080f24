"""The catalogue of the lessons' identities: every entry holds, every entry fails when the library
computes its formula the plausible wrong way, and the command line prints the table."""
import importlib
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from minivae import derivations, special
from minivae.__main__ import main
from minivae.derivations import CATALOGUE, FULL, NAME_WIDTH, QUICK, Derivation
from minivae.lessons import find_lessons

ROOT = Path(__file__).resolve().parent.parent

BY_CHECK = {d.check.__name__: d for d in CATALOGUE}


def test_the_catalogue_names_at_least_fifteen_identities_each_from_a_lesson():
    assert len(CATALOGUE) >= 15
    names = [d.name for d in CATALOGUE]
    assert len(set(names)) == len(names) and all(len(n) <= NAME_WIDTH and n.isascii() for n in names)
    lessons = find_lessons()
    assert all(1 <= d.lesson <= max(lessons) for d in CATALOGUE)
    ### BEGIN INSTRUCTOR: the student copy withholds the lessons that derive its tasks
    assert all(d.lesson in lessons for d in CATALOGUE)
    ### END INSTRUCTOR
    assert {2, 3, 4, 5, 7, 9, 10, 13} <= {d.lesson for d in CATALOGUE}


@pytest.mark.parametrize("entry", CATALOGUE, ids=[d.check.__name__ for d in CATALOGUE])
def test_every_entry_holds_in_quick_mode(entry):
    r = entry.check(QUICK)
    assert r.ok, str(r)
    assert math.isfinite(r.lhs) and math.isfinite(r.rhs)


@pytest.mark.slow
def test_every_entry_holds_in_full_mode():
    failed = [(d.name, str(r)) for d in CATALOGUE if not (r := d.check(FULL)).ok]
    assert not failed


# ---------------------------------------------------------------- every entry can fail
def _times(grads, i, factor):
    return tuple(g * factor if k == i else g for k, g in enumerate(grads))


def _wrong_mstep(m_step):
    """Means divided by N instead of N_c."""
    def wrong(x, q, covariance="full", reg=0.0):
        g = m_step(x, q, covariance, reg)
        return g._replace(means=(q.T @ x) / len(x))
    return wrong


def _wrong_dirichlet_kl(kl):
    """The sign of the last term flipped: (beta - alpha)(psi(alpha) - psi(A))."""
    def wrong(a, b):
        value, cache = kl(a, b)
        a = np.asarray(a, np.float64)
        last = np.sum((a - b) * (special.digamma(a) - special.digamma(a.sum(-1, keepdims=True))), -1)
        return value - 2 * last, cache
    return wrong


# (function, the plausible mistake, the wrong function made from the right one, entries that must fail)
MUTANTS = [
    ("gaussian.kl_std_normal_forward", "sigma for sigma^2", lambda f: lambda mu, lv: f(mu, 0.5 * lv),
     ["_kl_std_normal", "_kl_term_variance", "_two_forms", "_kl_form", "_elbo_surgery"]),
    ("gaussian.kl_diag_forward", "a missing 1/2", lambda f: lambda *a: (2 * f(*a)[0], f(*a)[1]),
     ["_kl_diag", "_kl_diag_gradient"]),
    ("gaussian.kl_diag_backward", "a missing 1/2 in d/dlog s_q^2", lambda f: lambda d, c: _times(f(d, c), 1, 2.0),
     ["_kl_diag_gradient"]),
    ("estimate.reparameterize_backward", "sigma for sigma/2 in dz/dlog s^2",
     lambda f: lambda dz, c: _times(f(dz, c), 1, 2.0), ["_reparam"]),
    ("estimate.log_density_backward", "a sign in dlog q/dmu", lambda f: lambda d, c: _times(f(d, c), 1, -1.0),
     ["_score", "_score_variance"]),
    ("gaussian.entropy", "log 2 pi for log 2 pi e", lambda f: lambda lv: f(lv) - 0.5 * np.shape(lv)[-1],
     ["_two_forms"]),
    ("objectives.expected_log_prior", "sigma for sigma^2", lambda f: lambda mu, lv: f(mu, 0.5 * lv),
     ["_two_forms"]),
    ("exact.gaussian_elbo_linear", "the sum_k s_k^2 |W_k|^2 term left out",
     lambda f: lambda x, W, b, s, mu, lv: f(x, W, b, s, mu, lv) + np.exp(lv) @ np.sum(W * W, 1) / (2 * s * s),
     ["_kl_form", "_joint_form", "_elbo_gap", "_mean_field_gap", "_elbo_bound", "_iw_one"]),
    ("exact.ppca_log_px", "log pi for log 2 pi", lambda f: lambda x, W, b, s: f(x, W, b, s) + W.shape[1] * math.log(2) / 2,
     ["_elbo_gap", "_log_px_direct", "_mean_field_gap", "_quadrature", "_weights_unbiased", "_zero_variance"]),
    ("exact.kl_diag_full", "a missing 1/2", lambda f: lambda *a: 2 * f(*a), ["_elbo_gap"]),
    ("likelihoods.bernoulli_forward", "a sign on the logits", lambda f: lambda x, l: f(x, -l), ["_bernoulli"]),
    ("likelihoods.gaussian_forward", "sigma for sigma^2", lambda f: lambda x, m, sigma=1.0: f(x, m, math.sqrt(sigma)),
     ["_gaussian_laplace", "_kl_form", "_joint_form", "_quadrature", "_zero_variance"]),
    ("likelihoods.laplace_forward", "log b for log 2b",
     lambda f: lambda x, m, scale=1.0: (f(x, m, scale)[0] + x.shape[-1] * math.log(2), None), ["_gaussian_laplace"]),
    ("likelihoods.categorical_forward", "logits for log-softmax",
     lambda f: lambda x, l: (np.sum(x * l, axis=-1), None), ["_multinomial"]),
    ("objectives.iw_bound_forward", "1/S^2 for 1/S", lambda f: lambda lw: (f(lw)[0] - math.log(len(lw)), None),
     ["_iw_increasing", "_iw_gap_rate"]),
    ("objectives.iw_bound_forward", "the 1/S left out", lambda f: lambda lw: (f(lw)[0] + math.log(len(lw)), None),
     ["_iw_below", "_iw_gap_rate"]),
    ("em.e_step", "responsibilities from the likelihood alone, without pi_c",
     lambda f: lambda x, g: f(x, g._replace(weights=np.full(len(g.weights), 1 / len(g.weights)))),
     ["_e_step", "_discrete_gap", "_hard_gap"]),
    ("em.m_step", "means divided by N for N_c", _wrong_mstep, ["_em_staircase"]),
    ("special.digamma", "psi(x + 1) for psi(x)", lambda f: lambda x: f(np.asarray(x) + 1.0), ["_dirichlet_log_mean"]),
    ("nvib.kl_dirichlet_forward", "a sign in the last term", _wrong_dirichlet_kl,
     ["_dirichlet_kl", "_dirichlet_kl_gradient"]),
    ("nvib.kl_dirichlet_backward", "a sign in dKL/dbeta", lambda f: lambda d, c: _times(f(d, c), 1, -1.0),
     ["_dirichlet_kl_gradient"]),
    ("nvib.denoising_attention_forward", "query variance d for sqrt d",
     lambda f: lambda u, z, var, pi, query_var=None: f(u, z, var, pi, np.shape(u)[-1]), ["_attention_limit"]),
]


def test_every_entry_is_failed_by_some_mistake():
    assert {name for *_, names in MUTANTS for name in names} == set(BY_CHECK)


@pytest.mark.parametrize("target, mistake, make, names", MUTANTS, ids=[f"{t}: {m}" for t, m, *_ in MUTANTS])
def test_a_plausible_mistake_fails_its_entries(monkeypatch, target, mistake, make, names):
    module_name, attr = target.split(".")
    module = importlib.import_module(f"minivae.{module_name}")
    monkeypatch.setattr(module, attr, make(getattr(module, attr)))
    for name in names:
        r = BY_CHECK[name].check(QUICK)
        assert not r.ok, (name, str(r))


# ---------------------------------------------------------------- the command line
ROW = re.compile(r"^\s*(\d+)  (.+?)\s+lesson (\d+)\s+(\S+)\s+(\S+)\s+(z = \S+|rel \S+|margin \S+)\s+(pass|FAIL)$")


def test_cli_prints_the_table_and_exits_0_when_all_hold(tmp_path):
    env = dict(os.environ)
    env.pop("MINIVAE_QUICK", None)
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT)] + [p for p in [os.environ.get("PYTHONPATH")] if p])
    r = subprocess.run([sys.executable, "-m", "minivae", "derivations", "--quick"], cwd=tmp_path, env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    lines = r.stdout.splitlines()
    assert lines[0] == derivations.HEADER
    rows = [ROW.match(line) for line in lines[1:-1]]
    assert all(rows), [line for line, m in zip(lines[1:-1], rows) if not m]
    assert len(rows) == len(CATALOGUE) >= 15
    assert all(m.group(7) == "pass" for m in rows)
    assert [m.group(2) for m in rows] == [d.name for d in CATALOGUE]
    assert [int(m.group(3)) for m in rows] == [d.lesson for d in CATALOGUE]
    assert re.fullmatch(rf"{len(CATALOGUE)} of {len(CATALOGUE)} hold \(quick: 20,000 Monte Carlo draws per "
                        r"expectation, judged at 99\.9% confidence; \d+\.\d s\)", lines[-1])
    assert not list(tmp_path.iterdir()) and r.stderr == ""


def test_cli_exits_1_and_says_fail_when_an_entry_fails(monkeypatch, capsys):
    def wrong(sizes):                                   # the KL of lesson 2 with sigma for sigma^2
        return derivations.verify.identity(0.5 * (0.25 + math.sqrt(2) - 1 - math.log(math.sqrt(2))),
                                           0.5 * (0.25 + 2 - 1 - math.log(2)))
    monkeypatch.setattr(derivations, "CATALOGUE", CATALOGUE[:2] + [Derivation("a wrong KL", 2, wrong)])
    assert main(["derivations", "--quick"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[3].startswith(" 3  a wrong KL") and out[3].endswith("FAIL")
    assert out[-1].startswith("2 of 3 hold")


def test_an_entry_that_reaches_a_stub_fails_naming_its_task(monkeypatch, capsys):
    def stub(sizes):
        raise NotImplementedError("task_kl: closed-form KLs and their gradients (see ASSIGNMENT.md)")
    monkeypatch.setattr(derivations, "CATALOGUE", [Derivation("a stubbed KL", 2, stub)] + CATALOGUE[:1])
    assert main(["derivations", "--quick"]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[1].startswith(" 1  a stubbed KL") and re.search(r" nan +nan +task_kl  FAIL$", out[1]), out[1]
    assert out[2].endswith("pass") and out[-1].startswith("1 of 2 hold")
