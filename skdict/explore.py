"""An offline, static HTML browser of a fitted dictionary (the "atom explorer").

:func:`build_site` writes ``index.html``, its script and style sheet, data files
and image thumbnails to a folder. The site needs no server and no network: open
``index.html`` from disk or publish the folder anywhere.

Data are plain JavaScript files that assign JSON to ``window.SKDICT_DATA``
(browsers refuse ``fetch`` of local files), loaded with ``<script>`` tags. The
overview is small; the atom list is one compact column table; everything shown
on an atom's own page lives in pages of :data:`PAGE_SIZE` atoms loaded on
demand, so that a dictionary of 16,384 atoms opens at once.
"""

import json
import math
import shutil
from importlib import resources
from numbers import Integral
from pathlib import Path

import numpy as np
from sklearn.utils.validation import check_is_fitted

from ._app import explore_data as data
from ._optional import import_optional
from ._staging import check_free, owned_entries, staged_folder
from ._validation import check_dictionary, check_samples
from ._description import Described, faithfulness_per_atom, specificity_per_atom
from ._dictionary import encoded
from .concepts import concept_vectors, top_concepts

PAGE_SIZE = 64
_N_NAMES = 5
_N_NEIGHBORS = 8
_N_CLASSES = 5
_N_COMPARE_SAMPLES = 3
_THUMB_SIZE = 96
_THUMBS_PER_FOLDER = 1000
_CHANNELS = (1, 3, 4)
# Lists the entries build_site wrote into out_dir, so that a rebuild replaces
# those and never a file or folder of the user's with the same name.
_MANIFEST = ".skdict-site.json"


def _site_entries(images):
    """The entries of out_dir a site writes (thumbnails only with images)."""
    return ("index.html", "assets", "data") + (() if images is None else ("thumbs",))


def build_site(
    estimator,
    X,
    out_dir,
    *,
    bank=None,
    images=None,
    labels=None,
    projector=None,
    top_k=16,
    compare=None,
    codes=None,
):
    """Write a static atom-explorer site for a fitted dictionary.

    The site has an overview (atom count, alive fraction, signal recovered,
    faithfulness, specificity, L0 histogram), a list of atoms sortable by usage,
    mean activation, faithfulness and name and searchable by concept name, one
    page per atom (concept names with cosines, top-activating samples,
    activation histogram, nearest atoms, classes pushed) and, when `compare` is
    given, a page of matched atoms side by side.

    Parameters
    ----------
    estimator : fitted estimator
        A dictionary learner with ``components_`` (atoms as rows) and
        ``transform``, e.g. :class:`~skdict.DoubleBatchKSVD` or
        :class:`~skdict.SparseAutoencoder`.
    X : array-like of shape (n_samples, n_features)
        Embeddings to encode; the statistics and top samples come from them.
    out_dir : str or path-like
        Folder to write to; created if needed. The site (``index.html``,
        ``assets/``, ``data/``, ``thumbs/`` with images, and the list of these,
        ``.skdict-site.json``) is built in a hidden folder inside it and moved
        into place only when complete, replacing an earlier build's entries.
        Other files in `out_dir` are left alone, and if one of them has the
        name of an entry, a ``FileExistsError`` is raised before any work; a
        failed or interrupted build leaves `out_dir` as it was.
    bank : ConceptBank, default=None
        Concepts that name the atoms (:func:`~skdict.describe_atoms`) and give
        the faithfulness and specificity scores. Without it atoms are unnamed.
    images : array-like or sequence, default=None
        One image per row of X: an array of shape (n_samples, height, width),
        (n_samples, height, width, channels) or (n_samples, channels, height,
        width) with 1, 3 or 4 channels (as
        :func:`skdict.datasets.load_digits_images` gives), or a sequence of
        such arrays, PIL images or image file paths. Top samples then show as
        thumbnails (needs pillow, from ``skdict[vision]``). Integer arrays
        other than uint8 and float arrays are scaled per image to their own
        range.
    labels : sequence of length n_samples, default=None
        A label per sample (class name, file name...) shown with top samples.
    projector : ClassEmbeddingProjector, default=None
        A fitted projector of the model that produced X; atom pages then list
        the classes each atom pushes up and down
        (``projector.project_directions``), taking the atom in the direction
        its codes on X mostly have (``-d_k`` when its mean non-zero code is
        negative, as :func:`~skdict.describe_atoms` does).
    top_k : int, default=16
        Top-activating samples kept per atom.
    compare : fitted estimator, default=None
        A second dictionary fitted on the same data (e.g. a SparseAutoencoder
        next to a DoubleBatchKSVD). Its atoms are matched to the estimator's by
        the Hungarian algorithm on the absolute cosine and shown side by side.

    Returns
    -------
    index : pathlib.Path
        Path of the site's ``index.html``.

    Examples
    --------
    >>> import tempfile
    >>> from skdict import DoubleBatchKSVD
    >>> from skdict.datasets import make_sparse_signals
    >>> from skdict.explore import build_site
    >>> X, _, _ = make_sparse_signals(200, n_features=8, n_components=12, random_state=0)
    >>> est = DoubleBatchKSVD(12, n_nonzero_coefs=2, max_iter=3, random_state=0).fit(X)
    >>> with tempfile.TemporaryDirectory() as folder:
    ...     print(build_site(est, X, folder, top_k=4).name)
    index.html
    """
    components, X = _check_estimator_and_data(estimator, X)
    n_samples = X.shape[0]
    labels = _check_labels(labels, n_samples)
    if not isinstance(top_k, Integral) or isinstance(top_k, bool) or top_k < 1:
        raise ValueError(f"top_k must be a positive int, got {top_k!r}.")
    _check_images(images, n_samples)
    if compare is not None:
        compare_components, _ = _check_estimator_and_data(compare, X, name="compare")

    final = Path(out_dir)
    if final.exists() and not final.is_dir():
        raise ValueError(f"out_dir={str(final)!r} is a file; pass a folder for the site.")
    check_free(final, _site_entries(images), _MANIFEST)
    run = encoded(estimator, X, codes)
    with staged_folder(final, _MANIFEST) as out:
        thumbs = _Thumbnails(out, images)
        atoms = _AtomSummary(run, bank)
        by_atom = run.by_atom

        overview = _overview(run, atoms, bank, images, labels, projector)
        pushes = _class_scores(projector, components * atoms.signs[:, None])
        top = [data.top_samples(by_atom, k, top_k) for k in range(len(components))]
        neighbors = data.nearest_atoms(components, _N_NEIGHBORS)
        pages = []
        for k in range(len(components)):
            rows, values = top[k]
            thumbs.add(rows)
            pages.append(_atom_page(k, atoms, by_atom, rows, values, labels, neighbors, pushes))

        if compare is not None:
            comparison = _comparison(components, atoms, top, encoded(compare, run.X),
                                     compare_components, bank, thumbs)
            _write_data(out / "data" / "compare.js", "compare", comparison.pop("pairs"))
            overview["compare"] = comparison

        _copy_static(out)
        _write_data(out / "data" / "overview.js", "overview", overview)
        _write_data(out / "data" / "atoms.js", "atoms", atoms.table())
        for start in range(0, len(pages), PAGE_SIZE):
            page = start // PAGE_SIZE
            _write_data(out / "data" / "pages" / f"{page}.js", f"page/{page}",
                        pages[start : start + PAGE_SIZE])
        thumbs.write()
    return final / "index.html"


