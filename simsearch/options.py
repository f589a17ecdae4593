"""One search's options, as the CLI, the thin client, the server and the library all take them.

Standard library only, and no dataclasses (whose import pulls in ``inspect``): the thin
``simsearch query`` client builds these and sends them as JSON.
"""

from __future__ import annotations

from . import config
from .errors import InputError

TYPE_CHECKING = False  # typing costs an import that the thin client does not need
if TYPE_CHECKING:
    from typing import Any

_FIELDS = ("n", "feature_set", "exact", "ef_search", "candidates", "where", "model", "overrides")


class QueryOptions:
    """How to search: how many results, where, how surely, with which model.

    - ``n``: results wanted, nearest first.
    - ``feature_set``: the feature set's name; None when the database holds one.
    - ``exact``: scan every row instead of walking the HNSW index.
    - ``ef_search``: the recall knob (pgvector's hnsw.ef_search): higher is slower and surer.
    - ``candidates``: how many of the index's rows are re-ranked by exact distance.
    - ``where``: ``--where`` conditions such as ``width>=1024`` (all must hold).
    - ``model``, ``overrides``: embed query photos with another model or preprocessing than the
      feature set records (``overrides`` as ``model.Overrides`` fields).
    """

    __slots__ = _FIELDS

    def __init__(
        self,
        n: int = config.RESULTS,
        feature_set: str | None = None,
        exact: bool = False,
        ef_search: int = config.EF_SEARCH,
        candidates: int = config.CANDIDATES,
        where: tuple[str, ...] = (),
        model: str | None = None,
        overrides: dict[str, Any] | None = None,
    ) -> None:
        self.n = n
        self.feature_set = feature_set
        self.exact = exact
        self.ef_search = ef_search
        self.candidates = candidates
        self.where = tuple(where)
        self.model = model
        self.overrides = overrides

    def replace(self, **changes: Any) -> QueryOptions:
        return QueryOptions(**{**self.to_json(), **changes})

    def to_json(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FIELDS}

    @classmethod
    def from_json(cls, data: Any) -> QueryOptions:
        """Options sent as JSON (by the thin client): checked, so a bad request is a plain error."""
        if not isinstance(data, dict):
            raise InputError("expected the query options as a JSON object")
        unknown = sorted(set(data) - set(_FIELDS))
        if unknown:
            raise InputError(f"unknown query options {', '.join(unknown)}")
        given = dict(data)
        for name in ("n", "ef_search", "candidates"):
            value = given.get(name)
            if value is not None and (not isinstance(value, int) or value < 1):
                raise InputError(f"expected {name} to be a positive whole number, found {value!r}")
        if "where" in given:
            where = given["where"] or []
            if not isinstance(where, list) or not all(isinstance(w, str) for w in where):
                raise InputError("expected where to be a list of conditions such as 'width>=1024'")
            given["where"] = tuple(where)
        return cls(**{k: v for k, v in given.items() if v is not None or k in _OPTIONAL})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, QueryOptions) and self.to_json() == other.to_json()

    def __repr__(self) -> str:
        fields = ", ".join(f"{name}={getattr(self, name)!r}" for name in _FIELDS)
        return f"QueryOptions({fields})"


_OPTIONAL = ("feature_set", "model", "overrides")
