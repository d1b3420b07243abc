"""The entry points for reading frames: ``open_capture`` for files, ``open_live`` for an
interface.

``open_capture`` picks the file reader by magic: pcap or pcapng, plain, gzip-compressed, or
stdin (``"-"``). ``open_live`` reads a network interface through a Linux AF_PACKET socket.
Both yield :class:`sensor.pcapfile.Frame` records ``(timestamp, linktype, data)``.

This is the only module that may import scapy, and it does so lazily, inside
``open_live``, only to compile a BPF filter with libpcap: replaying a file never pays
scapy's import time (~0.9 s), and no frame ever becomes a scapy packet object.
"""

from __future__ import annotations

import os
import select
import socket
import struct
import sys
import time
from collections.abc import Iterator
from types import TracebackType
from typing import NamedTuple

from sensor.errors import CaptureError
from sensor.pcapfile import (
    MAX_CAPLEN,
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PCAPNG_SHB,
    CaptureReader,
    Frame,
    PcapngReader,
    PcapReader,
    open_source,
)

__all__ = ["LiveCapture", "LiveStats", "open_capture", "open_live"]

_PCAP_MAGICS = {
    m.to_bytes(4, order) for m in (PCAP_MAGIC_US, PCAP_MAGIC_NS) for order in ("little", "big")
}


def open_capture(path: str | os.PathLike[str]) -> CaptureReader:
    """Open a pcap or pcapng file (plain or gzip-compressed; ``"-"`` is stdin).

    Returns a reader to iterate over once and close (it is a context manager). Raises
    :class:`CaptureError` with a one-line message naming the input when it cannot be
    opened, is empty, is not a capture, or its file header is cut short.
    """
    source = open_source(path)
    try:
        magic = source.peek(4)
        if len(magic) < 4:
            raise CaptureError(f"{source.path}: too short to be a capture ({len(magic)} bytes)")
        if magic in _PCAP_MAGICS:
            return PcapReader(source)
        if magic == PCAPNG_SHB.to_bytes(4, "little"):
            return PcapngReader(source)
        raise CaptureError(
            f"{source.path}: not a pcap or pcapng file (starts with {magic.hex(' ')})"
        )
    except BaseException:
        source.close()
        raise


# --------------------------------------------------------------------------------------
# Live capture on Linux AF_PACKET sockets.
#
# Measured on this host draining 40k queued 242-byte frames from lo (µs per frame):
# scapy ``L2ListenSocket.recv_raw`` 3.7-3.8; a plain socket's ``recvfrom`` 2.2-2.6;
# ``recvmsg`` with the kernel timestamp 3.0; with timestamp and VLAN auxdata 3.3-4.0;
# ``recvfrom`` + ``SIOCGSTAMP`` ioctl 3.5. So the socket is a plain ``socket.AF_PACKET``
# one read with ``recvmsg`` (one system call brings bytes, kernel time and VLAN tag) and
# scapy is used only to compile the BPF filter with libpcap, once, at open. A
# TPACKET_V3 memory-mapped ring would remove the system call per frame: the next step if
# capture ever dominates.

# <linux/if_packet.h>, <asm-generic/socket.h>, <linux/if_arp.h>
SOL_PACKET = 263
PACKET_ADD_MEMBERSHIP = 1
PACKET_STATISTICS = 6
PACKET_AUXDATA = 8
PACKET_FANOUT = 18
PACKET_IGNORE_OUTGOING = 23
PACKET_MR_PROMISC = 1
PACKET_OUTGOING = 4
PACKET_FANOUT_HASH = 0
PACKET_FANOUT_FLAG_DEFRAG = 0x8000
SO_ATTACH_FILTER = 26
SO_RCVBUFFORCE = 33
SO_TIMESTAMPNS = 35  # == SCM_TIMESTAMPNS, the control message type
ETH_P_ALL = 0x0003
TP_STATUS_VLAN_VALID = 0x10
TP_STATUS_VLAN_TPID_VALID = 0x40
ETH_P_8021Q = 0x8100
ARPHRD_ETHER = 1
ARPHRD_LOOPBACK = 772  # lo: frames carry an Ethernet header with zero addresses
ARPHRD_RAWIP = 519
ARPHRD_NONE = 0xFFFE  # tun devices: frames start with the IP header
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101