def site_size(out_dir):
    """``(n_files, n_bytes)`` of the site :func:`build_site` wrote into `out_dir`.

    Counts the entries the build wrote (its manifest lists them), not other
    files the folder holds.

    Parameters
    ----------
    out_dir : str or path-like
        The folder given to :func:`build_site`.

    Returns
    -------
    n_files : int
    n_bytes : int
    """
    n_files = n_bytes = 0
    for name in sorted(owned_entries(Path(out_dir), _MANIFEST)):
        entry = Path(out_dir) / name
        files = [entry] if entry.is_file() else [p for p in entry.rglob("*") if p.is_file()]
        n_files += len(files)
        n_bytes += sum(p.stat().st_size for p in files)
    return n_files, n_bytes


def _check_estimator_and_data(estimator, X, name="estimator"):
    if not hasattr(estimator, "transform"):
        raise TypeError(
            f"{name} must be a fitted dictionary learner with components_ and "
            f"transform, got {type(estimator).__name__}."
        )
    check_is_fitted(estimator, "components_")
    X = check_samples(X, "X")
    components = check_dictionary(
        estimator.components_, X.shape[1], name=f"{name}.components_"
    )
    return components, X


def _check_images(images, n_samples):
    if images is None:
        return
    if len(images) != n_samples:
        raise ValueError(
            f"images has {len(images)} entries but X has {n_samples} rows; pass one "
            "image per row of X."
        )
    if isinstance(images, np.ndarray) and len(images):
        _check_image_shape(images[0])


def _check_image_shape(image):
    """Return `image` as (height, width) or (height, width, 3 or 4)."""
    image = np.asarray(image)
    if image.ndim == 3 and image.shape[2] not in _CHANNELS and image.shape[0] in _CHANNELS:
        image = np.moveaxis(image, 0, -1)
    if image.ndim not in (2, 3) or (image.ndim == 3 and image.shape[2] not in _CHANNELS):
        raise ValueError(
            "each image must be an array of shape (height, width), (height, width, "
            f"channels) or (channels, height, width) with 1, 3 or 4 channels, got shape "
            f"{image.shape}."
        )
    return image[:, :, 0] if image.ndim == 3 and image.shape[2] == 1 else image


