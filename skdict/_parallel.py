"""Thread control: one `n_jobs` drives numba's, BLAS's and torch's threads.

GEMMs, numba kernels and torch kernels run one after the other, never at the
same time, so the three pools are sized once per fit or transform, to the same
count, and only one of them works at a time. Two things keep the idle pools
from competing with the working one:

* OpenMP threads (numba's ``omp`` threading layer, torch's ATen) spin for a
  while after each parallel region by default. Between two regions of another
  pool, or when another process wants the cores, that spinning takes the cores
  the work needs: on a 2-core machine with other processes running, a
  DoubleBatchKSVD fit of 1500 x 20 signals took 10.5 s with spinning threads and
  1.0 s with sleeping ones. So skdict asks for ``OMP_WAIT_POLICY=PASSIVE``
  unless the user set the variable. OpenMP runtimes read it once, when they are
  loaded, so it applies to the runtimes loaded after skdict is imported
  (numba's is loaded at its first parallel kernel; torch's when torch is
  imported).
* A parallel region costs a wake-up of every thread; on small problems that
  costs more than it saves, so work below `_WORK_PER_THREAD` multiply-adds per
  thread runs on fewer threads (see :func:`effective_n_threads`).
"""

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import sys  # noqa: E402
from contextlib import contextmanager  # noqa: E402
from numbers import Integral  # noqa: E402

import numba  # noqa: E402
from sklearn.utils._param_validation import Interval  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

# The values n_jobs may take, for the estimators' _parameter_constraints: joblib's
# convention, in which 0 has no meaning (scikit-learn refuses it too).
N_JOBS_CONSTRAINT = [Interval(Integral, None, -1, closed="right"),
                     Interval(Integral, 1, None, closed="left"), None]

# Multiply-adds per iteration (rows x atoms x features) that one more thread
# needs before it pays: about a millisecond of work, spread over the dozens of
# parallel regions an iteration runs, each waking every thread.
_WORK_PER_THREAD = 2**22


def effective_n_threads(n_jobs, work=None):
    """Number of threads for `n_jobs`, following joblib's conventions.

    ``None`` and ``-1`` mean every thread numba may use (``NUMBA_NUM_THREADS``,
    which joblib's workers lower to avoid oversubscription); ``-2`` all but one.
    `work`, the multiply-adds of one step (e.g. rows x atoms x features), caps
    the count at one thread per `_WORK_PER_THREAD` of them.
    """
    max_threads = numba.config.NUMBA_NUM_THREADS
    if n_jobs is None:
        n_threads = max_threads
    elif n_jobs < 0:
        n_threads = max(1, max_threads + 1 + n_jobs)
    else:
        n_threads = max(1, min(int(n_jobs), max_threads))
    if work is not None:
        n_threads = max(1, min(n_threads, int(work) // _WORK_PER_THREAD))
    return n_threads


@contextmanager
def thread_limits(n_jobs, work=None):
    """Limit numba, BLAS and torch to ``effective_n_threads(n_jobs, work)`` threads.

    torch is limited only when something has imported it already: the block
    must not import it, and code that runs torch inside the block imports it
    before entering.
    """
    n_threads = effective_n_threads(n_jobs, work)
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
