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
from sklearn.decomposition import PCA

import skdict
from skdict import ConceptBank, SparseAutoencoder, describe_atoms, metrics
from skdict.cli import main
from skdict.datasets import make_sparse_signals
from skdict.ksvd import DoubleBatchKSVD

ROOT = Path(__file__).resolve().parents[2]


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
    (tmp / "zero.npy").write_bytes(b"")
    (tmp / "junk.joblib").write_text("not a model")
    joblib.dump({"components_": None}, tmp / "dict.joblib")
    joblib.dump(PCA(4).fit(X), tmp / "pca.joblib")
    ConceptBank([f"true atom {i}" for i in range(16)], D_true).save(tmp / "bank.npz")
    ConceptBank(["a", "b"], np.eye(5)[:2]).save(tmp / "narrow_bank.npz")
    np.save(tmp / "vectors.npy", D_true)
    (tmp / "concepts.txt").write_text("red\ngreen\n")
    (tmp / "blank.txt").write_text("red\n\ngreen\n")
    code = main(["fit", str(tmp / "X.npy"), "--n-components", "16", "--n-nonzero", "2",
                 "--max-iter", "30", "-o", str(tmp / "model.skdict"), "--quiet"])
    assert code == 0
    joblib.dump(skdict.load(tmp / "model.skdict"), tmp / "model.joblib")
    return tmp, X, D_true


def test_fit_writes_a_model_that_recovers_the_dictionary(files):
    tmp, X, D_true = files
    model = skdict.load(tmp / "model.skdict")
    assert isinstance(model, DoubleBatchKSVD)
    assert model.components_.shape == (16, 12)
    assert model.n_nonzero_coefs == 2
    cos = np.abs(D_true @ model.components_.T).max(axis=1)
    assert np.mean(cos > 0.95) > 0.8


@pytest.mark.parametrize("source", ["X.npz", "shards"])
def test_fit_reads_npz_and_shard_directories(files, source, capsys):
    tmp, X, _ = files
    out = tmp / f"from-{source}.skdict"
    assert main(["fit", str(tmp / source), "--n-components", "8", "--n-nonzero", "2",
                 "--max-iter", "2", "-o", str(out)]) == 0
    assert skdict.load(out).n_features_in_ == X.shape[1]
    err = capsys.readouterr().err
    assert f"on {X.shape[0]} x {X.shape[1]} embeddings; saved to {out}" in err


def test_fit_sae_writes_a_sparse_autoencoder(files):
    tmp, X, _ = files
    out = tmp / "sae.skdict"
    assert main(["fit", str(tmp / "X.npy"), "--method", "sae", "--n-components", "16",
                 "--n-nonzero", "3", "--max-iter", "2", "--batch-size", "64", "--device",
                 "cpu", "-o", str(out), "-q"]) == 0
    model = skdict.load(out)
    assert isinstance(model, SparseAutoencoder)
    assert model.k == 3 and model.batch_size == 64
    np.testing.assert_allclose(np.linalg.norm(model.components_, axis=1), 1, rtol=1e-5)
    assert main(["encode", str(out), str(tmp / "X.npy"), "-o", str(tmp / "sae.npz"),
                 "-q"]) == 0
    assert sp.load_npz(tmp / "sae.npz").getnnz(axis=1).max() <= 3


def test_encode_writes_csr_codes(files):
    tmp, X, _ = files
    out = tmp / "codes.npz"
    assert main(["encode", str(tmp / "model.skdict"), str(tmp / "X.npy"), "-o", str(out),
                 "-q"]) == 0
    codes = sp.load_npz(out)
    assert sp.issparse(codes) and codes.format == "csr"
    assert codes.shape == (X.shape[0], 16)
    assert codes.getnnz(axis=1).max() <= 2
    model = skdict.load(tmp / "model.skdict")
    np.testing.assert_array_equal(codes.toarray(), model.transform(X))


