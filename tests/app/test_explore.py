import copy
import json
import os
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.datasets import load_digits
from sklearn.exceptions import NotFittedError

from skdict import ConceptBank, DoubleBatchKSVD, describe_atoms
from skdict.explore import PAGE_SIZE, _data_script, build_site
from skdict.metrics import faithfulness, signal_recovered, specificity

SCRIPT_NAME = "<script>alert(1)</script>"
IMG_NAME = '"><img src=x onerror=alert(2)>'
N_ATOMS = 24
TOP_K = 6


class _StubProjector:
    """Duck-typed stand-in for ClassEmbeddingProjector: a fixed linear class head."""

    def __init__(self, n_features, outputs, *, classes=None):
        self.classes_ = np.asarray(outputs if classes is None else classes)
        self.head = np.random.default_rng(0).normal(size=(n_features, len(outputs)))

    def project_directions(self, V):
        return np.asarray(V) @ self.head


@pytest.fixture(scope="module")
def digits():
    data = load_digits()
    X = data.data[:240] / 16.0
    return X, data.images[:240], [f"digit {t}" for t in data.target[:240]]


@pytest.fixture(scope="module")
def estimator(digits):
    X = digits[0]
    return DoubleBatchKSVD(N_ATOMS, n_nonzero_coefs=3, max_iter=3, random_state=0).fit(X)


@pytest.fixture(scope="module")
def bank(estimator, digits):
    """Concepts equal to the (signed) atoms, so that concept k names atom k, plus
    unrelated concepts; atom 0 is named by a script tag and atom 1 by an HTML
    attribute injection."""
    X = digits[0]
    D = estimator.components_
    probe = ConceptBank(["probe"], D[:1], center=False)
    signs = describe_atoms(estimator, probe, X=X).signs
    names = [f"concept {k}" for k in range(N_ATOMS)]
    names[0], names[1] = SCRIPT_NAME, IMG_NAME
    extra = np.random.default_rng(1).normal(size=(4, D.shape[1]))
    return ConceptBank(
        names + [f"other {i}" for i in range(4)],
        np.vstack([D * signs[:, None], extra]),
        center=False,
    )


@pytest.fixture(scope="module")
def other_estimator(estimator):
    """The same dictionary with atoms permuted and some signs flipped."""
    other = copy.deepcopy(estimator)
    perm = np.random.default_rng(2).permutation(N_ATOMS)
    flips = np.where(np.arange(N_ATOMS) % 2 == 0, 1.0, -1.0)
    other.components_ = estimator.components_[perm] * flips[:, None]
    return other, perm


@pytest.fixture(scope="module")
def site(estimator, other_estimator, bank, digits, tmp_path_factory):
    X, images, labels = digits
    projector = _StubProjector(X.shape[1], ["zero", "<b>one</b>", "two"])
    out = tmp_path_factory.mktemp("site")
    index = build_site(
        estimator, X, out, bank=bank, images=images, labels=labels, projector=projector,
        top_k=TOP_K, compare=other_estimator[0],
    )
    return index, projector


def _payload(script, key):
    """The object a data script assigns to ``SKDICT_DATA[key]``."""
    prefix = f'(window.SKDICT_DATA = window.SKDICT_DATA || {{}})["{key}"] = '
    assert script.startswith(prefix) and script.endswith(";\n"), script[:200]
    return json.loads(script[len(prefix) : -2])


def _read(out, name):
    key = f"page/{name[6:]}" if name.startswith("pages/") else name
    return _payload((out / "data" / f"{name}.js").read_text(encoding="utf-8"), key)


def _atom(out, k):
    return _read(out, f"pages/{k // PAGE_SIZE}")[k % PAGE_SIZE]


def test_site_files(site):
    index, _ = site
    out = index.parent
    assert index.name == "index.html"
    for name in ("assets/explore.js", "assets/explore.css", "data/overview.js", "data/atoms.js",
                 "data/compare.js", "data/pages/0.js"):
        assert (out / name).is_file(), name
    # Nothing loads from the network.
    for name in ("index.html", "assets/explore.js", "assets/explore.css"):
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", (out / name).read_text())


