"""Readers for classic pcap and pcapng capture files, written on ``struct`` alone.

This is the hot path of a replay: a plain file is mapped with ``mmap`` and records are
sliced straight out of the mapping (measured on a 1M-record pcap: 0.73 us per record,
against 0.87 us reading the same file in 1 MiB chunks). Gzip input and stdin are streamed in 1 MiB
chunks through the same parser loops.

Formats (the file formats are documented in draft-ietf-opsawg-pcap and
draft-ietf-opsawg-pcapng):

* pcap: both byte orders, microsecond (``a1b2c3d4``) and nanosecond (``a1b23c4d``) magic;
  one link type for the whole file, taken from the file header.
* pcapng: Section Header Blocks in either byte order (several sections per file),
  Interface Description Blocks (link type, ``if_tsresol`` including power-of-two
  resolutions, ``if_tsoffset``), Enhanced, Simple and obsolete Packet Blocks; every other
  block type is skipped. Each frame carries the link type of its own interface.

Iterating a reader gives :class:`Frame` records one at a time; :meth:`CaptureReader.batches`
gives the same frames as lists of plain ``(timestamp, linktype, data)`` tuples, which is what
a replay loop wants: one generator resume and no record object per frame, ~0.2 us a frame
less than one ``Frame`` yielded at a time (measured on the quick benchmark capture).
For a classic pcap, :meth:`PcapReader.record_runs` goes one step further and copies nothing:
it hands a consumer (``Sensor.process_pcap_records``) runs of whole records in place, the
mapping or the stream's buffer with offsets, so a packet that is only counted is read where
it lies (~0.2-0.3 µs a packet less than a frame list on the benchmark captures).

Contract: problems with the file as a whole (not a capture, empty, unreadable, a header cut
short) raise :class:`sensor.errors.CaptureError` when the reader is opened. Problems with
individual records never raise: a record cut short ends the iteration with
``truncated = True``; a malformed record is counted in ``skipped_records`` and skipped when
the format lets us find the next one, otherwise iteration stops (``truncated = True``).
``stop_reason`` says in one line why iteration ended early.
"""

from __future__ import annotations

import gzip
import io
import mmap
import os
import struct
import sys
import zlib
from collections.abc import Callable, Iterator
from functools import partial
from itertools import repeat
from types import TracebackType
from typing import IO, NamedTuple, Protocol

from sensor.errors import CaptureError

__all__ = [
    "MAX_BLOCK_LENGTH",
    "MAX_CAPLEN",
    "Buffer",
    "CaptureReader",
    "Frame",
    "PcapReader",
    "PcapRecordFormat",
    "PcapngReader",
    "RawFrame",
    "RecordConsumer",
    "open_source",
]

#: A record claiming more captured bytes than this is corrupt (no link layer we decode
#: has frames that large; libpcap itself caps snaplen at 256 KiB).
MAX_CAPLEN = 256 * 1024
#: A pcapng block longer than this is treated as corrupt rather than buffered.
MAX_BLOCK_LENGTH = 16 * 1024 * 1024
#: Frames in one list of :meth:`CaptureReader.batches` at most, by default. Past a few
#: hundred the per-list cost is lost in the noise; a replay holds about one list of frame
#: copies at a time (~0.8 MB on the benchmark capture: 4096 frames measured +6 MB peak RSS).
BATCH_FRAMES = 1024
#: A list ends once this much input was read for it, so a list of jumbo frames stays small
#: (1024 frames of 64 KiB would be 64 MiB of copies held at once).
BATCH_BYTES = 1 << 20
#: Read size for streamed (gzip, stdin) input.
CHUNK_SIZE = 1 << 20
#: A mapped file's pages are given back every this many bytes read: pages of a mapping count
#: in the process's resident size, so without this a 600 MB capture shows as 600 MB RSS.
RELEASE_EVERY = 2 << 20

