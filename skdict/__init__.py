"""skdict: sparse dictionaries for taking vision transformers apart."""

from .embeddings import CLIPEmbedder, TimmEmbedder
from .ksvd import DoubleBatchKSVD
from .projection import ClassEmbeddingProjector
from .pursuit import sparse_encode

__version__ = "0.1.0.dev0"

__all__ = [
    "CLIPEmbedder",
    "ClassEmbeddingProjector",
    "DoubleBatchKSVD",
    "TimmEmbedder",
    "sparse_encode",
    "__version__",
]
