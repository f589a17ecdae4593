"""Near-duplicate photos: ``simsearch duplicates`` (issue 13).

``grouping`` is the pure core: candidate pairs in, groups without chaining out, and the copy to
keep in each; ``phash`` is the perceptual hash that checks candidate pairs. Neither does SQL or
file I/O. Around them: ``filefacts`` reads an image file once, ``finder`` runs the command
(files, the batched candidate search through ``db.duplicates`` and ``db.knn``, grouping), and
``moving`` moves copies away and back. Only the pure core is imported here.
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