PCAP_MAGIC_US = 0xA1B2C3D4
PCAP_MAGIC_NS = 0xA1B23C4D
PCAPNG_SHB = 0x0A0D0D0A
PCAPNG_BOM = 0x1A2B3C4D
GZIP_MAGIC = b"\x1f\x8b"

# pcapng block types (draft-ietf-opsawg-pcapng section 10.1).
_IDB = 0x00000001
_PB = 0x00000002  # obsolete Packet Block (appendix A)
_SPB = 0x00000003
_EPB = 0x00000006
# IDB option codes (section 4.2).
_OPT_ENDOFOPT = 0
_OPT_IF_TSRESOL = 9
_OPT_IF_TSOFFSET = 14


class Frame(NamedTuple):
    """One captured frame: capture time, the link type of its interface, its bytes."""

    timestamp: float  # seconds since the epoch
    linktype: int  # LINKTYPE_* number of the interface the frame came from
    data: bytes  # captured bytes, possibly cut short by the snapshot length


RawFrame = tuple[float, int, bytes]
"""A frame as :meth:`CaptureReader.batches` hands it out: the fields of :class:`Frame`."""

Buffer = bytes | mmap.mmap
"""What a reader reads records from: a mapped file, or a stream's bytes (see _Source)."""


class PcapRecordFormat(NamedTuple):
    """How the records of one classic pcap file are read in place, for a consumer of
    :meth:`PcapReader.record_runs` (draft-ietf-opsawg-pcap section 5: a 16-byte record
    header, Timestamp (Seconds), Timestamp (Microseconds or nanoseconds), Captured Packet
    Length, Original Packet Length, then the captured bytes)."""

    #: ``header(buf, offset)`` -> (seconds, fraction, captured length) of the record header
    #: at ``offset``, in the file's byte order (struct.error if fewer than 16 bytes are left).
    header: Callable[[Buffer, int], tuple[int, int, int]]
    #: Seconds per unit of the second timestamp field: 1e-6, or 1e-9 (nanosecond magic).
    #: A record's capture time is ``seconds + fraction * fraction_unit``.
    fraction_unit: float
    #: The file's link type (every record has it).
    linktype: int
    #: A record claiming more captured bytes is corrupt: a consumer stops in front of it.
    max_caplen: int


RecordConsumer = Callable[[Buffer, int, int], int]
"""``consume(buf, start, end) -> stop``: takes the whole records of ``buf[start:end]`` in
order (at least the first, which the reader has checked) and returns the offset of the first
record it did not take (``end`` when it took them all). It stops in front of a record whose
header or captured bytes are not all before ``end``, or that claims more than ``max_caplen``
bytes: the reader then reports it as :meth:`CaptureReader.batches` would."""


# --------------------------------------------------------------------------------------
# Byte sources: a whole mapped file, or a stream read in chunks.


class _Source:
    """Gives the parser a buffer to slice from and refills it for streams.

    ``buf[pos:]`` is unread input; ``refill`` returns a new buffer holding at least
    ``need`` unread bytes, or fewer at the end of input. ``progress(pos)`` is the offset in
    the *underlying* input reached once ``pos`` of the current buffer is consumed (for gzip
    that is the compressed offset, so a progress bar matches ``bytes_total``).
    """

    def __init__(self, path: str, total: int | None) -> None:
        self.path = path
        self.bytes_total = total
        self.buf: bytes | mmap.mmap = b""
        self._buf_start = 0  # offset of buf[0] in the decompressed/plain stream

    def refill(self, pos: int, need: int) -> int:
        """Make ``buf[new_pos:]`` hold ``need`` bytes if the input has them; return new_pos."""
        del need
        return pos

    def progress(self, pos: int) -> int:
        return self._buf_start + pos

    def release(self, pos: int) -> None:
        """``buf[:pos]`` will not be read again: its memory may be given back."""
        del pos

    def peek(self, n: int) -> bytes:
        """The first ``n`` bytes of the input (fewer if it is shorter); call before reading."""
        try:
            pos = self.refill(0, n)
        except _StreamEnd as exc:
            raise CaptureError(f"{self.path}: {exc}") from exc
        return bytes(self.buf[pos : pos + n])

    def close(self) -> None:
        """Release the file or mapping."""


