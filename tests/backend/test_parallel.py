import os
import subprocess
import sys

import numba
import pytest

from skdict import DoubleBatchKSVD
from skdict._parallel import _WORK_PER_THREAD, effective_n_threads
from skdict.datasets import make_sparse_signals


def test_small_work_runs_on_fewer_threads():
    max_threads = numba.config.NUMBA_NUM_THREADS
    assert effective_n_threads(None) == max_threads
    assert effective_n_threads(-1, work=10) == 1
    assert effective_n_threads(2, work=2 * _WORK_PER_THREAD) == min(2, max_threads)
    assert effective_n_threads(None, work=10**12) == max_threads


@pytest.mark.parametrize("n_samples, expected", [(300, 1), (9000, 2)])
def test_fit_sizes_the_thread_pool_to_the_work(n_samples, expected):
    X, _, _ = make_sparse_signals(n_samples=n_samples, random_state=0)
    seen = []
    DoubleBatchKSVD(
        50, n_nonzero_coefs=3, max_iter=1, n_jobs=2, random_state=0,
        callback=lambda local: seen.append(numba.get_num_threads()),
    ).fit(X)
    assert seen == [min(expected, numba.config.NUMBA_NUM_THREADS)]


def test_openmp_threads_sleep_unless_the_user_says_otherwise():
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    code = (
        "import importlib, os, skdict._parallel as p; print(os.environ['OMP_WAIT_POLICY']); "
        "os.environ['OMP_WAIT_POLICY'] = 'ACTIVE'; importlib.reload(p); "
        "print(os.environ['OMP_WAIT_POLICY'])"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert out.split() == ["PASSIVE", "ACTIVE"]
