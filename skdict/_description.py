"""Machinery of the description scores: code the data once, name the atoms,
score each alive atom, and average over draws of a null for the chance level."""

import numpy as np
import scipy.sparse as sp
from sklearn.utils import check_random_state

from ._auroc import row_auroc
from ._dictionary import components_from, encode
from ._rows import _centred_unit_rows, _unit_rows
from .concepts import (
    atom_usage,
    check_bank,
    check_same_space,
    concept_vectors,
    random_bank,
    top_concepts,
)

# Draws of the null averaged for the chance level (``baseline``).
_N_BASELINE_DRAWS = 5
# The null of ``baseline=True``: see check_baseline.
_DEFAULT_NULL = "gaussian"
_NULLS = ("gaussian", "shuffled", "sphere")
# Atoms scored per block: bounds the (atoms x n_samples) score matrix.
_ATOM_CHUNK = 256


def code(estimator, X, bank, center):
    """Code X and collect what description scores need."""
    D = components_from(estimator)
    check_same_space(D, check_bank(bank))
    _, X_dict, codes = encode(estimator, X)
    alive, signs = atom_usage(codes)
    codes = sp.csc_matrix(codes) @ sp.diags(signs.astype(np.float64))
    atoms = _unit_rows(D.astype(np.float64) * signs[:, None])
    X_unit = _centred_unit_rows(X_dict, center)
    return _Coded(X_unit, atoms, (codes > 0).tocsc(), alive)


class _Coded:
    """Unit (centred) rows of X in the dictionary's space, signed unit atoms,
    where each atom fires in its named direction, and which atoms are alive."""

    def __init__(self, X_unit, atoms, fires, alive):
        self.X_unit, self.atoms, self.fires, self.alive = X_unit, atoms, fires, alive


def assign(coded, T, names):
    """Concept index of each atom: the given `names`, or each atom's closest concept."""
    n_atoms = coded.atoms.shape[0]
    if names is None:
        return top_concepts(coded.atoms, T, 1)[0][:, 0]
    names = np.asarray(names)
    if names.shape != (n_atoms,) or not np.issubdtype(names.dtype, np.integer):
        raise ValueError(
            f"names must be an int array of shape ({n_atoms},), one concept index "
            f"per atom; got shape {names.shape} and dtype {names.dtype}."
        )
    if names.min() < 0 or names.max() >= T.shape[0]:
        raise ValueError(
            f"names holds concept indices outside [0, {T.shape[0] - 1}]; each entry "
            "must index the bank."
        )
    return names


def faithfulness_per_atom(coded, T, concepts):
    out = np.full(coded.atoms.shape[0], np.nan)
    alive = np.flatnonzero(coded.alive)
    for start in range(0, alive.size, _ATOM_CHUNK):
        atoms = alive[start:start + _ATOM_CHUNK]
        out[atoms] = row_auroc(T[concepts[atoms]] @ coded.X_unit.T, coded.fires[:, atoms].T)
    return out


def specificity_per_atom(coded, T, concepts):
    out = np.full(coded.atoms.shape[0], np.nan)
    alive = np.flatnonzero(coded.alive)
    for start in range(0, alive.size, _ATOM_CHUNK):
        atoms = alive[start:start + _ATOM_CHUNK]
        retrieved = np.argmax(T[concepts[atoms]] @ coded.atoms.T, axis=1)
        out[atoms] = retrieved == atoms
    return out


def check_baseline(baseline):
    """The null a `baseline` value asks for: None (the score itself) or a name in ``_NULLS``.

    True means the Gaussian null: random banks with the bank's own mean and
    covariance keep the geometry of the concepts (the anisotropy of real
    embeddings) and go through the same naming, so they measure what geometry
    alone scores; see the "Metrics" page of the documentation.
    """
    if baseline is False or baseline is None:
        return None
    if baseline is True:
        return _DEFAULT_NULL
    if isinstance(baseline, str) and baseline in _NULLS:
        return baseline
    raise ValueError(
        f"baseline must be False, True or one of {list(_NULLS)}, got {baseline!r}."
    )


def _null_assignments(coded, bank, center, names, null, rng):
    """Yield ``(T, concepts)`` for each draw of `null` (or once for the real bank)."""
    if null in (None, "shuffled"):
        T = concept_vectors(bank, center)
        concepts = assign(coded, T, names)
        if null is None:
            yield T, concepts
            return
        alive = np.flatnonzero(coded.alive)
        for _ in range(_N_BASELINE_DRAWS):
            shuffled = concepts.copy()
            shuffled[alive] = concepts[alive][rng.permutation(alive.size)]
            yield T, shuffled
        return
    for _ in range(_N_BASELINE_DRAWS):
        T = concept_vectors(random_bank(bank, rng, null), center)
        yield T, assign(coded, T, names)


def description_score(
    per_atom_score, estimator, X, bank, *, names, center, baseline, per_atom, random_state,
    count_dead=False,
):
    """Score a description with `per_atom_score`, or its chance level under a null.

    `count_dead` scores dead atoms 0 instead of skipping them.
    """
    null = check_baseline(baseline)
    coded = code(estimator, X, bank, center)
    rng = check_random_state(random_state)
    scores = np.mean(
        [per_atom_score(coded, T, concepts)
         for T, concepts in _null_assignments(coded, bank, center, names, null, rng)],
        axis=0,
    )
    if count_dead:
        scores[~coded.alive] = 0.0
    if per_atom:
        return scores
    finite = scores[np.isfinite(scores)]
    return float(finite.mean()) if finite.size else float("nan")
