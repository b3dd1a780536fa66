"""skdict: sparse dictionaries for taking vision transformers apart."""

from .concepts import ConceptBank, describe_atoms
from .embeddings import CLIPEmbedder, TimmEmbedder
from ._persistence import load, save
from .ksvd import DoubleBatchKSVD
from .projection import ClassEmbeddingProjector
from .pursuit import sparse_encode
from .sae import SparseAutoencoder

__version__ = "0.1.0.dev0"

__all__ = [
    "CLIPEmbedder",
    "ClassEmbeddingProjector",
    "ConceptBank",
    "DoubleBatchKSVD",
    "SparseAutoencoder",
    "TimmEmbedder",
    "__version__",
    "describe_atoms",
    "load",
    "save",
    "sparse_encode",
]