_LINKTYPE_OF_HATYPE = {
    ARPHRD_ETHER: LINKTYPE_ETHERNET,
    ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,
    ARPHRD_RAWIP: LINKTYPE_RAW,
    ARPHRD_NONE: LINKTYPE_RAW,
}
_TPACKET_STATS = struct.Struct("=II")  # struct tpacket_stats {tp_packets; tp_drops}
_AUXDATA = struct.Struct("=IIIHHHH")  # struct tpacket_auxdata
_TIMESPEC = {16: struct.Struct("=qq").unpack, 8: struct.Struct("=ii").unpack}
_ANCILLARY_SIZE = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(_AUXDATA.size)
_POLL_INTERVAL = 0.2  # how often a blocked iteration looks whether close() was called


class LiveStats(NamedTuple):
    """The kernel's counts for one live socket since it was opened (a NamedTuple, so
    ``received, dropped = capture.stats()`` works).

    ``received``: frames that passed the filter, dropped ones included (the kernel adds
    drops to ``tp_packets``); ``dropped``: frames lost because the socket buffer was full.
    """

    received: int
    dropped: int


class LiveCapture:
    """Frames from one network interface; iterate, or poll with :meth:`read_available`.

    Iterating blocks until frames arrive and ends once :meth:`close` has been called (from
    another thread or a signal handler). For an event loop, register :meth:`fileno` with
    ``loop.add_reader`` and call :meth:`read_available` when it is readable. Frames carry the
    kernel's receive time. Attributes: ``interface``, ``linktype``, ``bpf``, ``snaplen``,
    ``truncated`` (frames cut to ``snaplen``).
    """

    def __init__(
        self,
        sock: socket.socket,
        interface: str,
        linktype: int,
        bpf: str | None,
        snaplen: int,
        skip_outgoing: bool = False,
    ) -> None:
        self.interface = interface
        self.linktype = linktype
        self.bpf = bpf
        self.snaplen = snaplen
        self.truncated = 0
        self._sock = sock
        self._closed = False
        self._received = 0
        self._dropped = 0
        # Outgoing copies are skipped only where they are duplicates: on lo every frame is
        # seen once leaving and once arriving. Kernels before 4.20 lack
        # PACKET_IGNORE_OUTGOING, so the check is then made here per frame.
        self._skip_outgoing = skip_outgoing

    def fileno(self) -> int:
        """The socket's descriptor, for ``select``/``loop.add_reader``."""
        return self._sock.fileno()

    def read_available(self, max_frames: int = 256) -> list[Frame]:
        """Up to ``max_frames`` frames already queued, without blocking ([] if none or closed).

        Raises :class:`CaptureError` if the socket fails (the interface went away).
        """
        frames: list[Frame] = []
        if self._closed:
            return frames
        recvmsg, snaplen, linktype = self._sock.recvmsg, self.snaplen, self.linktype
        append, skip_outgoing = frames.append, self._skip_outgoing
        while len(frames) < max_frames:
            try:
                data, ancillary, flags, address = recvmsg(snaplen, _ANCILLARY_SIZE)
            except BlockingIOError:
                break
            except OSError as exc:
                if self._closed:  # closed by another thread meanwhile
                    break
                raise CaptureError(f"{self.interface}: live capture failed: {exc}") from exc
            if skip_outgoing and address[2] == PACKET_OUTGOING:
                continue
            if flags & socket.MSG_TRUNC:
                self.truncated += 1
            timestamp = 0.0
            for level, kind, payload in ancillary:
                if kind == SO_TIMESTAMPNS and level == socket.SOL_SOCKET:
                    seconds, nanoseconds = _TIMESPEC[len(payload)](payload)
                    timestamp = seconds + nanoseconds * 1e-9
                elif level == SOL_PACKET and kind == PACKET_AUXDATA:
                    data = _restore_vlan(data, payload, linktype)
            append(Frame(timestamp or time.time(), linktype, data))
        return frames

    def __iter__(self) -> Iterator[Frame]:
        while not self._closed:
            frames = self.read_available()
            if frames:
                yield from frames
                continue
            try:
                select.select([self._sock], [], [], _POLL_INTERVAL)
            except (OSError, ValueError):  # the socket was closed while we waited
                if not self._closed:
                    raise
                return

    def stats(self) -> LiveStats:
        """Frames received and dropped by the kernel since open (still valid after close)."""
        if not self._closed:
            # Reading PACKET_STATISTICS resets the kernel's counters, hence the running sum.
            raw = self._sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, _TPACKET_STATS.size)
            packets, drops = _TPACKET_STATS.unpack(raw)
            self._received += packets
            self._dropped += drops
        return LiveStats(self._received, self._dropped)

    def close(self) -> None:
        """Release the socket (promiscuous mode ends with it); safe to call twice."""
        if not self._closed:
            self.stats()
            self._closed = True
            self._sock.close()

    def __enter__(self) -> LiveCapture:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _restore_vlan(data: bytes, auxdata: bytes, linktype: int) -> bytes:
    """Put back the 802.1Q tag the kernel took off the frame (it strips the outer tag on
    receive, with or without hardware offload, and reports it in PACKET_AUXDATA), so
    ``network.vlan`` is right on a trunk port."""
    status, _, _, _, _, tci, tpid = _AUXDATA.unpack_from(auxdata)
    if not (status & TP_STATUS_VLAN_VALID or tci) or linktype != LINKTYPE_ETHERNET:
        return data
    if not status & TP_STATUS_VLAN_TPID_VALID:
        tpid = ETH_P_8021Q
    return data[:12] + struct.pack("!HH", tpid, tci) + data[12:]


