"""Thread control: one `n_jobs` drives numba's, BLAS's and torch's threads.

GEMMs, numba kernels and torch kernels run one after the other, never at the
same time, so all may use `n_jobs` threads without oversubscribing the machine.
"""

import sys
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
    """Limit numba, BLAS and torch to `effective_n_threads(n_jobs)` threads inside the block.

    torch is limited only when something has imported it already: the block
    must not import it, and code that runs torch inside the block imports it
    before entering.
    """
    n_threads = effective_n_threads(n_jobs)
    previous = numba.get_num_threads()
    torch = sys.modules.get("torch")
    previous_torch = torch.get_num_threads() if torch is not None else None
    numba.set_num_threads(n_threads)
    if torch is not None:
        torch.set_num_threads(n_threads)
    try:
        with threadpool_limits(limits=n_threads, user_api="blas"):
            yield n_threads
    finally:
        numba.set_num_threads(previous)
        if torch is not None:
            torch.set_num_threads(previous_torch)