class _Readable(Protocol):
    def read(self, size: int = -1, /) -> bytes: ...

    def close(self) -> None: ...


class _MappedSource(_Source):
    def __init__(self, path: str, fobj: IO[bytes], size: int) -> None:
        super().__init__(path, size)
        self._file = fobj
        self._map = mmap.mmap(fobj.fileno(), 0, access=mmap.ACCESS_READ)
        if hasattr(self._map, "madvise") and hasattr(mmap, "MADV_SEQUENTIAL"):
            # Read-ahead for a front-to-back scan; measured ~10% faster per record.
            self._map.madvise(mmap.MADV_SEQUENTIAL)
        self.buf = self._map
        self._released = 0

    def release(self, pos: int) -> None:
        # MADV_DONTNEED on a read-only file mapping only unmaps the pages from this process
        # (they stay in the page cache; reading them again would fault them back in).
        # Frames already yielded are bytes copies, so they are unaffected.
        end = pos - pos % mmap.PAGESIZE
        if end > self._released and hasattr(self._map, "madvise"):
            self._map.madvise(mmap.MADV_DONTNEED, self._released, end - self._released)
            self._released = end

    def close(self) -> None:
        # Slices taken from the map are bytes copies, so unmapping is always safe.
        self.buf = b""
        self._map.close()
        self._file.close()


class _StreamSource(_Source):
    def __init__(
        self,
        path: str,
        stream: _Readable,
        total: int | None,
        raw_pos: Callable[[], int] | None,
        owned: list[_Readable],
        first: bytes = b"",
    ) -> None:
        super().__init__(path, total)
        # read1 returns what one underlying read gives, so when a gzip stream turns out to be
        # cut short, the data decompressed before the cut has already been handed over.
        self._read: Callable[[int], bytes] = getattr(stream, "read1", stream.read)
        self._raw_pos = raw_pos
        self._owned = owned
        self.buf = first

    def refill(self, pos: int, need: int) -> int:
        rest = self.buf[pos:]
        parts = [rest]
        have = len(rest)
        while have < need:
            try:
                chunk = self._read(max(CHUNK_SIZE, need - have))
            except (EOFError, gzip.BadGzipFile, zlib.error) as exc:
                # A gzip stream cut short or corrupt: like a truncated file, keep what we had.
                raise _StreamEnd(f"compressed data ends or is corrupt: {exc}") from exc
            except OSError as exc:
                raise CaptureError(f"{self.path}: read error: {exc}") from exc
            if not chunk:
                break
            parts.append(chunk)
            have += len(chunk)
        self._buf_start += pos
        self.buf = b"".join(parts)
        return 0

    def progress(self, pos: int) -> int:
        if self._raw_pos is not None:
            return self._raw_pos()
        return self._buf_start + pos

    def close(self) -> None:
        for fobj in self._owned:
            fobj.close()


class _StreamEnd(Exception):
    """Internal: the stream cannot give more bytes (corrupt compressed data)."""


class _Prepend:
    """A read-only file object that yields ``head`` and then the rest of ``raw``."""

    def __init__(self, head: bytes, raw: IO[bytes]) -> None:
        self._head = head
        self._raw = raw

    def read(self, n: int = -1, /) -> bytes:
        if self._head:
            if n < 0 or n >= len(self._head):
                head, self._head = self._head, b""
                return head + (self._raw.read(n - len(head)) if n >= 0 else self._raw.read())
            head, self._head = self._head[:n], self._head[n:]
            return head
        return self._raw.read(n)

    def seek(self, offset: int, /) -> int:
        raise io.UnsupportedOperation("stdin cannot seek")  # gzip only seeks to rewind