def test_describe_prints_one_line_per_alive_atom_and_used_sign(files, capsys):
    tmp, X, _ = files
    model = skdict.load(tmp / "model.skdict")
    bank = ConceptBank.load(tmp / "bank.npz")
    expected = describe_atoms(model, bank, X=X[:20])
    np.save(tmp / "few.npy", X[:20])
    assert main(["describe", str(tmp / "model.skdict"), "--concepts", str(tmp / "bank.npz"),
                 "--embeddings", str(tmp / "few.npy"), "--top-k", "1"]) == 0
    lines = capsys.readouterr().out.splitlines()
    wanted = []
    for atom in np.flatnonzero(expected.alive):
        sign = "-" if expected.signs[atom] < 0 else "+"
        wanted.append((f"atom {atom}\t{sign}\t",
                       f"{expected.names[atom, 0]} ({expected.scores[atom, 0]:.3f})"))
        if expected.both_signs[atom]:
            other = "+" if sign == "-" else "-"
            wanted.append((f"atom {atom}\t{other}\t", f"{expected.opposite_names[atom, 0]} "
                           f"({expected.opposite_scores[atom, 0]:.3f})"))
    assert 0 < expected.alive.sum() < 16 and len(lines) == len(wanted)
    for line, (start, name) in zip(lines, wanted):
        assert line.startswith(start) and name in line


CONCEPTS = ["red", "green", "blue", "a dog", "a cat", "a car", "the sea", "a tree"]


def test_describe_embeds_a_concepts_file_with_a_clip_checkpoint(clip_checkpoint, tmp_path,
                                                                capsys):
    """The real --embedder path: parse, load the checkpoint, embed the names, describe."""
    from sklearn.decomposition import SparseCoder

    from skdict import CLIPEmbedder

    name, weights = clip_checkpoint
    embedder = CLIPEmbedder(name, pretrained=weights, device="cpu").fit()
    T = embedder.encode_text(CONCEPTS)
    atoms = T - T.mean(axis=0)  # one atom per concept, in the bank's centred space
    model = SparseCoder(atoms / np.linalg.norm(atoms, axis=1, keepdims=True))
    skdict.save(model, tmp_path / "model.skdict")
    concepts = tmp_path / "concepts.txt"
    concepts.write_text("\r\n".join(CONCEPTS) + "\r\n")  # Windows line ends too
    assert main(["describe", str(tmp_path / "model.skdict"), "--concepts", str(concepts),
                 "--embedder", f"clip:{name}:{weights}"]) == 0
    lines = capsys.readouterr().out.splitlines()
    expected = describe_atoms(model, ConceptBank.from_texts(CONCEPTS, embedder))
    assert [line.split("\t")[2].split(" (")[0] for line in lines] == list(expected.names[:, 0])
    assert list(expected.names[:, 0]) == CONCEPTS


def test_embedder_checkpoint_of_another_model_is_one_line(clip_checkpoint, files, capsys):
    tmp, _, _ = files
    _, weights = clip_checkpoint
    assert main(["describe", str(tmp / "model.skdict"), "--concepts", str(tmp / "concepts.txt"),
                 "--embedder", f"clip:ViT-S-32:{weights}", "-q"]) == 2
    err = capsys.readouterr().err
    assert f"pretrained={str(weights)!r} does not hold weights of model='ViT-S-32'" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("spec, random_weights, model, pretrained", [
    ("clip:ViT-B-32", True, "ViT-B-32", "random"),
    ("clip:ViT-B-16:/weights/open_clip.bin", False, "ViT-B-16", "/weights/open_clip.bin"),
])
def test_embedder_spec(spec, random_weights, model, pretrained):
    from skdict.cli import _parse_embedder

    embedder = _parse_embedder(spec, random_weights)
    assert (embedder.model, embedder.pretrained) == (model, pretrained)


