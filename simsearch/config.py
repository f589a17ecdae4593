"""Settings read from the environment, and the defaults every entry point shares.

Standard library only: the thin ``simsearch query`` client imports this module.
"""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_URL_ENV = "SIMSEARCH_DATABASE_URL"
REPLICA_URLS_ENV = "SIMSEARCH_REPLICA_URLS"
HOME_ENV = "SIMSEARCH_HOME"
MODEL_ENV = "SIMSEARCH_MODEL"
NO_DAEMON_ENV = "SIMSEARCH_NO_DAEMON"

# --- searching ------------------------------------------------------------------------------
RESULTS = 10  # -n
# On 100,000 x 1280 clustered vectors with held-out queries, ef_search 100 gave recall@10 0.977
# and 200 gave 0.992 (docs/benchmarks.md): 200 is the smallest setting measured at >= 0.99.
EF_SEARCH = 200
# The best CANDIDATES of the ef_search rows the index yields are re-ranked by exact distance.
CANDIDATES = 100
# pgvector's hnsw.ef_search accepts 1..1000; larger requests are clamped to it.
EF_SEARCH_MAX = 1000

# --- the HNSW index -------------------------------------------------------------------------
HNSW_M = 16
HNSW_EF_CONSTRUCTION = 64
# Feature sets of more dimensions are indexed on a PCA copy of this many (simsearch/projection.py)
REDUCED_DIMENSION = 256
PROJECTION_SAMPLE = 10_000  # rows the PCA is fitted on
# The reduced index is used only where a held-out check on the sample keeps this recall@10
# (projection.check); otherwise the full vectors are indexed.
PROJECTION_MIN_RECALL = 0.99

# --- embedding and loading ------------------------------------------------------------------
BATCH = 32  # images per inference batch: bounds memory, keeps the model busy
SHARD_SIZE = 10_000  # images per shard written by `simsearch embed` (the origin's)

# --- the search server ----------------------------------------------------------------------
HOST = "127.0.0.1"
PORT = 8000
MAX_UPLOAD_MB = 20  # a camera JPEG is 3-12 MB
MAX_PIXELS = 50_000_000  # a 50-megapixel photo; larger uploads are refused (422)


def database_url() -> str | None:
    """The external server's URL, or None for the embedded server."""
    return os.environ.get(DATABASE_URL_ENV) or None


def replica_urls() -> list[str]:
    """Read replicas searches go to, in order of preference (SIMSEARCH_REPLICA_URLS,
    comma-separated); empty when none are configured."""
    text = os.environ.get(REPLICA_URLS_ENV, "")
    return [url.strip() for url in text.split(",") if url.strip()]


def home() -> Path:
    """Where the embedded server and other state live."""
    configured = os.environ.get(HOME_ENV)
    if configured:
        return Path(configured).expanduser().resolve()
    # platformdirs costs an import; only pay it when the user set nothing.
    import platformdirs

    return platformdirs.user_data_path("simsearch")


def model_path() -> str | None:
    """The model named in the environment, used when a command names none."""
    return os.environ.get(MODEL_ENV) or None


def no_daemon() -> bool:
    """SIMSEARCH_NO_DAEMON=1: `query` always works in-process."""
    return os.environ.get(NO_DAEMON_ENV, "").strip().lower() not in ("", "0", "false", "no")