def _check_labels(labels, n_samples):
    if labels is None:
        return None
    labels = [str(label) for label in labels]
    if len(labels) != n_samples:
        raise ValueError(
            f"labels has {len(labels)} entries but X has {n_samples} rows; pass one "
            "label per row of X."
        )
    return labels


class _AtomSummary:
    """Per-atom names, usage, mean activation and concept scores of one encoding."""

    def __init__(self, run, bank):
        self.usage, self.mean_activation = data.atom_statistics(run.by_atom)
        self.alive, self.signs = run.alive, run.signs
        n_atoms = len(run.components)
        self.names = None
        self.faithfulness = np.full(n_atoms, np.nan)
        self.specificity = np.full(n_atoms, np.nan)
        if bank is not None:
            described = Described(run, bank, center=True)
            T = concept_vectors(bank)
            indices, scores = top_concepts(described.atoms, T, min(_N_NAMES, len(bank)))
            self.names = (np.asarray(bank.names, dtype=str)[indices], scores)
            draws = described.draws(None, None, 0)
            self.faithfulness = faithfulness_per_atom(described, draws)[0]
            self.specificity = specificity_per_atom(described, draws)[0]

    def top_names(self, k):
        if self.names is None:
            return []
        names, scores = self.names
        return [[str(name), _number(score)] for name, score in zip(names[k], scores[k])]

    def name(self, k):
        return None if self.names is None else str(self.names[0][k][0])

    def table(self):
        """The atom list as columns; concept names stored once each."""
        n_atoms = len(self.usage)
        names = [self.name(k) for k in range(n_atoms)]
        unique = sorted({name for name in names if name is not None})
        position = {name: i for i, name in enumerate(unique)}
        return {
            "names": unique,
            "name": [position.get(name, -1) for name in names],
            "cos": [
                None if self.names is None else _number(self.names[1][k][0])
                for k in range(n_atoms)
            ],
            "usage": _numbers(self.usage, 6),
            "mean": _numbers(self.mean_activation),
            "faith": _numbers(self.faithfulness),
        }


def _overview(run, atoms, bank, images, labels, projector):
    l0_counts, l0_lo, l0_hi = data.l0_histogram(run.codes)
    recovered, explained = run.reconstruction
    alive = atoms.alive
    return {
        "model": type(run.step).__name__,
        "n_atoms": int(run.codes.shape[1]),
        "n_samples": int(run.n_samples),
        "n_features": int(run.X.shape[1]),
        "n_alive": int(alive.sum()),
        "alive_fraction": _number(alive.mean()),
        "scores": {
            "signal_recovered": _number(recovered),
            "explained_variance": _number(explained),
            "faithfulness": _mean_alive(atoms.faithfulness, alive),
            "specificity": _mean_alive(atoms.specificity, alive),
        },
        "l0": {
            "counts": l0_counts,
            "lo": l0_lo,
            "hi": l0_hi,
            "mean": _number(run.codes.nnz / run.n_samples),
        },
        "n_concepts": None if bank is None else len(bank),
        "has_images": images is not None,
        "has_labels": labels is not None,
        "has_projector": projector is not None,
        "page_size": PAGE_SIZE,
        "thumbs_per_folder": _THUMBS_PER_FOLDER,
        "compare": None,
    }


def _mean_alive(per_atom, alive):
    values = per_atom[alive & np.isfinite(per_atom)]
    return _number(values.mean()) if len(values) else None


def _class_scores(projector, components):
    if projector is None:
        return None
    scores = np.asarray(projector.project_directions(components), dtype=np.float64)
    classes = [str(c) for c in projector.classes_]
    if scores.shape != (len(components), len(classes)):
        raise ValueError(
            f"projector.project_directions returned shape {scores.shape} for "
            f"{len(components)} atoms and {len(classes)} classes; pass the projector "
            "of the model that produced X."
        )
    return scores, classes


