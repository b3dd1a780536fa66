"""skdict: sparse dictionaries for taking vision transformers apart."""

from .ksvd import DoubleBatchKSVD
from .pursuit import sparse_encode
from .sae import SparseAutoencoder

__version__ = "0.1.0.dev0"

__all__ = ["DoubleBatchKSVD", "SparseAutoencoder", "sparse_encode", "__version__"]
