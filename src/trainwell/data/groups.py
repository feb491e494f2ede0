"""Connected components over index pairs: the one grouping routine for near-duplicates and split units."""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components


def groups_from_pairs(count: int, pairs: np.ndarray) -> list[list[int]]:
    """Connected components of 2+ members among `count` nodes linked by `pairs` (shape (n, 2)).

    Each group is sorted and the groups are ordered by their first member, so the result does not
    depend on the order of the pairs.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if count == 0 or len(pairs) == 0:
        return []
    graph = coo_matrix((np.ones(len(pairs), dtype=np.int8), (pairs[:, 0], pairs[:, 1])), shape=(count, count))
    _, component = connected_components(graph, directed=False)
    linked = np.unique(pairs)  # only linked nodes can sit in a group of 2+
    order = np.lexsort((linked, component[linked]))
    members, starts = linked[order], np.flatnonzero(np.diff(component[linked][order], prepend=-1))
    groups = [chunk.tolist() for chunk in np.split(members, starts[1:])]
    return sorted((group for group in groups if len(group) > 1), key=lambda group: group[0])
