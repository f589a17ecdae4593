"""simsearch: similar-image search on PostgreSQL + pgvector.

The public API is what the CLI calls::

    import simsearch
    from simsearch.ingest import ingest
    from simsearch.reference import scan

    ingest(Path("features"), feature_set="photos", model="model.onnx")
    [matches] = simsearch.query([Path("photo.jpg")], n=10)
    reference = scan(Path("features"), Path("photo.jpg"), n=10, model="model.onnx")

(``ingest`` is also a module name, so it is not re-exported here.)

Functions are imported on first use: NumPy, psycopg and onnxruntime cost more to import than
a search takes, and a thin client must not pay for them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from .errors import (
    DatabaseError,
    FeatureSetError,
    ImageError,
    InputError,
    ModelError,
    ShardError,
    SimsearchError,
)

__version__ = "0.1.0"

_LAZY = {
    "IngestReport": "simsearch.ingest",
    "query": "simsearch.search",
    "query_vector": "simsearch.search",
    "Match": "simsearch.results",
    "QueryOptions": "simsearch.options",
    "load_model": "simsearch.model",
    "Model": "simsearch.model",
    "Overrides": "simsearch.model",
    "Preprocess": "simsearch.preprocess",
}

if TYPE_CHECKING:
    from .ingest import IngestReport
    from .model import Model, Overrides, load_model
    from .options import QueryOptions
    from .preprocess import Preprocess
    from .results import Match
    from .search import query, query_vector


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'simsearch' has no attribute {name!r}")


__all__ = [
    "DatabaseError",
    "FeatureSetError",
    "ImageError",
    "IngestReport",
    "InputError",
    "Match",
    "Model",
    "ModelError",
    "Overrides",
    "Preprocess",
    "QueryOptions",
    "ShardError",
    "SimsearchError",
    "__version__",
    "load_model",
    "query",
    "query_vector",
]