def test_atom_details_are_paged(tmp_path, digits):
    X = digits[0]
    est = DoubleBatchKSVD(PAGE_SIZE + 6, n_nonzero_coefs=2, max_iter=1, random_state=0).fit(X)
    build_site(est, X, tmp_path, top_k=2)
    pages = sorted(p.name for p in (tmp_path / "data" / "pages").iterdir())
    assert pages == ["0.js", "1.js"]
    assert [a["id"] for a in _read(tmp_path, "pages/1")] == list(range(PAGE_SIZE, PAGE_SIZE + 6))
    # index.html loads only the overview up front.
    scripts = re.findall(r'<script src="([^"]+)"', (tmp_path / "index.html").read_text())
    assert scripts == ["data/overview.js", "assets/explore.js"]


def test_top_samples_are_highest_activations(site, estimator, digits):
    X, _, labels = digits
    out = site[0].parent
    codes = estimator.transform(X)
    for k in range(N_ATOMS):
        atom = _atom(out, k)
        column = np.abs(codes[:, k])
        expected = np.sort(column[column > 0])[::-1][:TOP_K]
        samples = [t[0] for t in atom["top"]]
        # the site stores 4 significant digits (explore._number): relative error <= 5e-4
        np.testing.assert_allclose([abs(t[1]) for t in atom["top"]], expected, rtol=1e-3)
        np.testing.assert_allclose([t[1] for t in atom["top"]], codes[samples, k], rtol=1e-3)
        assert [t[2] for t in atom["top"]] == [labels[i] for i in samples]
        assert atom["n_active"] == np.count_nonzero(codes[:, k])
        assert sum(atom["hist"]["counts"]) == atom["n_active"]


def test_usage_and_mean_activation(site, estimator, digits):
    X = digits[0]
    codes = estimator.transform(X)
    table = _read(site[0].parent, "atoms")
    active = codes != 0
    # usage is stored with 6 significant digits (<= 5e-6 relative), the mean with 4
    np.testing.assert_allclose(table["usage"], active.mean(axis=0), rtol=1e-4)
    mean = np.abs(codes).sum(axis=0) / np.maximum(active.sum(axis=0), 1)
    np.testing.assert_allclose(table["mean"], mean, rtol=1e-3)


def test_names_match_describe_atoms(site, estimator, bank, digits):
    X = digits[0]
    out = site[0].parent
    described = describe_atoms(estimator, bank, X=X, top_k=5)
    table = _read(out, "atoms")
    assert [table["names"][i] for i in table["name"]] == list(described.names[:, 0])
    for k in range(N_ATOMS):
        atom = _atom(out, k)
        assert [n[0] for n in atom["names"]] == list(described.names[k])
        np.testing.assert_allclose([n[1] for n in atom["names"]], described.scores[k], atol=1e-3)
    # The bank was built so that concept k names atom k.
    assert list(described.names[:2, 0]) == [SCRIPT_NAME, IMG_NAME]


def test_overview_numbers(site, estimator, bank, digits):
    X = digits[0]
    out = site[0].parent
    overview = _read(out, "overview")
    codes = estimator.transform(X)
    assert overview["n_atoms"] == N_ATOMS
    assert overview["n_alive"] == np.count_nonzero(np.any(codes != 0, axis=0))
    scores = overview["scores"]
    assert scores["signal_recovered"] == pytest.approx(
        signal_recovered(X, codes @ estimator.components_), abs=1e-3)
    assert scores["faithfulness"] == pytest.approx(faithfulness(estimator, X, bank), abs=1e-3)
    assert scores["specificity"] == pytest.approx(specificity(estimator, X, bank), abs=1e-3)
    per_atom = faithfulness(estimator, X, bank, per_atom=True)
    np.testing.assert_allclose(_read(out, "atoms")["faith"], per_atom, atol=1e-3)
    l0 = overview["l0"]
    assert sum(l0["counts"]) == X.shape[0]
    np.testing.assert_array_equal(
        l0["counts"], np.bincount(np.count_nonzero(codes, axis=1))[l0["lo"]:l0["hi"]])


def test_nearest_atoms_by_cosine(site, estimator):
    out = site[0].parent
    D = estimator.components_
    cos = D @ D.T / np.outer(np.linalg.norm(D, axis=1), np.linalg.norm(D, axis=1))
    for k in range(N_ATOMS):
        nearest = _atom(out, k)["nearest"]
        others = np.delete(np.arange(N_ATOMS), k)
        best = others[np.argsort(-np.abs(cos[k, others]), kind="stable")][: len(nearest)]
        shown = np.array([n[1] for n in nearest])
        np.testing.assert_allclose(np.abs(shown), np.abs(cos[k, best]), atol=1e-3)
        np.testing.assert_allclose(shown, cos[k, [n[0] for n in nearest]], atol=1e-3)