def open_source(path: str | os.PathLike[str], *, use_mmap: bool = True) -> _Source:
    """Open ``path`` (``"-"`` is stdin) as a byte source; gunzip when it starts with 1f 8b.

    Raises :class:`CaptureError` when the input cannot be opened or is empty.
    """
    name = os.fspath(path)
    if name == "-":
        return _open_stdin()
    try:
        fobj = open(name, "rb")  # noqa: SIM115 - owned by the returned source
    except OSError as exc:
        raise CaptureError(f"{name}: cannot open: {exc.strerror or exc}") from exc
    try:
        size = os.fstat(fobj.fileno()).st_size
        head = fobj.read(2)
        if not head:
            raise CaptureError(f"{name}: empty file")
        if head == GZIP_MAGIC:
            fobj.seek(0)
            gz = gzip.GzipFile(fileobj=fobj, mode="rb")
            return _StreamSource(name, gz, size, fobj.tell, [gz, fobj])
        if use_mmap and size > 0:
            return _MappedSource(name, fobj, size)
        fobj.seek(0)
        return _StreamSource(name, fobj, size, None, [fobj])
    except CaptureError:
        fobj.close()
        raise
    except (OSError, ValueError) as exc:
        fobj.close()
        raise CaptureError(f"{name}: cannot read: {exc}") from exc


def _open_stdin() -> _Source:
    if sys.stdin is None:  # started without a standard input at all
        raise CaptureError("-: no standard input to read a capture from")
    raw: IO[bytes] = sys.stdin.buffer
    try:
        first = raw.read(CHUNK_SIZE)
    except OSError as exc:
        raise CaptureError(f"-: cannot read stdin: {exc}") from exc
    if not first:
        raise CaptureError("-: empty input on stdin")
    if first[:2] == GZIP_MAGIC:
        gz = gzip.GzipFile(fileobj=_Prepend(first, raw), mode="rb")
        return _StreamSource("-", gz, None, None, [gz])
    return _StreamSource("-", raw, None, None, [], first)


# --------------------------------------------------------------------------------------
# Readers


