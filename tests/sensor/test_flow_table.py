"""The flow table lists and expires its flows by key value, each flow once.

A mypyc trial (bench/README.md, round 7) handed the table fresh key objects equal to the
ones it stored; the table, matching keys by identity, then listed no flow and expired none,
so the traffic statistics came out empty and idle flows stayed until evicted."""

from __future__ import annotations

from sensor.flows import Flow, FlowState, FlowTable, flow_key

TIMEOUTS = {FlowState.DETECTING: 60.0, FlowState.HANDSHAKE: 60.0, FlowState.COUNTING: 300.0,
            FlowState.CLOSED: 10.0}


def table_of(count: int) -> tuple[FlowTable, list[Flow]]:
    table = FlowTable(max_flows=100)
    flows = []
    for n in range(count):
        key = flow_key(bytes([10, 0, 0, n + 1]), bytes([192, 0, 2, 1]), 40_000 + n, 443)
        flow = Flow(key, float(n))
        table.add(flow)
        flows.append(flow)
    return table, flows


def test_each_flow_is_listed_once_in_creation_order_and_found_both_ways() -> None:
    table, flows = table_of(5)
    assert list(table) == flows and len(table) == 5
    for flow in flows:
        forward, backward = flow.keys
        assert table.lookup(forward) is flow and table.lookup(backward) is flow


def test_equal_key_objects_that_are_not_the_stored_ones_still_match() -> None:
    table, flows = table_of(3)
    for flow in flows:  # what compiled code does: an equal key, a different object
        flow.fkey = bytes(bytearray(flow.fkey))
    assert list(table) == flows
    idle = table.idle_since(100.0, TIMEOUTS)  # DETECTING flows last seen at 0, 1 and 2 s
    assert idle == flows


def test_only_flows_past_their_states_timeout_are_idle() -> None:
    table, flows = table_of(3)
    flows[0].state = FlowState.COUNTING  # 300 s
    flows[1].state = FlowState.CLOSED  # 10 s
    assert table.idle_since(62.5, TIMEOUTS) == [flows[1], flows[2]]


def test_a_flow_from_an_endpoint_to_itself_is_one_entry_listed_once() -> None:
    table = FlowTable(max_flows=10)
    key = flow_key(bytes([127, 0, 0, 1]), bytes([127, 0, 0, 1]), 5000, 5000)
    flow = Flow(key, 0.0)
    table.add(flow)
    assert list(table) == [flow] and table.idle_since(1e6, TIMEOUTS) == [flow]


def test_a_flow_whose_roles_are_unknown_names_the_likelier_server() -> None:
    """A flow first seen from the server (no SYN, no hello): what its anomalies and
    statistics call server is the side on the system port; once the roles are known, they
    decide."""
    server, client = bytes([192, 0, 2, 9]), bytes([10, 0, 0, 7])
    flow = Flow(flow_key(server, client, 443, 52930), 0.0)  # direction 0: server -> client
    assert flow.client_direction is None
    assert flow.client_server() == ((client, 52930), (server, 443))
    flow.client_direction = 0  # a hello said the first sender is the client after all
    assert flow.client_server() == ((server, 443), (client, 52930))
