"""
Out-of-core fitting from a memory map
=====================================

Embeddings of millions of images do not fit in memory. Saved as a ``.npy``
file and opened with ``np.load(path, mmap_mode="r")``, they stay on disk:
with ``batch_size`` set, :class:`~skdict.DoubleBatchKSVD` reads one minibatch
of rows per iteration, and ``transform`` encodes the file chunk by chunk into
sparse CSR codes. The command line does the same:
``skdict fit embeddings.npy --batch-size 10000 ...``.
"""

import os
import tempfile

import matplotlib.pyplot as plt
import numpy as np

from skdict import DoubleBatchKSVD
from skdict.datasets import make_sparse_signals
from skdict.metrics import signal_recovered

# %%
# Write the data to disk chunk by chunk
# -------------------------------------
# Each chunk is drawn from the same dictionary, so the file never has to be in
# memory as a whole.
folder = tempfile.mkdtemp()
path = os.path.join(folder, "embeddings.npy")
n_chunks, chunk = 5, 4000
_, atoms, _ = make_sparse_signals(1, n_features=48, n_components=96, n_nonzero_coefs=5,
                                  dtype=np.float32, random_state=0)
X_disk = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32,
                                   shape=(n_chunks * chunk, 48))
for i in range(n_chunks):
    X_disk[i * chunk:(i + 1) * chunk], _, _ = make_sparse_signals(
        chunk, n_features=48, n_components=96, n_nonzero_coefs=5, dictionary=atoms,
        dtype=np.float32, random_state=i + 1)
X_disk.flush()
del X_disk
print(f"{os.path.getsize(path) / 1e6:.1f} MB on disk")

# %%
# Fit on minibatches read from the memory map
# -------------------------------------------
X = np.load(path, mmap_mode="r")
ksvd = DoubleBatchKSVD(96, n_nonzero_coefs=5, batch_size=2000, max_iter=30,
                       sparse_output=True, random_state=0).fit(X)

fig, ax = plt.subplots(figsize=(5, 3))
ax.plot(np.arange(1, ksvd.n_iter_ + 1), ksvd.error_)
ax.set_xlabel("iteration (one minibatch of 2000 rows each)")
ax.set_ylabel("signal recovered on the minibatch")
fig.tight_layout()

# %%
# Encode the file into sparse codes
# ---------------------------------
codes = ksvd.transform(X)
print(type(codes).__name__, codes.shape, f"{codes.nnz / codes.shape[0]:.1f} non-zeros per row")
head = np.asarray(X[:2000])
print(f"signal recovered: {signal_recovered(head, ksvd.inverse_transform(codes[:2000])):.3f}")
