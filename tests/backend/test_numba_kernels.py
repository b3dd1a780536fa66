"""The numba kernels' machinery: OMP's predicted blocks of steps, correlation tiles."""

import numpy as np
import pytest
from sklearn.linear_model import orthogonal_mp_gram

from skdict._backend.numba.pursuit import NumbaCoder
from skdict._backend.numba.tiles import TILE
from skdict._sparse import support_to_dense
from skdict.pursuit import sparse_encode
from _checks import BACKENDS

_DEP_TOL = 100 * np.finfo(np.float64).eps


def _unit_dictionary(rng, n_atoms, n_features):
    D = rng.standard_normal((n_atoms, n_features))
    return D / np.linalg.norm(D, axis=1, keepdims=True)


def _omp(coder, X, k):
    indices, values, counts = coder.support(X, "omp", k, -np.inf, _DEP_TOL)
    return support_to_dense(indices, values, counts, coder.gram.shape[0])


@pytest.mark.parametrize("n_candidates", [1, 3, 16])
def test_wrong_predictions_leave_omp_exact(rng, n_candidates):
    # So few candidates that most rows' predicted steps are wrong somewhere: the
    # codes must still be scikit-learn's, since every step is checked against
    # all atoms and a wrong one is redone.
    D = _unit_dictionary(rng, 300, 40)
    X = rng.standard_normal((120, 40))
    coder = NumbaCoder(D, None, n_candidates=n_candidates, blocks=True)
    ours = _omp(coder, X, 20)
    assert np.mean(coder.mispredictions > 0) > 0.5
    theirs = orthogonal_mp_gram(D @ D.T, D @ X.T, n_nonzero_coefs=20).T
    np.testing.assert_array_equal(ours != 0, theirs != 0)
    # float64, the same support, two least-squares solves: cond(G_S) * eps64
    # (cond < 1e4 for 20 of 300 random atoms in 40-D) stays far below 1e-8.
    np.testing.assert_allclose(ours, theirs, atol=1e-8)


def test_blocks_and_candidates_do_not_change_the_codes(rng):
    D = _unit_dictionary(rng, 2 * TILE + 37, 48)
    X = rng.standard_normal((60, 48))
    steps = NumbaCoder(D, None, blocks=False)
    few = NumbaCoder(D, None, n_candidates=4, blocks=True)
    many = NumbaCoder(D, None, n_candidates=512, blocks=True)
    codes = _omp(steps, X, 16)
    for coder in (few, many):
        ours = _omp(coder, X, 16)
        np.testing.assert_array_equal(ours != 0, codes != 0)
        # the same support reached with other rounding of U: cond(G_S) * eps64
        np.testing.assert_allclose(ours, codes, atol=1e-10)
    assert few.mispredictions.sum() > many.mispredictions.sum()


def test_dependent_atoms_with_wrong_predictions(rng, recwarn):
    D = _unit_dictionary(rng, 40, 12)
    D = np.vstack([D, D[:20], -D[20:25]])  # duplicates are linearly dependent
    X = rng.standard_normal((50, 12))
    coder = NumbaCoder(D, None, n_candidates=2, blocks=True)
    codes = _omp(coder, X, 12)
    assert coder.mispredictions.sum() > 0
    assert np.isfinite(codes).all()
    assert len(recwarn) == 0
    # a duplicate ties with its original up to round-off, so either may be
    # picked; the reconstructions must be OMP's
    theirs = orthogonal_mp_gram(D @ D.T, D @ X.T, n_nonzero_coefs=12).T
    np.testing.assert_allclose(codes @ D, theirs @ D, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("algorithm", ["omp", "mp"])
def test_ties_across_tiles_go_to_the_first_atom(rng, backend, algorithm):
    # Two copies of x's direction, in the second and third tile, and random
    # atoms elsewhere that correlate less with it: both pursuits pick the first.
    D = _unit_dictionary(rng, 2 * TILE + 8, 64)
    x = np.zeros(64)
    x[0] = 1.0
    D[TILE + 5] = D[2 * TILE + 1] = x
    codes = sparse_encode(x[None], D, n_nonzero_coefs=1, algorithm=algorithm, backend=backend)
    assert np.flatnonzero(codes[0]).tolist() == [TILE + 5]


@pytest.mark.parametrize("blocks", [True, False])
def test_supports_shorter_than_a_block(rng, blocks):
    # k = 1 and k = 2 end inside the first predicted block
    D = _unit_dictionary(rng, TILE + 100, 30)
    X = rng.standard_normal((30, 30))
    for k in (1, 2):
        ours = _omp(NumbaCoder(D, None, n_candidates=8, blocks=blocks), X, k)
        theirs = orthogonal_mp_gram(D @ D.T, D @ X.T, n_nonzero_coefs=k).T
        np.testing.assert_allclose(ours, theirs, atol=1e-10)


def test_omp_computes_blocks_where_its_rows_outgrow_the_cache():
    # U holds k x n_atoms floats per row: 16 x 4096 float32 (256 KiB) stays in
    # cache and OMP runs step by step, 32 x 16384 (2 MiB) in predicted blocks
    def coder(n_atoms, **kwargs):
        gram = np.broadcast_to(np.float32(0), (n_atoms, n_atoms))  # only its shape is read
        return NumbaCoder(np.zeros((n_atoms, 2), np.float32), gram, **kwargs)

    assert not coder(4096).uses_blocks(16, np.dtype(np.float32))
    assert coder(16384).uses_blocks(32, np.dtype(np.float32))
    assert coder(4096, blocks=True).uses_blocks(16, np.dtype(np.float32))
    assert not coder(16384, blocks=False).uses_blocks(32, np.dtype(np.float32))