def test_classes_pushed(tmp_path, other_estimator, digits):
    # Half of these atoms are flipped, so their codes are mostly negative: they
    # push the classes of -d_k.
    est = other_estimator[0]
    X = digits[0]
    projector = _StubProjector(X.shape[1], ["zero", "one", "two", "three"])
    build_site(est, X, tmp_path, projector=projector, top_k=1)
    signs = np.sign(est.transform(X).sum(axis=0))
    assert (signs < 0).any() and (signs > 0).any()
    scores = projector.project_directions(est.components_ * signs[:, None])
    for k in range(N_ATOMS):
        atom = _atom(tmp_path, k)
        assert atom["sign"] == signs[k]
        assert atom["push"][0][0] == projector.classes_[np.argmax(scores[k])]
        assert atom["pull"][0][0] == projector.classes_[np.argmin(scores[k])]
        np.testing.assert_allclose(atom["push"][0][1], scores[k].max(), rtol=1e-3)


def test_comparison_matches_permuted_atoms(site, other_estimator):
    out = site[0].parent
    _, perm = other_estimator
    pairs = _read(out, "compare")
    assert len(pairs) == N_ATOMS
    # other atom j is atom perm[j] up to sign: the matching must find that.
    assert {(p[0], p[1]) for p in pairs} == {(int(perm[j]), j) for j in range(N_ATOMS)}
    np.testing.assert_allclose(np.abs([p[2] for p in pairs]), 1.0, atol=1e-4)
    assert _read(out, "overview")["compare"]["mean_abs_cos"] == pytest.approx(1.0, abs=1e-4)
    # Both sides are named by the same bank, so matched atoms share their name.
    assert all(p[3] == p[4] for p in pairs if p[5] and p[6])


def test_thumbnails_written(site, digits):
    from PIL import Image

    out = site[0].parent
    atom = _atom(out, 2)
    for sample, _, _ in atom["top"]:
        with Image.open(out / "thumbs" / "0" / f"{sample}.png") as thumb:
            pixels = np.asarray(thumb.convert("L"), dtype=float)
        # The thumbnail is the digit, scaled to its own range.
        image = digits[1][sample]
        expected = 255 * (image - image.min()) / (image.max() - image.min())
        np.testing.assert_allclose(pixels, expected, atol=1)


def test_thumbnails_from_paths_and_rgb(tmp_path, estimator, digits):
    from PIL import Image

    X = digits[0]
    rgb = np.zeros((len(X), 200, 150, 3), dtype=np.uint8)
    rgb[..., 0] = 200
    paths = []
    for i in range(len(X)):
        paths.append(tmp_path / f"img {i}.png")
    Image.fromarray(rgb[0]).save(paths[0])
    for path in paths[1:]:
        shutil.copyfile(paths[0], path)
    for images in (rgb, [str(p) for p in paths]):
        out = tmp_path / "site"
        build_site(estimator, X, out, images=images, top_k=1)
        sample = _atom(out, 0)["top"][0][0]
        with Image.open(out / "thumbs" / "0" / f"{sample}.png") as thumb:
            assert max(thumb.size) == 96
            assert thumb.convert("RGB").getpixel((0, 0)) == (200, 0, 0)


def test_real_projector_on_digits_vit(tmp_path):
    pytest.importorskip("timm")
    from PIL import Image

    from skdict import ClassEmbeddingProjector, TimmEmbedder
    from skdict.datasets import load_digits_images, make_digits_vit

    images, y = load_digits_images(subset="test", return_X_y=True)
    images, y = images[:150], y[:150]
    model = make_digits_vit(random_state=0)
    X = TimmEmbedder(model, device="cpu").fit_transform(images)
    est = DoubleBatchKSVD(12, n_nonzero_coefs=3, max_iter=2, random_state=0).fit(X)
    projector = ClassEmbeddingProjector(model, device="cpu").fit()
    build_site(est, X, tmp_path, images=images, labels=y, projector=projector, top_k=3)
    signs = np.where(est.transform(X).sum(axis=0) < 0, -1, 1)
    scores = projector.project_directions(est.components_ * signs[:, None])
    for k in range(12):
        atom = _atom(tmp_path, k)
        assert atom["push"][0][0] == str(np.argmax(scores[k]))
        assert [int(t[2]) for t in atom["top"]] == [y[t[0]] for t in atom["top"]]
        # Channel-first (1, 8, 8) images become 8x8 grey thumbnails.
        with Image.open(tmp_path / "thumbs" / "0" / f"{atom['top'][0][0]}.png") as thumb:
            assert thumb.size == (8, 8) and thumb.mode == "L"