class CaptureReader:
    """Iterates over the frames of one capture; a context manager.

    Attributes: ``path``, ``format`` (``"pcap"`` or ``"pcapng"``), ``bytes_total`` (size of
    the input when known), ``bytes_read`` (how far reading got, same unit: the end of the
    last batch read, which is ahead of a frame being iterated), ``truncated`` (iteration
    stopped before the end of the input), ``skipped_records`` (malformed records skipped or
    given up on), ``stop_reason`` (why iteration stopped early, or ``None``).
    """

    format: str = ""

    def __init__(self, source: _Source) -> None:
        self._source = source
        self.path = source.path
        self.bytes_total = source.bytes_total
        self.truncated = False
        self.skipped_records = 0
        self.stop_reason: str | None = None
        self._pos = 0  # offset in source.buf of the next unread record
        self._started = False

    @property
    def bytes_read(self) -> int:
        """Input consumed so far (compressed bytes for gzip input), updated a batch at a
        time (see :meth:`batches`)."""
        return self._source.progress(self._pos)

    def __iter__(self) -> Iterator[Frame]:
        """The frames one at a time, as :class:`Frame` records (see :meth:`batches`)."""
        make = partial(tuple.__new__, Frame)  # C calls only; Frame._make is Python code
        for batch in self.batches():
            yield from map(make, batch)

    def batches(
        self, size: int = BATCH_FRAMES, max_bytes: int = BATCH_BYTES
    ) -> Iterator[list[RawFrame]]:
        """The frames in capture order, in lists of at most ``size`` frames; a list ends
        early once ``max_bytes`` of input were read for it (a bound on the frame bytes one
        list holds, whatever their size). Never an empty list.

        The same frames as iterating the reader, with the same ``truncated``,
        ``skipped_records`` and ``stop_reason`` once the lists run out, and ``bytes_read``
        up to date at each list. A reader is read once, in either form."""
        if self._started:
            raise RuntimeError(f"{self.path}: a capture can only be iterated once")
        if size < 1 or max_bytes < 1:
            raise ValueError("size and max_bytes must be at least 1")
        self._started = True
        return self._batches(size, max_bytes)

    def _batches(self, size: int, max_bytes: int) -> Iterator[list[RawFrame]]:
        raise NotImplementedError

    def _refill(self, pos: int, need: int) -> int | None:
        """``need`` bytes at the returned position if the input has them; None when a
        stream cannot give more (a corrupt or cut gzip stream: the reader stops there)."""
        try:
            return self._source.refill(pos, need)
        except _StreamEnd as exc:
            self._stop(str(exc))
            return None

    def _stop(self, reason: str, *, skipped: bool = False) -> None:
        self.truncated = True
        self.stop_reason = reason
        if skipped:
            self.skipped_records += 1

    def _need(self, pos: int, need: int) -> int:
        """Ensure ``need`` bytes at ``pos`` if the input has them; return the new pos."""
        if len(self._source.buf) - pos >= need:
            return pos
        return self._source.refill(pos, need)

    def close(self) -> None:
        """Close the input. Frames already yielded stay valid."""
        self._source.close()

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class PcapReader(CaptureReader):
    """Classic libpcap files. The 24-byte file header is checked on construction."""

    format = "pcap"

    def __init__(self, source: _Source) -> None:
        super().__init__(source)
        try:
            pos = self._need(0, 24)
        except _StreamEnd as exc:
            raise CaptureError(f"{self.path}: {exc}") from exc
        buf = source.buf
        if len(buf) - pos < 24:
            raise CaptureError(f"{self.path}: truncated pcap file header")
        magic = int.from_bytes(buf[pos : pos + 4], "little")
        if magic in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            endian = "<"
        elif int.from_bytes(buf[pos : pos + 4], "big") in (PCAP_MAGIC_US, PCAP_MAGIC_NS):
            endian = ">"
            magic = int.from_bytes(buf[pos : pos + 4], "big")
        else:
            raise CaptureError(f"{self.path}: not a pcap file (starts with {buf[:4].hex(' ')})")
        self._scale = 1e-9 if magic == PCAP_MAGIC_NS else 1e-6
        # The link type is the low 16 bits; the upper bits carry FCS information
        # (draft-ietf-opsawg-pcap section 4, "LinkType and additional information").
        self.linktype = struct.unpack_from(endian + "I", buf, pos + 20)[0] & 0xFFFF
        self.snaplen = struct.unpack_from(endian + "I", buf, pos + 16)[0]
        self._rec = struct.Struct(endian + "III4x")  # ts_sec, ts_frac, caplen; not wirelen
        self._pos = pos + 24
        self.record_format = PcapRecordFormat(
            self._rec.unpack_from, self._scale, self.linktype, MAX_CAPLEN)

    def record_runs(self, consume: RecordConsumer, max_bytes: int = BATCH_BYTES) -> Iterator[int]:
        """Hands the records, in place, to ``consume`` (see :data:`RecordConsumer`), in runs of
        about ``max_bytes`` of input (at least one record a run), and yields once after each
        run the number of bytes it took (never 0). No frame is copied here: ``buf`` is the
        mapping or the stream's buffer, valid until the generator resumes (records already
        taken may be released then, see RELEASE_EVERY), so a consumer copies what it keeps.

        The same records as :meth:`batches`, with the same ``truncated``,
        ``skipped_records`` and ``stop_reason`` once the runs end, and ``bytes_read`` up
        to date at each run. A reader is read once, in either form."""
        if self._started:
            raise RuntimeError(f"{self.path}: a capture can only be iterated once")
        if max_bytes < 1:
            raise ValueError("max_bytes must be at least 1")
        self._started = True
        return self._runs(consume, max_bytes)

    def _runs(self, consume: RecordConsumer, max_bytes: int) -> Iterator[int]:
        # The record at pos is checked here (header, claimed length, all of it in the
        # buffer: the refills, limits and messages of _batches); the consumer reads it and
        # those after it up to the run's end. Only the record a consumer stops in front of
        # is read twice, once a run.
        src = self._source
        pos = self._pos
        release_at = pos + RELEASE_EVERY
        unpack_from = self._rec.unpack_from
        while True:
            buf = src.buf
            if len(buf) - pos < 16:
                got = self._refill(pos, 16)
                if got is None:
                    return
                self._pos = pos = got  # a stream's refill moves what pos points at
                buf = src.buf
                if len(buf) - pos < 16:
                    if len(buf) > pos:
                        self._stop("the last record header is cut short")
                    return
            caplen = unpack_from(buf, pos)[2]
            if caplen > MAX_CAPLEN:
                # pcap records have no marker to resynchronise on: give up on the rest.
                self._stop(f"record at {src.progress(pos)} claims {caplen} bytes", skipped=True)
                return
            first = pos + 16 + caplen
            if first > len(buf):
                got = self._refill(pos, 16 + caplen)
                if got is None:
                    return
                self._pos = pos = got
                buf = src.buf
                first = pos + 16 + caplen
                if first > len(buf):
                    self._stop("the last record is cut short")
                    return
            stop = consume(buf, pos, min(len(buf), max(pos + max_bytes, first)))
            if stop < first:
                raise RuntimeError(f"{self.path}: the record consumer did not take a record")
            taken = stop - pos
            self._pos = pos = stop
            if pos >= release_at:
                src.release(pos)
                release_at = pos + RELEASE_EVERY
            yield taken

    def _batches(self, size: int, max_bytes: int) -> Iterator[list[RawFrame]]:
        # The per-record loop: one struct unpack, one slice (a bytes copy, so frames outlive
        # the mapping) and one tuple a record; the reader's own state is written back once a
        # batch. ``pos`` is the next record; a refill may move the buffer (streams).
        unpack_from = self._rec.unpack_from
        linktype = self.linktype
        scale = self._scale
        src = self._source
        buf = src.buf
        pos = self._pos
        end = len(buf)
        release_at = pos + RELEASE_EVERY
        more = True
        while more:
            out: list[RawFrame] = []
            append = out.append
            cut = pos + max_bytes
            for _ in repeat(None, size):
                if end - pos < 16:
                    got = self._refill(pos, 16)
                    if got is None:
                        more = False
                        break
                    pos, buf = got, src.buf
                    end = len(buf)
                    cut = pos + max_bytes
                    if end - pos < 16:
                        if end > pos:
                            self._stop("the last record header is cut short")
                        more = False
                        break
                sec, frac, caplen = unpack_from(buf, pos)
                if caplen > MAX_CAPLEN:
                    # pcap records have no marker to resynchronise on: give up on the rest.
                    self._stop(f"record at {src.progress(pos)} claims {caplen} bytes",
                               skipped=True)
                    more = False
                    break
                start = pos + 16
                stop = start + caplen
                if stop > end:
                    got = self._refill(pos, 16 + caplen)
                    if got is None:
                        more = False
                        break
                    pos, buf = got, src.buf
                    end = len(buf)
                    cut = pos + max_bytes
                    start = pos + 16
                    stop = start + caplen
                    if stop > end:
                        self._stop("the last record is cut short")
                        more = False
                        break
                pos = stop
                append((sec + frac * scale, linktype, buf[start:stop]))
                if pos >= cut:
                    break
            self._pos = pos
            if pos >= release_at:
                src.release(pos)
                release_at = pos + RELEASE_EVERY
            if out:
                yield out