def open_live(
    interface: str,
    *,
    bpf: str | None = "tcp",
    snaplen: int = 65535,
    promiscuous: bool = True,
    buffer_mb: int = 64,
    fanout_group: int | None = None,
) -> LiveCapture:
    """Open a live capture on ``interface`` (Linux AF_PACKET).

    ``bpf`` is a tcpdump filter expression run in the kernel (None: every frame);
    ``snaplen`` caps the bytes kept per frame; ``buffer_mb`` sizes the socket's receive
    buffer (beyond ``net.core.rmem_max`` only with CAP_NET_ADMIN); ``fanout_group``
    (0-65535) joins a PACKET_FANOUT hash group so several workers opened with the same
    group each get whole flows (the kernel's flow hash is symmetric; fragments are
    reassembled for hashing). Needs CAP_NET_RAW: drop privileges once it is open
    (``sensor.privileges``). On lo the kernel's outgoing copy of each frame is skipped.

    Raises :class:`CaptureError` naming the interface when the interface does not exist,
    its link type is not one we decode, the process lacks CAP_NET_RAW, or the filter does
    not compile (with libpcap's message); ``ValueError`` for out-of-range arguments.
    """
    if not 1 <= snaplen <= MAX_CAPLEN:
        raise ValueError(f"snaplen must be 1..{MAX_CAPLEN}, not {snaplen}")
    if buffer_mb < 1:
        raise ValueError(f"buffer_mb must be at least 1, not {buffer_mb}")
    if fanout_group is not None and not 0 <= fanout_group <= 0xFFFF:
        raise ValueError(f"fanout_group must be 0..65535, not {fanout_group}")
    try:
        socket.if_nametoindex(interface)
    except OSError as exc:
        raise CaptureError(f"{interface}: no such network interface") from exc
    sock = _packet_socket(interface)
    try:
        # Protocol 0 until the filter is attached: the socket sees nothing before then,
        # so no unfiltered frame can slip in first.
        sock.bind((interface, 0))
        hatype = sock.getsockname()[3]
        linktype = _LINKTYPE_OF_HATYPE.get(hatype)
        if linktype is None:
            raise CaptureError(f"{interface}: unsupported hardware type ARPHRD {hatype}")
        if bpf is not None:
            _attach_filter(sock, interface, bpf, linktype)
        skip_outgoing = _configure(sock, interface, hatype, promiscuous, buffer_mb)
        sock.bind((interface, ETH_P_ALL))
        if fanout_group is not None:
            mode = PACKET_FANOUT_HASH | PACKET_FANOUT_FLAG_DEFRAG
            # An unsigned int: with the DEFRAG flag it does not fit Python's signed int path.
            option = struct.pack("=I", fanout_group | mode << 16)
            sock.setsockopt(SOL_PACKET, PACKET_FANOUT, option)
        sock.setblocking(False)
        return LiveCapture(sock, interface, linktype, bpf, snaplen, skip_outgoing)
    except OSError as exc:
        sock.close()
        raise CaptureError(f"{interface}: cannot open live capture: {exc}") from exc
    except BaseException:
        sock.close()
        raise