def test_sparse_codes_give_the_same_site(tmp_path, estimator, digits):
    X = digits[0]
    sparse = copy.deepcopy(estimator).set_params(sparse_output=True)
    build_site(estimator, X, tmp_path / "dense", top_k=3)
    build_site(sparse, X, tmp_path / "sparse", top_k=3)
    for name in ("overview", "atoms", "pages/0"):
        assert _read(tmp_path / "sparse", name) == _read(tmp_path / "dense", name)


def test_without_bank_atoms_are_unnamed(tmp_path, estimator, digits):
    X = digits[0]
    build_site(estimator, X, tmp_path, top_k=2)
    overview = _read(tmp_path, "overview")
    assert overview["scores"]["faithfulness"] is None
    assert overview["n_concepts"] is None
    assert set(_read(tmp_path, "atoms")["name"]) == {-1}
    assert _atom(tmp_path, 0)["names"] == []


@pytest.mark.parametrize(
    "kwargs, error, match",
    [
        ({"labels": ["a"]}, ValueError, "labels has 1 entries"),
        ({"images": np.zeros((3, 8, 8))}, ValueError, "images has 3 entries"),
        ({"top_k": 0}, ValueError, "top_k must be a positive int"),
        ({"compare": DoubleBatchKSVD(4)}, NotFittedError, None),
        # Two class scores per atom for three classes: not the projector of this model.
        (
            {"projector": _StubProjector(64, ["a", "b"], classes=["a", "b", "c"])},
            ValueError,
            "project_directions returned",
        ),
    ],
)
def test_bad_input(tmp_path, estimator, digits, kwargs, error, match):
    with pytest.raises(error, match=match):
        build_site(estimator, digits[0], tmp_path, **kwargs)


def test_bad_estimator_and_data(tmp_path, estimator, digits):
    with pytest.raises(TypeError, match="estimator must be a fitted dictionary learner"):
        build_site(np.eye(3), digits[0], tmp_path)
    with pytest.raises(ValueError, match="features"):
        build_site(estimator, digits[0][:, :10], tmp_path)
    with pytest.raises(ValueError, match="each image must be an array"):
        build_site(estimator, digits[0], tmp_path, images=np.zeros((240, 8, 8, 2)))
    with pytest.raises(ValueError, match="each image must be an array"):
        build_site(estimator, digits[0], tmp_path, images=np.zeros((240, 8)))


@given(st.text())
def test_data_script_cannot_leave_its_string(text):
    script = _data_script("key", {"name": text})
    # No character that could end a script element, start a comment or an
    # entity, and no raw line separator, whatever the string holds.
    assert not set(script) & {"<", ">", "&", "\u2028", "\u2029"}
    assert _payload(script, "key") == {"name": text}


# ----- real browser ------------------------------------------------------------