def _atom_page(k, atoms, codes, rows, values, labels, neighbors, pushes):
    counts, lo, hi = data.activation_histogram(codes, k)
    near_idx, near_cos = neighbors
    page = {
        "id": k,
        "names": atoms.top_names(k),
        "sign": int(atoms.signs[k]),
        "usage": _number(atoms.usage[k], 6),
        "n_active": int(codes.indptr[k + 1] - codes.indptr[k]),
        "mean": _number(atoms.mean_activation[k]),
        "faith": _number(atoms.faithfulness[k]),
        "spec": _number(atoms.specificity[k]),
        "top": [
            [int(i), _number(v), None if labels is None else labels[i]]
            for i, v in zip(rows, values)
        ],
        "hist": {"counts": counts, "lo": lo, "hi": hi},
        "nearest": [[int(j), _number(c)] for j, c in zip(near_idx[k], near_cos[k])],
    }
    if pushes is not None:
        scores, classes = pushes
        page["push"], page["pull"] = data.top_classes(scores[k], classes, _N_CLASSES)
    return page


def _comparison(components, atoms, top, other_run, other_components, bank, thumbs):
    """Hungarian-matched pairs of atoms of two dictionaries, with names and top samples."""
    other_codes = other_run.by_atom
    other_atoms = _AtomSummary(other_run, bank)
    left, right, cosines = data.match_atoms(components, other_components)
    pairs = []
    for i, j, cos in zip(left, right, cosines):
        left_top = top[i][0][:_N_COMPARE_SAMPLES]
        right_top = data.top_samples(other_codes, j, _N_COMPARE_SAMPLES)[0]
        thumbs.add(right_top)
        pairs.append(
            [
                int(i),
                int(j),
                _number(cos),
                atoms.name(i),
                other_atoms.name(j),
                _number(atoms.usage[i], 6),
                _number(other_atoms.usage[j], 6),
                [int(s) for s in left_top],
                [int(s) for s in right_top],
            ]
        )
    abs_cos = np.abs(cosines)
    return {
        "model": type(other_run.step).__name__,
        "n_atoms": int(len(other_components)),
        "n_alive": int(other_atoms.alive.sum()),
        "mean_abs_cos": _number(abs_cos.mean()),
        "share_above_0_9": _number(np.mean(abs_cos > 0.9)),
        "pairs": pairs,
    }


class _Thumbnails:
    """PNG thumbnails of the samples some page shows, written once each."""

    def __init__(self, out, images):
        self.out = out
        self.images = images
        self.samples = set()
        if images is not None:
            self.Image = import_optional("PIL.Image", "vision", "build_site(images=...)")

    def add(self, rows):
        if self.images is not None:
            self.samples.update(int(i) for i in rows)

    def write(self):
        for i in sorted(self.samples):
            path = self.out / "thumbs" / str(i // _THUMBS_PER_FOLDER) / f"{i}.png"
            path.parent.mkdir(parents=True, exist_ok=True)
            _to_pil(self.images[i], self.Image).save(path)


def _to_pil(image, Image):
    if isinstance(image, (str, Path)):
        with Image.open(image) as opened:
            thumb = opened.convert("RGB")
    elif isinstance(image, Image.Image):
        thumb = image.convert("RGB")
    else:
        thumb = Image.fromarray(_to_uint8(image))
    thumb.thumbnail((_THUMB_SIZE, _THUMB_SIZE))
    return thumb


def _to_uint8(image):
    image = _check_image_shape(image)
    if image.dtype == np.uint8:
        return image
    image = image.astype(np.float64)
    lo, hi = np.nanmin(image), np.nanmax(image)
    scaled = (image - lo) / (hi - lo) if hi > lo else np.zeros_like(image)
    return np.round(np.nan_to_num(scaled) * 255).astype(np.uint8)


def _number(value, digits=4):
    """A JSON-safe float: rounded to `digits` significant digits, None if not finite."""
    value = float(value)
    if not math.isfinite(value):
        return None
    return float(f"{value:.{digits}g}")


def _numbers(values, digits=4):
    return [_number(v, digits) for v in values]


def _write_data(path, key, obj):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_data_script(key, obj), encoding="utf-8")


def _data_script(key, obj):
    """JavaScript that stores `obj` under `key` in ``window.SKDICT_DATA``.

    ``<``, ``>`` and ``&`` become ``\\u`` escapes, so that no string can close a
    script element or open a comment even if the text is ever inlined in HTML;
    ``ensure_ascii`` escapes U+2028/U+2029, which old JavaScript engines reject
    in string literals.
    """
    text = json.dumps(obj, ensure_ascii=True, allow_nan=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escape)
    return f"(window.SKDICT_DATA = window.SKDICT_DATA || {{}})[{json.dumps(key)}] = {text};\n"


def _copy_static(out):
    static = resources.files("skdict") / "_app" / "explore_static"
    (out / "assets").mkdir(parents=True, exist_ok=True)
    for name in ("explore.js", "explore.css"):
        with resources.as_file(static / name) as source:
            shutil.copyfile(source, out / "assets" / name)
    with resources.as_file(static / "index.html") as source:
        shutil.copyfile(source, out / "index.html")
