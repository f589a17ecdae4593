"""The one error hierarchy that the CLI turns into a one-line message and a non-zero exit."""


class SimsearchError(Exception):
    """Anything the user can fix: bad input, a missing file, an unreachable database."""


class InputError(SimsearchError):
    """A file or argument is not what simsearch expects."""


class ShardError(InputError):
    """A feature shard is missing, malformed or inconsistent."""


class ImageError(InputError):
    """A query or gallery image cannot be read."""


class ModelError(InputError):
    """An ONNX model is missing, unreadable or has no usable image input."""


class DatabaseError(SimsearchError):
    """The database is unreachable, misconfigured or holds something unexpected."""


class FeatureSetError(SimsearchError):
    """A feature set is unknown, empty or ambiguous."""