def _browser():
    """Headless Debian chromium via Playwright, or a skip (a failure in CI)."""
    reason = None
    chromium = shutil.which("chromium") or (
        "/usr/bin/chromium" if os.path.exists("/usr/bin/chromium") else None)
    if chromium is None:
        reason = "no chromium binary (apt-get install chromium as root)"
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        reason = "playwright is not installed (pip install 'skdict[test]')"
    if reason is not None:
        if os.environ.get("SKDICT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"SKDICT_REQUIRE_BROWSER=1 but {reason}")
        pytest.skip(reason)
    return sync_playwright, chromium


def test_missing_browser_fails_when_required(monkeypatch):
    monkeypatch.setattr(shutil, "which", lambda name: None)
    monkeypatch.setattr(os.path, "exists", lambda path: False)
    monkeypatch.setenv("SKDICT_REQUIRE_BROWSER", "1")
    with pytest.raises(pytest.fail.Exception, match="no chromium binary"):
        _browser()
    monkeypatch.delenv("SKDICT_REQUIRE_BROWSER")
    with pytest.raises(pytest.skip.Exception, match="no chromium binary"):
        _browser()


def test_site_in_browser(site, estimator, bank, digits):
    sync_playwright, chromium = _browser()
    index = site[0]
    out = index.parent
    overview = _read(out, "overview")
    table = _read(out, "atoms")
    shots = Path(tempfile.mkdtemp(prefix="skdict-explore-shots-"))
    errors, dialogs = [], []
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, headless=True, args=["--disable-dev-shm-usage"])
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("requestfailed", lambda r: errors.append(f"failed {r.url}"))

            def on_dialog(dialog):
                dialogs.append(dialog.message)
                dialog.dismiss()

            page.on("dialog", on_dialog)
            page.goto(index.as_uri())
            page.wait_for_selector("#atom-rows tr")

            # Overview numbers.
            assert page.inner_text("#stat-atoms") == str(N_ATOMS)
            scores = overview["scores"]
            assert page.inner_text("#stat-signal") == f"{scores['signal_recovered']:.3f}"
            assert page.inner_text("#stat-faithfulness") == f"{scores['faithfulness']:.3f}"
            assert page.inner_text("#stat-specificity") == f"{scores['specificity']:.3f}"
            assert page.inner_text("#stat-alive") == f"{100 * overview['alive_fraction']:.1f}%"
            assert page.locator("#atom-rows tr").count() == N_ATOMS
            page.screenshot(path=shots / "overview.png", full_page=True)

            # Sorting by usage puts the most used atom first.
            first = int(page.locator("#atom-rows tr").first.get_attribute("data-atom"))
            assert table["usage"][first] == max(table["usage"])

            # Sorting by faithfulness, then by name.
            page.click("button[data-sort=faith]")
            first = int(page.locator("#atom-rows tr").first.get_attribute("data-atom"))
            assert table["faith"][first] == max(f for f in table["faith"] if f is not None)
            page.click("button[data-sort=name]")
            shown = page.locator("#atom-rows td.concept").all_inner_texts()
            assert shown == sorted(shown, key=str.lower)

            # Searching filters the list to matching concept names, or an atom number.
            page.fill("#search", "#5")
            assert page.locator("#atom-rows tr").get_attribute("data-atom") == "5"
            page.fill("#search", "concept 1")
            names = [table["names"][i] for i in table["name"]]
            expected = {k for k, n in enumerate(names) if "concept 1" in n}
            rows = page.locator("#atom-rows tr")
            shown = {int(rows.nth(i).get_attribute("data-atom")) for i in range(rows.count())}
            assert shown == expected
            assert page.inner_text("#atom-count").startswith(f"{len(expected)} of {N_ATOMS}")

            # Hostile names show as text and run nothing.
            for name, atom in ((SCRIPT_NAME, 0), (IMG_NAME, 1)):
                page.fill("#search", name[:8])
                row = page.locator(f'#atom-rows tr[data-atom="{atom}"] td.concept')
                assert row.inner_text() == name
            assert page.locator("#app img[src='x']").count() == 0

            # An atom page: names, thumbnails of its top samples, nearest atoms.
            page.fill("#search", SCRIPT_NAME)
            page.click('#atom-rows tr[data-atom="0"] a')
            page.wait_for_selector("#top-samples img")
            assert page.locator("#atom-names .concept").first.inner_text() == SCRIPT_NAME
            top = _atom(out, 0)["top"]
            images = page.locator("#top-samples img")
            assert images.count() == len(top) > 0
            page.wait_for_function(
                "Array.from(document.querySelectorAll('#top-samples img')).every(i => i.complete)")
            widths = page.eval_on_selector_all(
                "#top-samples img", "els => els.map(i => i.naturalWidth)")
            assert all(w > 0 for w in widths)
            assert page.locator("#nearest li").count() == 8
            pushed = page.locator("#classes .class-name").first.inner_text()
            assert pushed in ("zero", "<b>one</b>", "two")
            page.screenshot(path=shots / "atom.png", full_page=True)

            # The comparison page.
            page.click("#compare-link")
            page.wait_for_selector("#pair-rows tr")
            assert page.locator("#pair-rows tr").count() == N_ATOMS
            page.screenshot(path=shots / "compare.png", full_page=True)
        finally:
            browser.close()
    print(f"explorer screenshots in {shots}")
    assert dialogs == []
    assert errors == []
    assert (shots / "overview.png").stat().st_size > 0