def _packet_socket(interface: str) -> socket.socket:
    try:
        return socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError as exc:
        python = os.path.realpath(sys.executable)
        raise CaptureError(
            f"{interface}: live capture needs CAP_NET_RAW (run as root or grant the "
            f"capability: setcap cap_net_raw,cap_net_admin+eip {python})"
        ) from exc
    except (OSError, AttributeError) as exc:  # AttributeError: no AF_PACKET off Linux
        raise CaptureError(f"{interface}: live capture needs Linux AF_PACKET: {exc}") from exc


def _configure(
    sock: socket.socket, interface: str, hatype: int, promiscuous: bool, buffer_mb: int
) -> bool:
    """Buffer size, timestamps, VLAN auxdata, promiscuous mode, outgoing copies on lo.
    Returns whether outgoing copies must be skipped in Python (old kernels)."""
    size = buffer_mb << 20
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, size)
    except PermissionError:  # no CAP_NET_ADMIN: capped at net.core.rmem_max
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, size)
    sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
    sock.setsockopt(SOL_PACKET, PACKET_AUXDATA, 1)
    if promiscuous and hatype != ARPHRD_LOOPBACK:
        index = socket.if_nametoindex(interface)
        request = struct.pack("iHH8s", index, PACKET_MR_PROMISC, 0, b"")  # packet_mreq
        sock.setsockopt(SOL_PACKET, PACKET_ADD_MEMBERSHIP, request)
    if hatype == ARPHRD_LOOPBACK:
        try:
            sock.setsockopt(SOL_PACKET, PACKET_IGNORE_OUTGOING, 1)
        except OSError:
            return True
    return False


def _attach_filter(sock: socket.socket, interface: str, bpf: str, linktype: int) -> None:
    """Compile ``bpf`` with libpcap (through scapy) and attach it to the socket."""
    try:
        from scapy.arch.common import compile_filter, free_filter
        from scapy.error import Scapy_Exception
        from scapy.libs.structures import sock_fprog
    except ImportError as exc:  # scapy missing, or libpcap not found by scapy
        raise CaptureError(f"{interface}: BPF filters need scapy and libpcap: {exc}") from exc
    try:
        program = compile_filter(bpf, linktype=linktype)
    except (Scapy_Exception, ImportError, OSError) as exc:
        raise CaptureError(f"{interface}: bad capture filter {bpf!r}: {exc}") from exc
    try:
        program_ref = sock_fprog(program.bf_len, program.bf_insns)
        sock.setsockopt(socket.SOL_SOCKET, SO_ATTACH_FILTER, program_ref)
    finally:
        free_filter(program)
