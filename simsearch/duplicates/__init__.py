"""Near-duplicate photos: ``simsearch duplicates`` (issue 13).

``grouping`` is the pure core: candidate pairs in, groups without chaining out, and the copy to
keep in each. It does no SQL and no I/O; the database layer finds the candidate pairs.
"""

from .grouping import (
    LEVELS,
    Group,
    Level,
    Photo,
    choose_keeper,
    group_pairs,
)

__all__ = ["LEVELS", "Group", "Level", "Photo", "choose_keeper", "group_pairs"]
