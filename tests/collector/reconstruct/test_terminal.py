"""Terminal types are learned: a type is terminal when no flow ever follows it."""

from __future__ import annotations

from choreoscope.collector.reconstruct.terminal import TerminalTypes
from tests.collector.reconstruct.factory import clean_flow, load_flows, new_store, put


def test_types_followed_in_any_flow_are_not_terminal(tmp_path):
    """In full and short flows alike only the last type of the chain is terminal."""
    store = new_store(tmp_path)
    offsets: dict = {}
    put(store, *clean_flow(0, offsets=offsets))
    put(store, *clean_flow(1, hops=2, offsets=offsets))
    terminal = TerminalTypes()
    for _, dag in load_flows(store).values():
        terminal.learn(dag)
    assert terminal.terminal == ["customer.notified"]
    assert terminal.is_terminal("customer.notified")
    assert not terminal.is_terminal("payment.authorized")
    assert terminal.is_terminal("never.seen")


def test_a_type_only_ever_last_is_terminal(tmp_path):
    """When every flow stops at a type, that type is learned as terminal."""
    store = new_store(tmp_path)
    put(store, *clean_flow(0, hops=2))
    terminal = TerminalTypes()
    for _, dag in load_flows(store).values():
        terminal.learn(dag)
    assert terminal.terminal == ["payment.authorized"]
