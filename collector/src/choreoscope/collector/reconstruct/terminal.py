"""Terminal event types, learned from traffic: types no flow ever follows with another event.

"Follows" is causal: an event of type T is followed when some event of the same flow names it
as its cause (by causation id or span parent). A type seen only in leaves is terminal.
"""

from __future__ import annotations

from .flows import UNKNOWN_TYPE, Dag


class TerminalTypes:
    """Accumulates, flow by flow, which types were seen and which were ever followed."""

    def __init__(self) -> None:
        self.seen: set[str] = set()
        self.followed: set[str] = set()

    def learn(self, dag: Dag) -> None:
        nodes = dag.nodes
        for e in nodes.values():
            self.seen.add(e.type or UNKNOWN_TYPE)
        for c in dag.children:
            self.followed.add(nodes[c].type or UNKNOWN_TYPE)

    def is_terminal(self, event_type: str) -> bool:
        """True when the type was never followed by another event in any flow."""
        return event_type not in self.followed

    @property
    def terminal(self) -> list[str]:
        return sorted(self.seen - self.followed)
