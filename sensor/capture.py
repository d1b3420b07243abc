"""The one entry point for reading captures: ``open_capture`` picks the reader by magic.

Live capture (the only place scapy will be imported) arrives in a later change; this
module reads files, gzip-compressed files and stdin (``"-"``).
"""

from __future__ import annotations

import os

from sensor.errors import CaptureError
from sensor.pcapfile import (
    PCAP_MAGIC_NS,
    PCAP_MAGIC_US,
    PCAPNG_SHB,
    CaptureReader,
    PcapngReader,
    PcapReader,
    open_source,
)

__all__ = ["open_capture"]

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
