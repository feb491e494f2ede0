"""Grouping index pairs: connected components (split units) and star groups that never chain (near-duplicates)."""

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


def star_groups(count: int, pairs: np.ndarray) -> list[tuple[int, list[int]]]:
    """Groups in which every member is paired with the group's representative: (representative, sorted members).

    Greedy, and the same for the same pairs in any order: nodes are taken by falling number of
    partners (then by index); a node not yet grouped that still has ungrouped partners becomes a
    representative and takes them all. A chain a-b-c-d thus gives {a, b, c} around b, and d, whose
    only partner is taken, stays out: never one group whose ends are not alike. Groups are
    ordered by their first member.
    """
    pairs = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
    if count == 0 or len(pairs) == 0:
        return []
    ends = np.concatenate([pairs, pairs[:, ::-1]])
    ends = ends[np.lexsort((ends[:, 1], ends[:, 0]))]
    starts = np.searchsorted(ends[:, 0], np.arange(count + 1))
    degree = np.diff(starts)
    grouped = np.zeros(count, dtype=bool)
    partners = ends[:, 1]
    groups = []
    for node in np.lexsort((np.arange(count), -degree)).tolist():
        if degree[node] == 0:
            break
        if grouped[node]:
            continue
        around = partners[starts[node]:starts[node + 1]]
        around = around[~grouped[around]]
        if len(around):
            members = np.append(around, node)
            grouped[members] = True
            groups.append((node, sorted(members.tolist())))
    return sorted(groups, key=lambda group: group[1][0])
