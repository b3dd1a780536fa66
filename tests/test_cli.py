"""The ``skdict`` command: each subcommand on small files, and its exit-2 errors."""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import joblib
import numpy as np
import pytest
import scipy.sparse as sp

from skdict import ConceptBank, SparseAutoencoder, describe_atoms, metrics
from skdict.cli import main
from skdict.datasets import make_sparse_signals
from skdict.ksvd import DoubleBatchKSVD

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Embeddings as .npy, .npz and shards, plus a model fitted by ``skdict fit``."""
    tmp = tmp_path_factory.mktemp("cli")
    X, D_true, _ = make_sparse_signals(240, 12, 16, 2, random_state=0)
    np.save(tmp / "X.npy", X)
    np.savez(tmp / "X.npz", embeddings=X)
    (tmp / "shards").mkdir()
    np.save(tmp / "shards" / "0.npy", X[:100])
    np.save(tmp / "shards" / "1.npy", X[100:])
    np.save(tmp / "vector.npy", X[0])
    np.save(tmp / "narrow.npy", X[:, :5])
    (tmp / "junk.joblib").write_text("not a model")
    joblib.dump({"components_": None}, tmp / "dict.joblib")
    ConceptBank([f"true atom {i}" for i in range(16)], D_true).save(tmp / "bank.npz")
    ConceptBank(["a", "b"], np.eye(5)[:2]).save(tmp / "narrow_bank.npz")
    (tmp / "concepts.txt").write_text("red\ngreen\n")
    code = main(["fit", str(tmp / "X.npy"), "--n-components", "16", "--n-nonzero", "2",
                 "--max-iter", "30", "-o", str(tmp / "model.joblib"), "--quiet"])
    assert code == 0
    return tmp, X, D_true


def test_fit_writes_a_model_that_recovers_the_dictionary(files):
    tmp, X, D_true = files
    model = joblib.load(tmp / "model.joblib")
    assert isinstance(model, DoubleBatchKSVD)
    assert model.components_.shape == (16, 12)
    assert model.n_nonzero_coefs == 2
    cos = np.abs(D_true @ model.components_.T).max(axis=1)
    assert np.mean(cos > 0.95) > 0.8


@pytest.mark.parametrize("source", ["X.npz", "shards"])
def test_fit_reads_npz_and_shard_directories(files, source, capsys):
    tmp, X, _ = files
    out = tmp / f"from-{source}.joblib"
    assert main(["fit", str(tmp / source), "--n-components", "8", "--n-nonzero", "2",
                 "--max-iter", "2", "-o", str(out)]) == 0
    assert joblib.load(out).n_features_in_ == X.shape[1]
    assert f"on {X.shape[0]} x {X.shape[1]} embeddings" in capsys.readouterr().err


def test_fit_sae_writes_a_sparse_autoencoder(files):
    tmp, X, _ = files
    out = tmp / "sae.joblib"
    assert main(["fit", str(tmp / "X.npy"), "--method", "sae", "--n-components", "16",
                 "--n-nonzero", "3", "--max-iter", "2", "--batch-size", "64", "--device",
                 "cpu", "-o", str(out), "-q"]) == 0
    model = joblib.load(out)
    assert isinstance(model, SparseAutoencoder)
    assert model.k == 3 and model.batch_size == 64
    np.testing.assert_allclose(np.linalg.norm(model.components_, axis=1), 1, rtol=1e-5)
    assert main(["encode", str(out), str(tmp / "X.npy"), "-o", str(tmp / "sae.npz"),
                 "-q"]) == 0
    assert sp.load_npz(tmp / "sae.npz").getnnz(axis=1).max() <= 3


def test_encode_writes_csr_codes(files):
    tmp, X, _ = files
    out = tmp / "codes.npz"
    assert main(["encode", str(tmp / "model.joblib"), str(tmp / "X.npy"), "-o", str(out),
                 "-q"]) == 0
    codes = sp.load_npz(out)
    assert sp.issparse(codes) and codes.format == "csr"
    assert codes.shape == (X.shape[0], 16)
    assert codes.getnnz(axis=1).max() <= 2
    model = joblib.load(tmp / "model.joblib")
    np.testing.assert_allclose(codes.toarray(), model.transform(X))


def test_encode_in_chunks_matches_one_pass(files):
    from skdict.cli import encode_in_chunks

    tmp, X, _ = files
    model = joblib.load(tmp / "model.joblib")
    codes = encode_in_chunks(model, np.load(tmp / "X.npy", mmap_mode="r"), chunk=7)
    np.testing.assert_allclose(codes.toarray(), model.transform(X))


def test_describe_prints_one_line_per_alive_atom(files, capsys):
    tmp, X, _ = files
    model = joblib.load(tmp / "model.joblib")
    bank = ConceptBank.load(tmp / "bank.npz")
    expected = describe_atoms(model, bank, X=X[:20])
    np.save(tmp / "few.npy", X[:20])
    assert main(["describe", str(tmp / "model.joblib"), "--concepts", str(tmp / "bank.npz"),
                 "--embeddings", str(tmp / "few.npy"), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert 0 < len(lines) == expected.alive.sum() < 16
    alive = np.flatnonzero(expected.alive)
    for line, atom in zip(lines, alive):
        assert line.startswith(f"atom {atom}\t")
        assert f"{expected.names[atom, 0]} ({expected.scores[atom, 0]:.3f})" in line


class _FirstAtomsText:
    """Stands in for CLIPEmbedder: concept i is true atom i."""

    def __init__(self, atoms):
        self.atoms = atoms

    def encode_text(self, texts):
        return self.atoms[[int(t.split()[-1]) for t in texts]]


def test_describe_embeds_a_concepts_file(files, monkeypatch, capsys):
    tmp, _, D_true = files
    import skdict.cli

    seen = []
    monkeypatch.setattr(skdict.cli, "_parse_embedder",
                        lambda spec: seen.append(spec) or _FirstAtomsText(D_true))
    concepts = tmp / "true.txt"
    concepts.write_text("\n".join(f"true atom {i}" for i in range(16)) + "\n")
    assert main(["describe", str(tmp / "model.joblib"), "--concepts", str(concepts),
                 "--embedder", "clip:ViT-B-32"]) == 0
    assert seen == ["clip:ViT-B-32"]
    expected = describe_atoms(joblib.load(tmp / "model.joblib"),
                              ConceptBank.from_texts([f"true atom {i}" for i in range(16)],
                                                     _FirstAtomsText(D_true)))
    lines = capsys.readouterr().out.splitlines()
    assert [line.split("\t")[2].split(" (")[0] for line in lines] == list(expected.names[:, 0])


@pytest.mark.parametrize("spec, model, pretrained", [
    ("clip:ViT-B-32", "ViT-B-32", None),
    ("clip:ViT-B-16:/weights/open_clip.bin", "ViT-B-16", "/weights/open_clip.bin"),
])
def test_embedder_spec(spec, model, pretrained):
    from skdict.cli import _parse_embedder

    embedder = _parse_embedder(spec)
    assert (embedder.model, embedder.pretrained) == (model, pretrained)


def test_describe_without_data_names_every_atom(files, capsys):
    tmp, _, _ = files
    assert main(["describe", str(tmp / "model.joblib"), "--concepts", str(tmp / "bank.npz"),
                 "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 16
    assert all(line.count("true atom") == 2 for line in lines)


def test_score_prints_the_three_scores(files, capsys):
    tmp, X, _ = files
    model = joblib.load(tmp / "model.joblib")
    bank = ConceptBank.load(tmp / "bank.npz")
    assert main(["score", str(tmp / "model.joblib"), str(tmp / "X.npy"), "--concepts",
                 str(tmp / "bank.npz"), "-q"]) == 0
    out = capsys.readouterr().out
    X_hat = model.inverse_transform(model.transform(X))
    for name, value in [
        ("signal recovered", metrics.signal_recovered(X, X_hat)),
        ("faithfulness", metrics.faithfulness(model, X, bank)),
        ("specificity", metrics.specificity(model, X, bank)),
    ]:
        assert re.search(rf"^{name}\s+{value:.3f}$", out, re.M), (name, out)


def test_score_without_bank_leaves_description_scores_blank(files, capsys):
    tmp, _, _ = files
    assert main(["score", str(tmp / "model.joblib"), str(tmp / "X.npy")]) == 0
    captured = capsys.readouterr()
    assert re.search(r"^faithfulness\s+–$", captured.out, re.M)
    assert "need a concept bank" in captured.err


def test_explore_writes_the_site(files):
    tmp, X, _ = files
    labels = tmp / "labels.txt"
    labels.write_text("".join(f"row {i}\n" for i in range(X.shape[0])))
    out = tmp / "site"
    assert main(["explore", str(tmp / "model.joblib"), str(tmp / "X.npy"), "--out", str(out),
                 "--concepts", str(tmp / "bank.npz"), "--labels", str(labels),
                 "--compare", str(tmp / "model.joblib"), "-q"]) == 0
    index = (out / "index.html").read_text()
    assert "<html" in index.lower()
    assert len(list(out.rglob("*"))) > 3


def test_quiet_prints_nothing(files, capsys):
    tmp, _, _ = files
    main(["encode", str(tmp / "model.joblib"), str(tmp / "X.npy"), "-o",
          str(tmp / "quiet.npz"), "--quiet"])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "{tmp}/missing.npy", "-o", "{tmp}/m.joblib"],
         "embeddings file '{tmp}/missing.npy' does not exist"),
        (["fit", "{tmp}/vector.npy", "-o", "{tmp}/m.joblib"], "expected a 2-D array"),
        (["fit", "{tmp}/empty", "-o", "{tmp}/m.joblib"], "holds no .npy shards"),
        (["fit", "{tmp}/X.npy", "--n-components", "2", "--n-nonzero", "5", "-o",
          "{tmp}/m.joblib"], "n_nonzero_coefs=5 must be between 1"),
        (["encode", "{tmp}/nothing.joblib", "{tmp}/X.npy", "-o", "{tmp}/c.npz"],
         "model file '{tmp}/nothing.joblib' does not exist"),
        (["encode", "{tmp}/junk.joblib", "{tmp}/X.npy", "-o", "{tmp}/c.npz"],
         "cannot read model '{tmp}/junk.joblib'"),
        (["encode", "{tmp}/dict.joblib", "{tmp}/X.npy", "-o", "{tmp}/c.npz"],
         "holds a dict, not a fitted skdict dictionary"),
        (["encode", "{tmp}/model.joblib", "{tmp}/narrow.npy", "-o", "{tmp}/c.npz"],
         "has 5 features per row but the model was fitted on 12"),
        (["describe", "{tmp}/model.joblib", "--concepts", "{tmp}/X.npz"],
         "cannot read concept bank '{tmp}/X.npz'"),
        (["describe", "{tmp}/model.joblib", "--concepts", "{tmp}/nobank.npz"],
         "concept bank '{tmp}/nobank.npz' does not exist"),
        (["describe", "{tmp}/model.joblib", "--concepts", "{tmp}/narrow_bank.npz"],
         "the concept bank has 5-dimensional embeddings"),
        (["describe", "{tmp}/model.joblib", "--concepts", "{tmp}/concepts.txt"],
         "needs --embedder"),
        (["describe", "{tmp}/model.joblib", "--concepts", "{tmp}/concepts.txt",
          "--embedder", "timm:vit"], "--embedder 'timm:vit' is not understood"),
        (["describe", "{tmp}/model.joblib"], "describe needs --concepts"),
        (["score", "{tmp}/model.joblib", "{tmp}/vector.npy"], "expected a 2-D array"),
        (["explore", "{tmp}/model.joblib", "{tmp}/X.npy", "--out", "{tmp}/s", "--labels",
          "{tmp}/concepts.txt"], "has 2 labels but the embeddings have 240 rows"),
        (["explore", "{tmp}/model.joblib", "{tmp}/X.npy", "--out", "{tmp}/s", "--images",
          "{tmp}/X.npy"], "expected (240, H, W) or (240, H, W, C)"),
    ],
)
def test_errors_exit_2_with_one_line(files, argv, message, capsys):
    tmp, _, _ = files
    (tmp / "empty").mkdir(exist_ok=True)
    code = main([a.format(tmp=tmp) for a in argv] + ["-q"])
    err = capsys.readouterr().err
    assert code == 2
    assert message.format(tmp=tmp) in err
    assert err.count("\n") == 1 and "Traceback" not in err


def _run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "skdict", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_console_error_has_no_traceback(tmp_path):
    result = _run("encode", "missing.joblib", "missing.npy", "-o", "c.npz", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "skdict encode: error: model file 'missing.joblib' does not exist."
    )


@pytest.mark.parametrize("command", ["demo", "fit", "encode", "describe", "score", "explore"])
def test_every_subcommand_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_:
        main([command, "--help"])
    assert exit_.value.code == 0
    assert f"usage: skdict {command}" in capsys.readouterr().out


def test_demo_quick_writes_report_and_results(tmp_path):
    result = _run("demo", "--quick", "--quiet", "--out", "out", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "signal recovered" in result.stdout and "DoubleBatchKSVD" in result.stdout
    report = (tmp_path / "out" / "report.html").read_text()
    assert "<table>" in report and "<td>DoubleBatchKSVD</td>" in report
    assert 'src="data:image/png;base64,' in report
    assert "http://" not in report and "https://" not in report
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    methods = {row[1] for row in results["rows"]}
    assert {"DoubleBatchKSVD", "sklearn MiniBatchDictionaryLearning"} <= methods
    recovery = {row[1]: row[results["columns"].index("atom recovery")]
                for row in results["rows"] if row[0] == "synthetic"}
    assert recovery["DoubleBatchKSVD"] > recovery["sklearn MiniBatchDictionaryLearning"]
    # the bank is the true atoms (both signs): recovered atoms must name themselves back
    specificity = {row[1]: row[results["columns"].index("specificity")]
                   for row in results["rows"] if row[0] == "synthetic"}
    assert specificity["DoubleBatchKSVD"] >= 0.9 * recovery["DoubleBatchKSVD"]
    assert {row[0] for row in results["rows"]} == {"synthetic", "digits ViT"}
    trained = results["identifiability"]["trained ViT"]
    assert trained[-1] > results["identifiability"]["random ViT"][-1] + 0.2
    purity = [atom["purity"] for atom in results["atoms"]]
    assert np.mean(purity) > 0.2  # twice chance: the class-head names mean something
    assert "identifiability.png" in {p.name for p in (tmp_path / "out").iterdir()}
    assert 'href="explorer/index.html"' in report
    assert (tmp_path / "out" / "explorer" / "index.html").exists()