def test_describe_without_data_names_every_atom(files, capsys):
    tmp, _, _ = files
    assert main(["describe", str(tmp / "model.skdict"), "--concepts", str(tmp / "bank.npz"),
                 "--top-k", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 16
    assert all(line.count("true atom") == 2 for line in lines)


def test_score_prints_the_scores_and_their_null_levels(files, capsys):
    tmp, X, _ = files
    model = skdict.load(tmp / "model.skdict")
    bank = ConceptBank.load(tmp / "bank.npz")
    assert main(["score", str(tmp / "model.skdict"), str(tmp / "X.npy"), "--concepts",
                 str(tmp / "bank.npz"), "-q"]) == 0
    out = capsys.readouterr().out
    X_hat = model.inverse_transform(model.transform(X))
    n_alive = round(16 * (1 - metrics.dead_fraction(model, X)))
    assert re.search(rf"^alive atoms\s+{n_alive} / 16\s+–$", out, re.M), out
    for name, value in [
        ("signal recovered", metrics.signal_recovered(X, X_hat)),
        ("explained variance", metrics.explained_variance(X, X_hat)),
    ]:
        assert re.search(rf"^{name}\s+{value:.3f}\s+–$", out, re.M), (name, out)
    for name in ("faithfulness", "specificity"):
        score = getattr(metrics, name)
        value, null = score(model, X, bank), score(model, X, bank, baseline=True)
        assert re.search(rf"^{name}\s+{value:.3f}\s+{null:.3f}$", out, re.M), (name, out)


@pytest.mark.parametrize("null", ["shuffled", "none"])
def test_score_prints_the_null_asked_for(files, capsys, null):
    tmp, X, _ = files
    model = skdict.load(tmp / "model.skdict")
    bank = ConceptBank.load(tmp / "bank.npz")
    assert main(["score", str(tmp / "model.skdict"), str(tmp / "X.npy"), "--concepts",
                 str(tmp / "bank.npz"), "--null", null, "-q"]) == 0
    out = capsys.readouterr().out
    for name in ("faithfulness", "specificity"):
        score = getattr(metrics, name)
        value = score(model, X, bank)
        level = "–" if null == "none" else f"{score(model, X, bank, baseline=null):.3f}"
        assert re.search(rf"^{name}\s+{value:.3f}\s+{level}$", out, re.M), (name, out)


def test_score_without_bank_leaves_description_scores_blank(files, capsys):
    tmp, _, _ = files
    assert main(["score", str(tmp / "model.skdict"), str(tmp / "X.npy")]) == 0
    captured = capsys.readouterr()
    assert re.search(r"^faithfulness\s+–\s+–$", captured.out, re.M)
    assert re.search(r"^explained variance\s+\d\.\d{3}\s+–$", captured.out, re.M)
    assert "need a concept bank" in captured.err


def test_explore_writes_the_site(files):
    tmp, X, _ = files
    labels = tmp / "labels.txt"
    labels.write_text("".join(f"row {i}\n" for i in range(X.shape[0])))
    out = tmp / "site"
    assert main(["explore", str(tmp / "model.skdict"), str(tmp / "X.npy"), "--out", str(out),
                 "--concepts", str(tmp / "bank.npz"), "--labels", str(labels),
                 "--compare", str(tmp / "model.skdict"), "-q"]) == 0
    index = (out / "index.html").read_text()
    assert "<html" in index.lower()
    assert len(list(out.rglob("*"))) > 3
    assert not [p for p in tmp.iterdir() if p.name.startswith(".site")]  # no staging left


@pytest.fixture(scope="module")
def codes_file(files):
    tmp, X, _ = files
    assert main(["encode", str(tmp / "model.skdict"), str(tmp / "X.npy"), "-o",
                 str(tmp / "run_codes.npz"), "-q"]) == 0
    sp.save_npz(tmp / "short_codes.npz", sp.load_npz(tmp / "run_codes.npz")[:-1])
    sp.save_npz(tmp / "wide_codes.npz", sp.hstack(
        [sp.load_npz(tmp / "run_codes.npz"), sp.csr_matrix((X.shape[0], 1))]).tocsr())
    return tmp / "run_codes.npz"


@pytest.mark.parametrize("command", [
    ["score", "{tmp}/model.skdict", "{tmp}/X.npy", "--concepts", "{tmp}/bank.npz"],
    ["describe", "{tmp}/model.skdict", "--embeddings", "{tmp}/X.npy", "--concepts",
     "{tmp}/bank.npz", "--top-k", "2"],
])
def test_given_codes_print_what_encoding_prints(files, codes_file, command, capsys):
    tmp, _, _ = files
    argv = [a.format(tmp=tmp) for a in command] + ["-q"]
    assert main(argv) == 0
    encoding = capsys.readouterr().out
    assert main(argv + ["--codes", str(codes_file)]) == 0
    assert capsys.readouterr().out == encoding
    assert len(encoding.splitlines()) >= 5


def test_describe_reads_alive_atoms_from_codes_alone(files, codes_file, capsys):
    tmp, _, _ = files
    argv = ["describe", str(tmp / "model.skdict"), "--concepts", str(tmp / "bank.npz"), "-q"]
    assert main(argv + ["--embeddings", str(tmp / "X.npy")]) == 0
    with_embeddings = capsys.readouterr().out
    assert main(argv + ["--codes", str(codes_file)]) == 0
    assert capsys.readouterr().out == with_embeddings


def test_explore_with_codes_writes_the_same_site(files, codes_file):
    tmp, _, _ = files
    sites = {}
    for name, extra in (("encoded", []), ("given", ["--codes", str(codes_file)])):
        out = tmp / f"site-{name}"
        assert main(["explore", str(tmp / "model.skdict"), str(tmp / "X.npy"), "--out",
                     str(out), "--concepts", str(tmp / "bank.npz"), "-q", *extra]) == 0
        sites[name] = {p.relative_to(out): p.read_bytes() for p in out.rglob("*.js")}
    assert sites["given"] == sites["encoded"] and len(sites["given"]) >= 4


def test_explore_reports_the_site_size(files, capsys):
    tmp, _, _ = files
    out = tmp / "site-size"
    assert main(["explore", str(tmp / "model.skdict"), str(tmp / "X.npy"), "--out",
                 str(out)]) == 0
    n_files = sum(1 for p in out.rglob("*") if p.is_file())
    n_bytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    assert f"({n_files} files, {n_bytes / 2**20:.1f} MB;" in capsys.readouterr().err


def test_scikit_learn_models_are_scored_and_explored(files, capsys):
    """Their inverse_transform refuses sparse codes; the commands decode them anyway."""
    from sklearn.decomposition import MiniBatchDictionaryLearning

    tmp, X, _ = files
    mbdl = MiniBatchDictionaryLearning(16, transform_algorithm="omp",
                                       transform_n_nonzero_coefs=2, max_iter=3,
                                       random_state=0).fit(X)
    skdict.save(mbdl, tmp / "mbdl.skdict")
    assert main(["score", str(tmp / "mbdl.skdict"), str(tmp / "X.npy"), "-q"]) == 0
    X_hat = mbdl.inverse_transform(mbdl.transform(X))
    value = metrics.signal_recovered(X, X_hat)
    assert re.search(rf"^signal recovered\s+{value:.3f}\s", capsys.readouterr().out, re.M)
    assert main(["explore", str(tmp / "mbdl.skdict"), str(tmp / "X.npy"), "--out",
                 str(tmp / "mbdl-site"), "-q"]) == 0
    assert (tmp / "mbdl-site" / "data" / "overview.js").exists()


@pytest.mark.parametrize("argv, message", [
    (["score", "{tmp}/model.skdict", "{tmp}/X.npy", "--codes", "{tmp}/short_codes.npz"],
     "--codes '{tmp}/short_codes.npz' has shape (239, 16) but must have 240 rows (the "
     "embeddings) and 16 columns (the model's atoms)"),
    (["explore", "{tmp}/model.skdict", "{tmp}/X.npy", "--out", "{tmp}/s", "--codes",
      "{tmp}/wide_codes.npz"], "has shape (240, 17) but must have 240 rows"),
    (["describe", "{tmp}/model.skdict", "--concepts", "{tmp}/bank.npz", "--codes",
      "{tmp}/wide_codes.npz"], "has shape (240, 17) but must have 16 columns"),
    (["score", "{tmp}/model.skdict", "{tmp}/X.npy", "--codes", "{tmp}/X.npz"],
     "cannot read --codes '{tmp}/X.npz' as codes written by 'skdict encode'"),
    (["score", "{tmp}/model.skdict", "{tmp}/X.npy", "--codes", "{tmp}/none.npz"],
     "codes file '{tmp}/none.npz' does not exist"),
])
def test_codes_that_do_not_fit_exit_2(files, codes_file, argv, message, capsys):
    tmp, _, _ = files
    assert main([a.format(tmp=tmp) for a in argv] + ["-q"]) == 2
    err = capsys.readouterr().err
    assert message.format(tmp=tmp) in err
    assert err.count("\n") == 1 and "Traceback" not in err


def test_quiet_prints_nothing(files, capsys):
    tmp, _, _ = files
    main(["encode", str(tmp / "model.skdict"), str(tmp / "X.npy"), "-o",
          str(tmp / "quiet.npz"), "--quiet"])
    captured = capsys.readouterr()
    assert captured.out == "" and captured.err == ""


@pytest.mark.parametrize(
    "argv, message",
    [
        (["fit", "{tmp}/missing.npy", "-o", "{tmp}/m.skdict"],
         "embeddings file '{tmp}/missing.npy' does not exist"),
        (["fit", "{tmp}/vector.npy", "-o", "{tmp}/m.skdict"], "expected a 2-D array"),
        (["fit", "{tmp}/empty", "-o", "{tmp}/m.skdict"], "holds no .npy shards"),
        (["fit", "{tmp}/zero.npy", "-o", "{tmp}/m.skdict"],
         "embeddings file '{tmp}/zero.npy' is empty (0 bytes)"),
        (["fit", "{tmp}/X.npy", "--n-components", "2", "--n-nonzero", "5", "-o",
          "{tmp}/m.skdict"], "n_nonzero_coefs=5 must be between 1"),
        (["fit", "{tmp}/X.npy", "-o", "{tmp}/m.joblib"],
         "skdict writes models in the .skdict format"),
        (["encode", "{tmp}/nothing.skdict", "{tmp}/X.npy", "-o", "{tmp}/c.npz"],
         "model file '{tmp}/nothing.skdict' does not exist"),
        (["encode", "{tmp}/zero.npy", "{tmp}/X.npy", "-o", "{tmp}/c.npz"],
         "model file '{tmp}/zero.npy' is empty (0 bytes)"),
        (["encode", "{tmp}/model.joblib", "{tmp}/X.npy", "-o", "{tmp}/c.npz"],
         "'{tmp}/model.joblib' is not a .skdict model file. If it is a pickle or joblib "
         "file you trust, pass --trust-pickle"),
        (["encode", "{tmp}/X.npz", "{tmp}/X.npy", "-o", "{tmp}/c.npz"],
         "'{tmp}/X.npz' is not a .skdict model file"),
        (["encode", "{tmp}/junk.joblib", "{tmp}/X.npy", "-o", "{tmp}/c.npz", "--trust-pickle"],
         "cannot read model '{tmp}/junk.joblib': not a joblib or pickle file"),
        (["encode", "{tmp}/dict.joblib", "{tmp}/X.npy", "-o", "{tmp}/c.npz", "--trust-pickle"],
         "holds a dict, not a dictionary learner; skdict commands accept DoubleBatchKSVD"),
        (["encode", "{tmp}/pca.joblib", "{tmp}/X.npy", "-o", "{tmp}/c.npz", "--trust-pickle"],
         "'{tmp}/pca.joblib' holds a PCA, not a dictionary learner; skdict commands accept "
         "DoubleBatchKSVD, SparseAutoencoder, or scikit-learn's MiniBatchDictionaryLearning"),
        (["score", "{tmp}/pca.joblib", "{tmp}/X.npy", "--trust-pickle"], "holds a PCA"),
        (["describe", "{tmp}/pca.joblib", "--concepts", "{tmp}/bank.npz", "--trust-pickle"],
         "holds a PCA"),
        (["explore", "{tmp}/pca.joblib", "{tmp}/X.npy", "--out", "{tmp}/s", "--trust-pickle"],
         "holds a PCA"),
        (["encode", "{tmp}/model.skdict", "{tmp}/narrow.npy", "-o", "{tmp}/c.npz"],
         "has 5 features per row but the model was fitted on 12"),
        (["encode", "{tmp}/model.skdict", "{tmp}/zero.npy", "-o", "{tmp}/c.npz"],
         "embeddings file '{tmp}/zero.npy' is empty (0 bytes)"),
        (["describe", "{tmp}/model.skdict", "--concepts", "{tmp}/X.npz"],
         "cannot read concept bank '{tmp}/X.npz'"),
        (["describe", "{tmp}/model.skdict", "--concepts", "{tmp}/nobank.npz"],
         "concept bank '{tmp}/nobank.npz' does not exist"),
        (["describe", "{tmp}/model.skdict", "--concepts", "{tmp}/narrow_bank.npz"],
         "the concept bank has 5-dimensional embeddings"),
        (["describe", "{tmp}/model.skdict", "--concepts", "{tmp}/concepts.txt"],
         "needs --embedder clip:MODEL[:PRETRAINED] to embed the names; with vectors of "
         "your own, build a bank"),
        (["describe", "{tmp}/model.skdict", "--concepts", "{tmp}/vectors.npy"],
         "holds vectors without names; build a bank from names and vectors in Python: "
         "ConceptBank(names, vectors).save('bank.npz'), then pass --concepts bank.npz"),
        (["describe", "{tmp}/model.skdict", "--concepts", "{tmp}/blank.txt",
          "--embedder", "clip:ViT-S-32"], "'{tmp}/blank.txt': line 2 is blank"),
        (["describe", "{tmp}/model.skdict", "--concepts", "{tmp}/concepts.txt",
          "--embedder", "timm:vit"], "--embedder 'timm:vit' is not understood"),
        (["describe", "{tmp}/model.skdict"], "describe needs --concepts"),
        (["score", "{tmp}/model.skdict", "{tmp}/vector.npy"], "expected a 2-D array"),
        (["explore", "{tmp}/model.skdict", "{tmp}/X.npy", "--out", "{tmp}/s", "--labels",
          "{tmp}/concepts.txt"],
         "labels file '{tmp}/concepts.txt' has 2 lines but the embeddings have 240 rows: "
         "rows 3 to 240 have no line"),
        (["explore", "{tmp}/model.skdict", "{tmp}/X.npy", "--out", "{tmp}/s", "--images",
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


def test_pca_is_refused_by_save_too(files):
    tmp, X, _ = files
    with pytest.raises(TypeError, match="skdict.save accepts DoubleBatchKSVD"):
        skdict.save(PCA(2).fit(X), tmp / "pca.skdict")


def test_a_pickle_runs_no_code_without_trust_pickle(files, tmp_path, capsys):
    """A model file that would create a file when unpickled is refused, not run."""
    tmp, _, _ = files
    marker = tmp_path / "pwned"
    (tmp_path / "evil.joblib").write_bytes(
        b"cbuiltins\nopen\n(V" + str(marker).encode() + b"\nVw\ntR."
    )
    assert main(["encode", str(tmp_path / "evil.joblib"), str(tmp / "X.npy"), "-o",
                 str(tmp_path / "c.npz"), "-q"]) == 2
    assert "--trust-pickle" in capsys.readouterr().err
    assert not marker.exists()


def test_commands_read_a_saelens_folder(files, tmp_path):
    pytest.importorskip("safetensors")
    tmp, X, _ = files
    sae = SparseAutoencoder(16, k=2, max_iter=2, batch_size=64, device="cpu",
                            random_state=0).fit(X)
    folder = skdict.save(sae, tmp_path / "sae", format="saelens")
    out = tmp_path / "codes.npz"
    assert main(["encode", str(folder), str(tmp / "X.npy"), "-o", str(out), "-q"]) == 0
    # float32 weights with scale_ folded in: agreement to float32 rounding (see
    # test_persistence.test_saelens_export_encodes_like_the_sae)
    np.testing.assert_allclose(sp.load_npz(out).toarray(), sae.transform(X), rtol=1e-4,
                               atol=1e-5)


def test_trust_pickle_reads_a_joblib_model(files, tmp_path):
    tmp, X, _ = files
    out = tmp_path / "codes.npz"
    assert main(["encode", str(tmp / "model.joblib"), str(tmp / "X.npy"), "-o", str(out),
                 "--trust-pickle", "-q"]) == 0
    np.testing.assert_array_equal(sp.load_npz(out).toarray(),
                                  skdict.load(tmp / "model.skdict").transform(X))


def test_fit_refuses_to_overwrite_its_input(files, tmp_path, capsys):
    tmp, _, _ = files
    X_path = tmp_path / "x.npy"
    X_path.write_bytes((tmp / "X.npy").read_bytes())
    before = X_path.read_bytes()
    assert main(["fit", str(X_path), "-o", str(X_path), "-q"]) == 2
    assert f"-o {str(X_path)!r} is also an input" in capsys.readouterr().err
    assert X_path.read_bytes() == before
    X_npz = tmp_path / "x.npz"
    X_npz.write_bytes((tmp / "X.npz").read_bytes())
    assert main(["encode", str(tmp / "model.skdict"), str(X_npz), "-o", str(tmp_path / "x"),
                 "-q"]) == 2  # -o x writes x.npz: the input
    assert f"-o {str(X_npz)!r} is also an input" in capsys.readouterr().err
    assert X_npz.read_bytes() == (tmp / "X.npz").read_bytes()


@pytest.mark.parametrize("case", ["folder as file", "file as folder"])
def test_bad_output_paths_fail_before_any_work(files, tmp_path, case, capsys):
    """The output is checked first: the (missing) embeddings are never reached."""
    tmp, _, _ = files
    (tmp_path / "a_file").write_text("")
    (tmp_path / "a_folder").mkdir()
    output = {"folder as file": tmp_path / "a_folder",
              "file as folder": tmp_path / "a_file" / "model.skdict"}[case]
    message = {"folder as file": "is a directory; give a file name",
               "file as folder": f"{str(tmp_path / 'a_file')!r} is a file, not a folder"}[case]
    for argv in (["fit", str(tmp_path / "missing.npy"), "-o", str(output)],
                 ["encode", str(tmp / "model.skdict"), str(tmp_path / "missing.npy"), "-o",
                  str(output if case == "file as folder" else tmp_path / "a_folder.npz")]):
        if case == "folder as file" and argv[0] == "encode":
            (tmp_path / "a_folder.npz").mkdir(exist_ok=True)
        assert main(argv + ["-q"]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    site = tmp_path / "a_file"
    assert main(["explore", str(tmp / "model.skdict"), str(tmp_path / "missing.npy"),
                 "--out", str(site), "-q"]) == 2
    assert f"--out {str(site)!r} is a file; give a folder" in capsys.readouterr().err


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0,
                    reason="root writes through permission bits")
def test_unwritable_output_folder_fails_before_any_work(files, tmp_path, capsys):
    tmp, _, _ = files
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        assert main(["fit", str(tmp_path / "missing.npy"), "-o",
                     str(locked / "sub" / "m.skdict"), "-q"]) == 2
    finally:
        locked.chmod(0o700)
    assert f"cannot write in {str(locked)!r}" in capsys.readouterr().err


def test_encode_reports_the_file_it_wrote(files, tmp_path, capsys):
    tmp, _, _ = files
    assert main(["encode", str(tmp / "model.skdict"), str(tmp / "X.npy"), "-o",
                 str(tmp_path / "out")]) == 0
    assert f"saved to {tmp_path / 'out.npz'}" in capsys.readouterr().err
    assert sp.load_npz(tmp_path / "out.npz").shape == (240, 16)
    assert not (tmp_path / "out").exists()


def test_a_failed_write_keeps_the_previous_files(files, tmp_path, monkeypatch):
    """A write that dies half-way (here: numpy raising mid-file) leaves the old files."""
    tmp, _, _ = files
    model = tmp_path / "model.skdict"
    codes = tmp_path / "codes.npz"
    model.write_bytes((tmp / "model.skdict").read_bytes())
    codes.write_bytes(b"previous codes")
    before = model.read_bytes()

    def dies_half_way(file, *args, **kwargs):
        file.write(b"partial")
        raise KeyboardInterrupt  # what a SIGINT raises

    monkeypatch.setattr(np.lib.format, "write_array", dies_half_way)
    assert main(["fit", str(tmp / "X.npy"), "--n-components", "4", "--n-nonzero", "1",
                 "--max-iter", "1", "-o", str(model), "-q"]) == 130
    monkeypatch.setattr(sp, "save_npz", lambda file, *a, **k: dies_half_way(file))
    assert main(["encode", str(model), str(tmp / "X.npy"), "-o", str(codes), "-q"]) == 130
    assert model.read_bytes() == before
    assert codes.read_bytes() == b"previous codes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["codes.npz", "model.skdict"]


def test_sigterm_during_save_keeps_the_previous_model(files, tmp_path):
    """The issue's case: a process killed while writing the model file."""
    tmp, _, _ = files
    model = tmp_path / "model.skdict"
    model.write_bytes((tmp / "model.skdict").read_bytes())
    before = model.read_bytes()
    script = (
        "import os, signal, numpy as np\n"
        "from skdict.cli import main\n"
        "def killed(file, *a, **k):\n"
        "    file.write(b'partial'); os.kill(os.getpid(), signal.SIGTERM)\n"
        "np.lib.format.write_array = killed\n"
        f"raise SystemExit(main(['fit', {str(tmp / 'X.npy')!r}, '--n-components', '4', "
        f"'--n-nonzero', '1', '--max-iter', '1', '-o', {str(model)!r}, '-q']))\n"
    )
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True)
    assert result.returncode == 143  # 128 + SIGTERM, after removing the temporary file
    assert model.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.skdict"]


LABELS = ["plain", "a\u2028b", "c\x85d", "e\ff", "", "last\r"]


def test_text_files_split_on_newlines_only(tmp_path):
    from skdict._app.files import read_lines

    path = tmp_path / "labels.txt"
    path.write_bytes("\n".join(LABELS).encode() + b"\n")
    assert read_lines(path, "labels file", allow_blank=True) == [
        "plain", "a\u2028b", "c\x85d", "e\ff", "", "last"]


def test_explore_keeps_labels_aligned_with_rows(files, tmp_path):
    """Every row's label reaches the site next to that row (a blank line included)."""
    tmp, X, _ = files
    labels = [f"{i}{LABELS[i % len(LABELS)]}" for i in range(X.shape[0])]
    labels[7] = ""
    path = tmp_path / "labels.txt"
    path.write_bytes("\n".join(labels).encode())
    out = tmp_path / "site"
    assert main(["explore", str(tmp / "model.skdict"), str(tmp / "X.npy"), "--out", str(out),
                 "-q", "--labels", str(path)]) == 0
    script = (out / "data" / "pages" / "0.js").read_text(encoding="utf-8")
    pages = json.loads(script[script.index("] = ") + 4:].rstrip().rstrip(";"))
    shown = [(row, label) for page in pages for row, _, label in page["top"]]
    assert len(shown) > 50
    assert all(label == labels[row].removesuffix("\r") for row, label in shown)


def test_label_count_mismatch_names_the_line(files, tmp_path, capsys):
    tmp, X, _ = files
    path = tmp_path / "labels.txt"
    path.write_text("".join(f"row {i}\n" for i in range(X.shape[0] + 3)))
    assert main(["explore", str(tmp / "model.skdict"), str(tmp / "X.npy"), "--out",
                 str(tmp_path / "s"), "--labels", str(path), "-q"]) == 2
    assert "has 243 lines but the embeddings have 240 rows: line 241 is the first without " \
        "an embedding row" in capsys.readouterr().err


def test_corrupt_image_is_one_line_and_leaves_the_site_alone(files, tmp_path, capsys):
    pytest.importorskip("PIL")
    from PIL import Image

    tmp, X, _ = files
    images = tmp_path / "images"
    images.mkdir()
    for i in range(X.shape[0]):
        Image.new("RGB", (4, 4), (i, 0, 0)).save(images / f"{i:03d}.png")
    out = tmp_path / "site"
    args = ["explore", str(tmp / "model.skdict"), str(tmp / "X.npy"), "--out", str(out),
            "--images", str(images), "-q"]
    assert main(args) == 0
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (images / "007.png").write_bytes(b"\x89PNG but not really")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert f"cannot read image {str(images / '007.png')!r}" in err
    assert err.count("\n") == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before


def test_failed_site_build_leaves_no_half_built_site(files, tmp_path):
    """build_site stages the site: an error while writing thumbnails leaves nothing."""
    from skdict.explore import build_site

    tmp, X, _ = files
    model = skdict.load(tmp / "model.skdict")
    images = [str(tmp_path / "missing.png")] * X.shape[0]
    with pytest.raises(FileNotFoundError):
        build_site(model, X, tmp_path / "site", images=images, top_k=2)
    assert list(tmp_path.iterdir()) == []


def _run(*args, cwd):
    env = dict(os.environ, PYTHONPATH=str(ROOT), MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "skdict", *args], cwd=cwd, env=env,
                          capture_output=True, text=True)


def test_console_error_has_no_traceback(tmp_path):
    result = _run("encode", "missing.skdict", "missing.npy", "-o", "c.npz", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "skdict encode: error: model file 'missing.skdict' does not exist."
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
    alive = [row[results["columns"].index("alive atoms")] for row in results["rows"]]
    assert all(isinstance(a, int) or not float(a).is_integer() for a in alive), alive
    recovery = {row[1]: row[results["columns"].index("atom recovery")]
                for row in results["rows"] if row[0] == "synthetic"}
    assert recovery["DoubleBatchKSVD"] > recovery["sklearn MiniBatchDictionaryLearning"]
    # the bank is the true atoms (both signs): recovered atoms must name themselves back
    specificity = {row[1]: row[results["columns"].index("specificity")]
                   for row in results["rows"] if row[0] == "synthetic"}
    assert specificity["DoubleBatchKSVD"] >= 0.9 * recovery["DoubleBatchKSVD"]
    assert {row[0] for row in results["rows"]} == {"synthetic", "digits ViT"}
    # the interpretability columns are measured on the digits ViT, for every method
    digits = [dict(zip(results["columns"], row)) for row in results["rows"]
              if row[0] == "digits ViT"]
    assert {"DoubleBatchKSVD", "DoubleBatchKSVD (positive)"} <= {row["method"] for row in digits}
    for row in digits:
        # probes above chance (0.5), a share, and most of the ViT's accuracy kept
        assert 0.5 < row["probe k=5"] <= 1 and 0 <= row["probe k=1"] <= 1
        assert 0 <= row["stability"] <= 1 and row["accuracy recovered"] > 0.5
    trained = results["identifiability"]["trained ViT"]
    assert trained[-1] > results["identifiability"]["random ViT"][-1] + 0.2
    purity = [atom["purity"] for atom in results["atoms"]]
    assert np.mean(purity) > 0.2  # twice chance: the class-head names mean something
    assert "identifiability.png" in {p.name for p in (tmp_path / "out").iterdir()}
    assert 'href="explorer/index.html"' in report
    assert (tmp_path / "out" / "explorer" / "index.html").exists()
