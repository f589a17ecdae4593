"""Near-duplicate photos: ``simsearch duplicates`` (issue 13).

``grouping`` is the pure core: candidate pairs in, groups without chaining out, and the copy to
keep in each; ``phash`` is the perceptual hash that checks candidate pairs. Neither does SQL or
file I/O; the database layer finds the candidate pairs and opens the files.
"""

from .grouping import (
    LEVELS,
    Group,
    Level,
    Photo,
    choose_keeper,
    group_pairs,
)
from .phash import hash_distance, perceptual_hash

__all__ = [
    "LEVELS",
    "Group",
    "Level",
    "Photo",
    "choose_keeper",
    "group_pairs",
    "hash_distance",
    "perceptual_hash",
]
