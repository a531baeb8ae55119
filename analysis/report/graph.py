"""The interference graph: tasks as nodes, edges weighted by axis overlap and by measured interference."""
from __future__ import annotations

from typing import List

import networkx as nx

__all__ = ["interference_communities"]


def interference_communities(summary: dict) -> List[List[int]]:
    """Groups of mutually interfering tasks: greedy modularity communities of the graph whose edges
    carry the (positive) interference between two tasks. Tasks without interference stand alone.
    Sorted by size, then by first task."""
    g = nx.Graph()
    g.add_nodes_from(range(len(summary["tasks"])))
    for p in summary["pairs"]:
        w = p["interference"]
        if w is not None and w > 0:
            g.add_edge(p["a"], p["b"], weight=w)
    if g.number_of_edges() == 0:
        return [[n] for n in sorted(g.nodes)]
    comms = nx.community.greedy_modularity_communities(g, weight="weight")
    return sorted((sorted(c) for c in comms), key=lambda c: (-len(c), c[0]))
