"""Thread control: one `n_jobs` drives numba's threads and the BLAS threads.

GEMMs and numba kernels run one after the other, never at the same time, so both
may use all `n_jobs` threads without oversubscribing the machine.
"""

from contextlib import contextmanager

import numba
from threadpoolctl import threadpool_limits


def effective_n_threads(n_jobs):
    """Number of threads for `n_jobs`, following joblib's conventions.

    ``None`` and ``-1`` mean every thread numba may use (``NUMBA_NUM_THREADS``,
    which joblib's workers lower to avoid oversubscription); ``-2`` all but one.
    """
    max_threads = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        return max_threads
    if n_jobs < 0:
        return max(1, max_threads + 1 + n_jobs)
    return max(1, min(int(n_jobs), max_threads))


@contextmanager
def thread_limits(n_jobs):
    """Limit numba and BLAS to `effective_n_threads(n_jobs)` threads inside the block."""
    n_threads = effective_n_threads(n_jobs)
    previous = numba.get_num_threads()
    numba.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads, user_api="blas"):
            yield n_threads
    finally:
        numba.set_num_threads(previous)
