"""The explorer page as a student meets it: written by the command line from a trained
run, opened from disk in headless Chromium, its JavaScript decoder checked against NumPy
(``PAGE.html#selftest``) and its screenshot against NumPy's decoding."""
from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from matplotlib.image import imread

from minivae import optim
from minivae.__main__ import main
from minivae.explore import explorer_page, write_explorer
from minivae.train import RunState, TrainConfig, load_run, one_hot, save_run
from minivae.vae import VAE
from strategies import assert_one_line

BROWSERS = ("chromium-headless-shell", "chromium")
WINDOW = (1280, 900)
TINY = ["--train-size", "2000", "--test-size", "500", "--epochs", "1", "--no-figures", "--no-progress"]
RUNS = {  # name -> train options: the default model's kind, a conditional one, a deeper tanh/Gaussian one
    "relu": ["--hidden", "64", "--z-dim", "4"],
    "conditional": ["--hidden", "32", "--z-dim", "3", "--conditional"],
    "tanh": ["--hidden", "32,16", "--z-dim", "2", "--activation", "tanh", "--likelihood", "gaussian"],
}


def cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``python -m minivae ARGS`` from another folder than the project's."""
    return subprocess.run([sys.executable, "-m", "minivae", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=300)


def browser() -> str:
    for name in BROWSERS:
        if shutil.which(name):
            return shutil.which(name)
    pytest.fail("no headless Chromium (chromium-headless-shell or chromium) on PATH: the explorer is checked in "
                "a real browser; install it with apt-get install chromium-headless-shell (.ci/run does)")


def open_page(page: Path, profile: Path, address: str, *action: str) -> str:
    """Load ``page`` with ``#address`` in headless Chromium, doing ``action`` (--dump-dom or
    --screenshot=FILE); returns stdout. The page's script runs synchronously at load."""
    cmd = [browser(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--no-first-run", "--disable-extensions", "--hide-scrollbars",
           f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}", "--force-device-scale-factor=1",
           *action, page.as_uri() + "#" + address]
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    return r.stdout


class Elements(HTMLParser):
    """The attributes of every element with an id, from a DOM dump."""

    def __init__(self, text: str):
        super().__init__()
        self.by_id: dict[str, dict] = {}
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if "id" in attrs:
            self.by_id[attrs["id"]] = attrs


def self_test(page: Path, profile: Path, address: str = "selftest") -> dict:
    """Open ``page`` in self-test mode; the self-test's results (attributes of its element)."""
    dom = Elements(open_page(page, profile, address, "--dump-dom")).by_id
    errors = dom["errors"]
    assert "hidden" in errors and "data-error" not in errors, errors
    return dom["selftest-result"] | {"ms-per-decode": float(dom["timing"]["data-ms-per-decode"])}


def test_without_a_browser_the_tests_fail_rather_than_skip(monkeypatch, tmp_path):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(pytest.fail.Exception, match="apt-get install chromium-headless-shell"):
        browser()


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """Tiny trained runs (one epoch on 2000 images), trained side by side from the command line."""
    root = tmp_path_factory.mktemp("runs")
    procs = {name: subprocess.Popen([sys.executable, "-m", "minivae", "train", *TINY, *opts, "--out", name],
                                    cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
             for name, opts in RUNS.items()}
    for name, proc in procs.items():
        assert proc.wait(timeout=300) == 0, proc.stderr.read()
    return {name: root / name for name in RUNS}


@pytest.mark.parametrize("name", list(RUNS))
def test_the_page_decodes_as_numpy_does_in_a_real_browser(runs, name, tmp_path):
    r = cli("explore", str(runs[name]), "--out", "page.html", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = tmp_path / "page.html"
    assert f"wrote {Path('page.html')}" in r.stdout and page.stat().st_size > 1000

    # self-test, opened at a chosen z (and digit 7 if conditional) for the screenshot below
    cfg, vae, _, _ = load_run(runs[name])
    z = np.round(np.random.default_rng(1).standard_normal(vae.z_dim), 2)       # (K,)
    address = f"selftest&z={','.join(f'{v:.2f}' for v in z)}&digit=7"
    result = self_test(page, tmp_path / "profile", address)
    diff = float(result["data-max-abs-diff"])
    assert diff < 1e-5 and result["class"] == "pass" and int(result["data-decodings"]) == 8, result
    ms = result["ms-per-decode"]
    assert ms > 0
    print(f"\n{name}: JavaScript vs NumPy max abs difference {diff:.2e}; one 28x28 decode {ms:.3f} ms in Chromium")

    # the screenshot's image region shows NumPy's decoding of that z
    left, top, width, height = map(int, result["data-image-rect"].split(","))
    shot = tmp_path / "shot.png"
    open_page(page, tmp_path / "profile", address, f"--screenshot={shot}")
    pixels = imread(shot)[..., :3]                                            # (h, w, 3) in [0, 1]
    assert pixels.shape[:2] == (WINDOW[1], WINDOW[0]), pixels.shape
    region = pixels[top:top + height, left:left + width]                      # (height, width, 3)
    assert region.shape[:2] == (height, width) and width % 28 == 0, (region.shape, width)
    assert region.std() > 0.01, "the image region is blank"
    cell = width // 28
    centres = region[cell // 2::cell, cell // 2::cell].mean(axis=-1)          # (28, 28) grey levels
    c = one_hot(np.array([7]), dtype=vae.dtype) if cfg.conditional else None
    expected = np.clip(vae.decode_mean(z[None].astype(vae.dtype), c)[0], 0, 1).reshape(28, 28)
    np.testing.assert_allclose(centres, np.round(255 * expected) / 255, atol=2.5 / 255)


def test_explore_writes_into_the_run_folder_by_default_and_fetches_nothing(runs, tmp_path):
    r = cli("explore", str(runs["relu"]), cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    page = runs["relu"] / "explore.html"
    text = page.read_text()
    assert str(page) in r.stdout and "#selftest" in r.stdout
    assert "relu: decoder 4 → 64 → 784 (relu), bernoulli likelihood; 1 epoch, test -ELBO" in text
    # nothing on the network: no URL, no external resource, no request from script
    for pattern in [r"https?://", r"\b(src|href)\s*=", r"url\(", r"@import", r"\bfetch\(", "XMLHttpRequest",
                    r"\bimport\(", "WebSocket", "<link", "<iframe"]:
        assert not re.search(pattern, text), pattern
    assert "does not cover" in text and "Convolutional VAEs" in text
    # --out naming a folder puts the page in it, and no temporary file stays behind
    assert write_explorer(runs["relu"], tmp_path) == tmp_path / "explore.html"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["explore.html"]


# Drives a page the way a user does, by mouse and keyboard, and reports what z and the digit
# became after each step. Appended to a copy of the page, it reads the page's own globals.
USER = """<script>
const report = { range: R, unitX: state.unitX, unitY: state.unitY, labels: points.labels };
const now = () => ({ z: Array.from(state.z), digit: state.digit, selected: state.selected });
const at = (canvas, x, y) => {
  const box = canvas.getBoundingClientRect();
  return { clientX: box.left + canvas.clientLeft + x, clientY: box.top + canvas.clientTop + y,
           pointerId: 1, pointerType: "mouse", isPrimary: true, buttons: 1, bubbles: true };
};
const key = (el, name, shiftKey = false) =>
  el.dispatchEvent(new KeyboardEvent("keydown", { key: name, shiftKey, bubbles: true, cancelable: true }));
pad.dispatchEvent(new PointerEvent("pointerdown", at(pad, 225, 75)));  report.padDown = now();
pad.dispatchEvent(new PointerEvent("pointermove", at(pad, 75, 150)));  report.padDrag = now();
pad.dispatchEvent(new PointerEvent("pointerup", at(pad, 75, 150)));
pad.dispatchEvent(new PointerEvent("pointermove", at(pad, 10, 10)));   report.padHover = now();
key(pad, "Home"); key(pad, "ArrowRight"); key(pad, "ArrowRight"); key(pad, "ArrowUp", true);
report.padKeys = now();
document.getElementById("digit-5").click();                             report.digit = now();
const slider = document.getElementById("z2");
slider.value = "-1.25"; slider.dispatchEvent(new Event("input"));       report.slider = now();
key(scatter, "ArrowRight");                                              report.scatterKey = now();
const target = [toScatter(points.xy[20], 0), toScatter(points.xy[21], 1)];  // test image 10
scatter.dispatchEvent(new PointerEvent("pointerdown", at(scatter, ...target)));
report.scatterClick = now();
report.clickMiss = Math.hypot(toScatter(points.xy[2 * state.selected], 0) - target[0],
                              toScatter(points.xy[2 * state.selected + 1], 1) - target[1]);
report.mu = Array.from(points.mu);
document.querySelector("#strip button").click();                         report.sample = now();
report.sample0 = Array.from(samples[0]);
document.getElementById("new-samples").click();                          report.newSample0 = Array.from(samples[0]);
document.getElementById("reset").click();                                report.reset = now();
document.body.insertAdjacentHTML("beforeend", `<pre id="user-report">${JSON.stringify(report)}</pre>`);
</script>
"""


def test_mouse_and_keyboard_move_z_as_the_page_says(runs, tmp_path):
    assert cli("explore", str(runs["conditional"]), "--out", "page.html", cwd=tmp_path).returncode == 0
    page = tmp_path / "driven.html"
    page.write_text((tmp_path / "page.html").read_text().replace("</body>", USER + "</body>"))
    dom = open_page(page, tmp_path / "profile", "", "--dump-dom")
    assert 'data-error' not in Elements(dom).by_id["errors"], Elements(dom).by_id["errors"]
    r = json.loads(re.search(r'<pre id="user-report">(\{.*?)</pre>', dom, re.S).group(1))
    R, ux, uy, K = r["range"], r["unitX"], r["unitY"], 3
    mu = np.array(r["mu"]).reshape(-1, K)                                   # (N, K)
    close = lambda a, b: np.testing.assert_allclose(a, b, atol=1e-9)       # noqa: E731
    # pad: press at (3/4, 1/4) of its 300 pixels, drag to (1/4, 1/2), then hover without a button
    close([r["padDown"]["z"][ux], r["padDown"]["z"][uy]], [R / 2, R / 2])
    close([r["padDrag"]["z"][ux], r["padDrag"]["z"][uy]], [-R / 2, 0])
    assert r["padHover"] == r["padDrag"]
    # keys: Home to 0, two steps right, one large step up; the third unit untouched
    close([r["padKeys"]["z"][ux], r["padKeys"]["z"][uy]], [0.2, 0.5])
    assert r["padKeys"]["z"][3 - ux - uy] == 0
    # the digit changes, z stays; a slider moves its own unit only
    assert r["digit"]["digit"] == 5 and r["digit"]["z"] == r["padKeys"]["z"]
    close(r["slider"]["z"], [*r["padKeys"]["z"][:2], -1.25])
    # the scatter: arrow keys step through the test images, a click takes the nearest point;
    # either sets z to that image's posterior mean and the digit to its label
    assert r["scatterKey"]["selected"] == 0
    close(r["scatterKey"]["z"], mu[0])
    assert r["scatterKey"]["digit"] == r["labels"][0]
    n = r["scatterClick"]["selected"]
    assert n >= 0 and r["clickMiss"] < 1
    close(r["scatterClick"]["z"], mu[n])
    assert r["scatterClick"]["digit"] == r["labels"][n]
    # a prior sample sets z to its own z and keeps the digit; new samples are new; reset zeroes z
    close(r["sample"]["z"], r["sample0"])
    assert r["sample"]["digit"] == r["labels"][n] and r["newSample0"] != r["sample0"]
    assert r["reset"]["z"] == [0, 0, 0]


@pytest.mark.parametrize("activation, likelihood, decoder_hidden, z_dim", [
    ("relu", "bernoulli", (400,), 20),            # the default model's shape: its decode time is printed
    ("leaky_relu", "bernoulli", (24,), 1),
    ("sigmoid", "gaussian_learned", (24, 16), 3),
    ("softplus", "laplace", (), 2),
    ("relu", "categorical", (24, 16, 8), 5),
])
def test_every_activation_likelihood_and_depth_decodes_as_numpy_does(activation, likelihood, decoder_hidden,
                                                                      z_dim, tmp_path):
    vae = VAE(x_dim=784, hidden=(24,), z_dim=z_dim, likelihood=likelihood, activation=activation, seed=3,
              decoder_hidden=decoder_hidden)
    rng = np.random.default_rng(0)
    x, labels = rng.random((50, 784)).astype("float32"), rng.integers(0, 10, 50)  # (50, 784), (50,)
    vae.params["dec.out.W"][...] *= 4      # sharper outputs: saturated and negative pre-activations too
    page = tmp_path / "page.html"
    page.write_text(explorer_page(vae, x, labels, rng))
    result = self_test(page, tmp_path / "profile")
    assert result["class"] == "pass" and float(result["data-max-abs-diff"]) < 1e-5, result
    widths = " -> ".join(map(str, (z_dim, *decoder_hidden, 784)))
    print(f"\ndecoder {widths} ({activation}, {likelihood}): one decode {result['ms-per-decode']:.3f} ms in Chromium")


def test_explore_of_a_missing_run_is_one_line_and_exit_2(tmp_path):
    r = cli("explore", "no-such-run", cwd=tmp_path)
    assert r.returncode == 2 and r.stdout == ""
    assert_one_line(r.stderr.rstrip("\n"), "minivae explore: error:", "no checkpoint at no-such-run")


@pytest.mark.parametrize("kind", ["conv", "document"])
def test_explore_refuses_what_it_cannot_draw_in_one_line(kind, tmp_path, capsys):
    cfg = {"conv": TrainConfig(model="conv", epochs=1),
           "document": TrainConfig(dataset="topics", likelihood="categorical", hidden=(8,), z_dim=2)}[kind]
    vae = cfg.build()
    save_run(tmp_path / kind, cfg, vae, optim.init_state(cfg.optimizer, vae.flat), RunState())
    assert main(["explore", str(tmp_path / kind)]) == 2
    out, err = capsys.readouterr()
    fragment = {"conv": "is a convolutional VAE", "document": "document dataset 'topics'"}[kind]
    assert out == "" and assert_one_line(err.rstrip("\n"), "minivae explore: error:", fragment)
    assert not (tmp_path / kind / "explore.html").exists()