class _Interface(NamedTuple):
    linktype: int
    snaplen: int
    divisor: int  # timestamp units per second
    offset: int  # if_tsoffset, seconds


class PcapngReader(CaptureReader):
    """pcapng files. The first Section Header Block is checked on construction."""

    format = "pcapng"

    def __init__(self, source: _Source) -> None:
        super().__init__(source)
        try:
            pos = self._need(0, 12)
        except _StreamEnd as exc:
            raise CaptureError(f"{self.path}: {exc}") from exc
        buf = source.buf
        if len(buf) - pos < 12:
            raise CaptureError(f"{self.path}: truncated pcapng section header")
        if int.from_bytes(buf[pos : pos + 4], "little") != PCAPNG_SHB:
            raise CaptureError(f"{self.path}: not a pcapng file (starts with {buf[:4].hex(' ')})")
        if self._byte_order(buf, pos) is None:
            raise CaptureError(f"{self.path}: pcapng section header has a bad byte-order magic")
        self.interfaces: list[_Interface] = []

    @staticmethod
    def _byte_order(buf: bytes | mmap.mmap, pos: int) -> str | None:
        bom = buf[pos + 8 : pos + 12]
        if bom == b"\x4d\x3c\x2b\x1a":
            return "<"
        if bom == b"\x1a\x2b\x3c\x4d":
            return ">"
        return None

    def _batches(self, size: int, max_bytes: int) -> Iterator[list[RawFrame]]:
        # As PcapReader._batches: Enhanced Packet Blocks of a known interface take the
        # inline path; every other block type goes through a method.
        src = self._source
        buf = src.buf
        end = len(buf)
        pos = self._pos
        endian = "<"
        head = struct.Struct("<II")
        u32 = struct.Struct("<I")
        epb = struct.Struct("<IIII4x")  # interface, ts high, ts low, caplen; not wirelen
        interfaces = self.interfaces
        last_ts = 0.0  # a Simple Packet Block, which has no time, gets the previous one
        release_at = pos + RELEASE_EVERY
        more = True
        while more:
            out: list[RawFrame] = []
            append = out.append
            cut = pos + max_bytes
            for _ in repeat(None, size):
                if end - pos < 12:
                    got = self._refill(pos, 12)
                    if got is None:
                        more = False
                        break
                    pos, buf = got, src.buf
                    end = len(buf)
                    cut = pos + max_bytes
                    if end - pos < 12:
                        if end > pos:
                            self._stop("the last block header is cut short")
                        more = False
                        break
                btype, blen = head.unpack_from(buf, pos)
                if btype == PCAPNG_SHB:
                    order = self._byte_order(buf, pos)
                    if order is None:
                        self._stop("a section header has a bad byte-order magic", skipped=True)
                        more = False
                        break
                    endian = order
                    head = struct.Struct(endian + "II")
                    u32 = struct.Struct(endian + "I")
                    epb = struct.Struct(endian + "IIII4x")
                    blen = head.unpack_from(buf, pos)[1]
                if blen < 12 or blen % 4 or blen > MAX_BLOCK_LENGTH:
                    # Without a trustworthy length there is no next block to find.
                    self._stop(f"block at {src.progress(pos)} has length {blen}", skipped=True)
                    more = False
                    break
                if end - pos < blen:
                    got = self._refill(pos, blen)
                    if got is None:
                        more = False
                        break
                    pos, buf = got, src.buf
                    end = len(buf)
                    cut = pos + max_bytes
                    if end - pos < blen:
                        self._stop("the last block is cut short")
                        more = False
                        break
                body = pos + 8
                limit = pos + blen - 4  # where the trailing length field starts
                pos = limit + 4
                if u32.unpack_from(buf, limit)[0] != blen:
                    self.skipped_records += 1  # leading and trailing lengths disagree
                    continue
                if btype == _EPB and blen >= 32:
                    ifid, hi, lo, caplen = epb.unpack_from(buf, body)
                    data = body + 20
                    if ifid < len(interfaces) and data + caplen <= limit and caplen <= MAX_CAPLEN:
                        linktype, _snaplen, divisor, offset = interfaces[ifid]
                        last_ts = ((hi << 32) | lo) / divisor + offset
                        append((last_ts, linktype, buf[data : data + caplen]))
                        if pos >= cut:
                            break
                        continue
                    frame = None
                elif btype == _SPB:
                    frame = self._simple(buf, body, limit, endian, last_ts)
                elif btype == _PB:
                    frame = self._obsolete(buf, body, limit, endian)
                    if frame is not None:
                        last_ts = frame.timestamp
                elif btype == PCAPNG_SHB:
                    self.interfaces = interfaces = []  # ids are per section (section 4.1)
                    continue
                elif btype == _IDB:
                    self._add_interface(buf, body, limit, endian)
                    continue
                elif btype != _EPB:
                    continue  # name resolution, statistics, secrets, custom...: not ours
                else:
                    frame = None
                if frame is None:
                    self.skipped_records += 1
                else:
                    append(frame)
                    if pos >= cut:
                        break
            self._pos = pos
            if pos >= release_at:
                src.release(pos)
                release_at = pos + RELEASE_EVERY
            if out:
                yield out

    def _packet(
        self, ifid: int, ts: int, buf: bytes | mmap.mmap, data: int, caplen: int, limit: int
    ) -> Frame | None:
        if ifid >= len(self.interfaces) or caplen > MAX_CAPLEN or data + caplen > limit:
            return None
        iface = self.interfaces[ifid]
        stamp = ts / iface.divisor + iface.offset
        return Frame(stamp, iface.linktype, buf[data : data + caplen])

    def _simple(
        self, buf: bytes | mmap.mmap, body: int, limit: int, endian: str, last_ts: float
    ) -> Frame | None:
        # Simple Packet Block (section 4.4): interface 0, no timestamp, captured length is
        # min(original length, snaplen, block room). We give it the previous frame's time.
        if not self.interfaces or limit - body < 4:
            return None
        wirelen = struct.unpack_from(endian + "I", buf, body)[0]
        iface = self.interfaces[0]
        caplen = min(wirelen, limit - body - 4)
        if iface.snaplen:
            caplen = min(caplen, iface.snaplen)
        if caplen > MAX_CAPLEN:
            return None
        return Frame(last_ts, iface.linktype, buf[body + 4 : body + 4 + caplen])

    def _obsolete(self, buf: bytes | mmap.mmap, body: int, limit: int, endian: str) -> Frame | None:
        # Packet Block (appendix A): 16-bit interface id and drops count, then as EPB.
        if limit - body < 20:
            return None
        ifid, _drops, hi, lo, caplen, _wirelen = struct.unpack_from(endian + "HHIIII", buf, body)
        return self._packet(ifid, (hi << 32) | lo, buf, body + 20, caplen, limit)

    def _add_interface(self, buf: bytes | mmap.mmap, body: int, limit: int, endian: str) -> None:
        if limit - body < 8:
            # Keep interface numbering aligned with the file: later ids still refer to
            # later IDBs, so a broken one takes a slot that matches nothing we decode.
            self.skipped_records += 1
            self.interfaces.append(_Interface(-1, 0, 1_000_000, 0))
            return
        linktype, _reserved, snaplen = struct.unpack_from(endian + "HHI", buf, body)
        divisor, offset = 1_000_000, 0  # default resolution is microseconds (section 4.2)
        pos = body + 8
        while limit - pos >= 4:
            code, length = struct.unpack_from(endian + "HH", buf, pos)
            value = pos + 4
            if code == _OPT_ENDOFOPT or value + length > limit:
                break
            if code == _OPT_IF_TSRESOL and length >= 1:
                resol = buf[value]
                # MSB clear: 10^-n seconds; MSB set: 2^-n seconds.
                divisor = 2 ** (resol & 0x7F) if resol & 0x80 else 10**resol
            elif code == _OPT_IF_TSOFFSET and length >= 8:
                offset = struct.unpack_from(endian + "q", buf, value)[0]
            pos = value + ((length + 3) & ~3)
        self.interfaces.append(_Interface(linktype, snaplen, divisor, offset))
