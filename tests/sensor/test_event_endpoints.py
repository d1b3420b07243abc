"""Who a handshake event says the client and the server are, and on which VLANs.

``sensor.build`` takes the endpoints and the VLAN ids from one split of the flow's key
(``sensor.flows.split_key``, which reads an untagged IPv4 or IPv6 key with one struct
call): the events must name the ClientHello's sender as the client, as tshark does, and
a tagged frame's VLAN ids (IEEE 802.1Q; the outer tag first, then the inner one of an
802.1ad stack) as ``network.vlan`` and ``network.inner.vlan``.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from sensor.decode import LINKTYPE_ETHERNET
from tests.support import DATA, Frame, captures, handshakes, read_frames, run_sensor, tshark_view

# tshark's view names a tunnelled hello by its outer IP header (GTP-U, VXLAN), the sensor
# by the inner one; and it lists no "ClientHello" for an SSLv2 CLIENT-HELLO.
NOT_COMPARABLE = {"ja3_lots_of_cipher_suites_2_anon.pcap", "tls_invalid_reads.pcap",
                  "vxlan.pcap", "ssl-v2.pcap"}
TCP_CAPTURES = [c for c in captures() if c.with_name(c.name + ".tshark.json").exists()
                and c.parent.name not in ("quic", "dtls") and c.name not in NOT_COMPARABLE]


def _endpoint(text: str) -> tuple[str, int]:
    """tshark's ``address:port`` (an IPv6 address may be bracketed)."""
    addr, _, port = text.rpartition(":")
    return addr.strip("[]"), int(port)


@pytest.mark.parametrize("capture", TCP_CAPTURES, ids=lambda c: f"{c.parent.name}/{c.name}")
def test_the_client_is_who_sent_the_client_hello(capture: Path) -> None:
    view = tshark_view(capture)["handshake_messages"]
    assert isinstance(view, list)
    hellos = {(_endpoint(m["src"]), _endpoint(m["dst"])) for m in view
              if m["msg"] == "ClientHello" and m["transport"] == "tcp"}
    events = [e for e in handshakes(run_sensor(read_frames(capture)))
              if e.certwatch.tls.client_hello is not None]
    for event in events:
        pair = ((event.source.ip, event.source.port),
                (event.destination.ip, event.destination.port))
        assert pair in hellos, f"{pair} sent no ClientHello in tshark's view"
        assert event.network.transport == "tcp"
        assert event.network.type == ("ipv6" if ":" in event.source.ip else "ipv4")
        assert event.network.vlan is None  # none of these captures is tagged
    # every capture whose hellos tshark saw gives us events for them
    assert len({(e.source.ip, e.source.port) for e in events}) == len({c for c, _ in hellos})


def _tagged(frames: list[Frame], vids: tuple[int, ...]) -> list[Frame]:
    """The frames with 802.1Q tags inserted after the MAC addresses, outermost first
    (TPID 0x88a8 for an outer tag of a stack, 0x8100 for the last; the TCI's low 12 bits
    are the VID)."""
    tags = b"".join((0x88A8 if i < len(vids) - 1 else 0x8100).to_bytes(2, "big")
                    + (0x2000 | vid).to_bytes(2, "big") for i, vid in enumerate(vids))
    assert all(linktype == LINKTYPE_ETHERNET for _, linktype, _ in frames)
    return [(ts, linktype, data[:12] + tags + data[12:]) for ts, linktype, data in frames]


@pytest.mark.parametrize("vids", [(), (7,), (7, 4094)])
def test_tagged_handshakes_keep_their_endpoints_and_report_their_vlans(
        vids: tuple[int, ...]) -> None:
    capture = DATA / "ja4" / "latest.pcapng"
    plain = handshakes(run_sensor(read_frames(capture)))
    tagged = handshakes(run_sensor(_tagged(read_frames(capture), vids)))
    assert plain and len(tagged) == len(plain)
    for ours, theirs in zip(tagged, plain, strict=True):
        assert (ours.source, ours.destination) == (theirs.source, theirs.destination)
        assert ours.tls == theirs.tls
        vlan, inner = ours.network.vlan, ours.network.inner
        assert (vlan.id if vlan else None) == (str(vids[0]) if vids else None)
        assert (inner.vlan.id if inner and inner.vlan else None) == (
            str(vids[1]) if len(vids) > 1 else None)
