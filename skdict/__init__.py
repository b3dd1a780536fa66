"""skdict: sparse dictionaries for taking vision transformers apart."""

from .concepts import ConceptBank, describe_atoms
from .ksvd import DoubleBatchKSVD
from .pursuit import sparse_encode

__version__ = "0.1.0.dev0"

__all__ = [
    "ConceptBank",
    "DoubleBatchKSVD",
    "__version__",
    "describe_atoms",
    "sparse_encode",
]
