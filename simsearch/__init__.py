"""simsearch: similar-image search on PostgreSQL + pgvector.

The library API is what the CLI calls; heavy modules are imported on first use so that the
command starts fast.
"""

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

__all__ = [
    "DatabaseError",
    "FeatureSetError",
    "ImageError",
    "InputError",
    "ModelError",
    "ShardError",
    "SimsearchError",
    "__version__",
]
