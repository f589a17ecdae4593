"""Settings read from the environment, in one place."""

from __future__ import annotations

import os
from pathlib import Path

DATABASE_URL_ENV = "SIMSEARCH_DATABASE_URL"
HOME_ENV = "SIMSEARCH_HOME"
MODEL_ENV = "SIMSEARCH_MODEL"


def database_url() -> str | None:
    """The external server's URL, or None for the embedded server."""
    return os.environ.get(DATABASE_URL_ENV) or None


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
