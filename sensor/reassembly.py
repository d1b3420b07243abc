"""In-order delivery of one direction of a TCP stream, for the handshake region only.

Sequence numbers are 32-bit and wrap (RFC 9293 3.4); internally every byte gets a 64-bit
*stream offset* (bytes since the first expected one), so ordering and overlap are plain
integer comparisons. A segment's offset is found from its signed distance to the next
expected sequence number, which is correct as long as the segment lies within 2**31 of
it, and segments more than :data:`FAR_WINDOW` away are dropped and counted anyway.

Policy on overlaps: the first bytes received for a position win. Bytes already delivered
are never revised (a retransmission carrying other bytes is trimmed), and bytes held out
of order are not replaced by a later overlapping segment. Every bound is explicit:
out-of-order bytes and pieces are capped, and exceeding a cap raises
:class:`sensor.errors.ReassemblyError` so the caller can fail the flow and count it.
"""

from __future__ import annotations

from bisect import bisect_right

from sensor.errors import ReassemblyError

__all__ = ["FAR_WINDOW", "StreamReassembler"]

#: A segment further than this from the next expected byte is not part of this stream's
#: present (a corrupt or spoofed sequence number): it is dropped and counted.
FAR_WINDOW = 1 << 30
_MOD = 1 << 32
_HALF = 1 << 31
_MAX_SHARED_LIMITS = 64


class _Held:
    """Out-of-order pieces and the rarely moved counters of one direction, allocated on
    the first piece held or counted (memory: two reassemblers per handshake in flight, and
    most streams arrive in order). Pieces are disjoint and sorted by stream offset: parallel
    lists of start offsets, end offsets and bytes (at most max_out_of_order_segments)."""

    __slots__ = ("buffered", "ends", "far_segments", "gaps_skipped", "pieces", "starts")

    def __init__(self) -> None:
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.pieces: list[bytes] = []
        self.buffered = 0
        self.far_segments = 0
        self.gaps_skipped = 0


# (max_buffered, max_out_of_order_segments) pairs shared by the reassemblers using them:
# a sensor makes every reassembler with the same bounds. Bounded (others are not shared).
_limits: dict[tuple[int, int], tuple[int, int]] = {}


class StreamReassembler:
    """Reassembles one direction of one TCP connection.

    Feed segments with :meth:`add`; it returns the bytes that became contiguous because of
    that segment. Counters: ``buffered`` (bytes held out of order), ``gaps_skipped`` (holes
    given up on with :meth:`skip_gap`), ``far_segments`` (segments dropped for being more
    than 1 GiB from the expected sequence number), ``delivered`` (bytes returned so far).

    Memory: four slots; the bounds are a shared pair, and the held pieces and the counters
    other than ``delivered`` live in a :class:`_Held` made only when first needed.
    """

    __slots__ = ("_limits", "_next_seq", "delivered", "held")

    def __init__(
        self, *, max_buffered: int = 256 * 1024, max_out_of_order_segments: int = 64
    ) -> None:
        limits = (max_buffered, max_out_of_order_segments)
        shared = _limits.get(limits)
        if shared is None and len(_limits) < _MAX_SHARED_LIMITS:
            shared = _limits[limits] = limits
        self._limits = shared or limits
        self.delivered = 0
        self._next_seq: int | None = None  # sequence number of stream offset ``delivered``
        # Read-only for callers (the sensor's buffer budget reads ``held.buffered``
        # without the ``buffered`` property call): None until a piece is held or counted.
        self.held: _Held | None = None

    @property
    def max_buffered(self) -> int:
        return self._limits[0]

    @property
    def max_out_of_order_segments(self) -> int:
        return self._limits[1]

    @property
    def buffered(self) -> int:
        """Bytes held out of order."""
        held = self.held
        return held.buffered if held is not None else 0

    @property
    def gaps_skipped(self) -> int:
        held = self.held
        return held.gaps_skipped if held is not None else 0

    @property
    def far_segments(self) -> int:
        held = self.held
        return held.far_segments if held is not None else 0

    def _own_held(self) -> _Held:
        held = self.held
        if held is None:
            held = self.held = _Held()
        return held

    def set_initial_sequence(self, isn: int) -> None:
        """Anchor the stream on a SYN's sequence number: the first data byte is ``isn + 1``.

        Ignored once data has been delivered or buffered, so a late or retransmitted SYN
        cannot rewind the stream. Data carried on the SYN itself (TCP Fast Open, RFC 7413)
        starts at ``isn + 1``: pass it as ``add(isn + 1, payload)``.
        """
        if self.delivered == 0 and (self.held is None or not self.held.starts):
            self._next_seq = (isn + 1) % _MOD

    def add(self, seq: int, payload: bytes) -> bytes:
        """Take one segment; return the bytes it made contiguous (``b""`` if none).

        Without a prior SYN the first segment sets the expected sequence number (a capture
        that starts mid-stream). Raises :class:`ReassemblyError` when holding the segment
        out of order would exceed ``max_buffered`` bytes or ``max_out_of_order_segments``.
        """
        if not payload:
            return b""
        if self._next_seq is None:
            self._next_seq = seq % _MOD
        dist = (seq - self._next_seq) % _MOD
        if dist >= _HALF:
            dist -= _MOD
        if dist > FAR_WINDOW or dist < -FAR_WINDOW:
            self._own_held().far_segments += 1
            return b""
        if dist <= 0:
            if dist + len(payload) <= 0:
                return b""  # a retransmission of delivered bytes
            fresh = payload[-dist:] if dist else payload
            held = self.held
            if held is None or not held.starts:
                # _advance, inline: the in-order segment, nearly every one
                count = len(fresh)
                self.delivered += count
                self._next_seq = (self._next_seq + count) % _MOD
                return fresh
            # Held pieces it overlaps arrived first and win: merge, then drain.
            self._hold(self.delivered, fresh, bounded=False)
            return self._deliver([])
        self._hold(self.delivered + dist, payload)
        return b""

    def skip_gap(self) -> bytes:
        """Give up on the hole before the first held piece; return what then becomes contiguous.

        For the end of a capture with loss: what follows a hole may still parse. Counts
        ``gaps_skipped``; returns ``b""`` (and counts nothing) when nothing is held.
        """
        held = self.held
        if held is None or not held.starts:
            return b""
        held.gaps_skipped += 1
        self._advance(held.starts[0] - self.delivered)
        return self._deliver([])

    def _advance(self, count: int) -> None:
        assert self._next_seq is not None
        self.delivered += count
        self._next_seq = (self._next_seq + count) % _MOD

    def _deliver(self, parts: list[bytes]) -> bytes:
        """Deliver every held piece that has become contiguous, after ``parts``."""
        held = self._own_held()
        starts, ends, pieces = held.starts, held.ends, held.pieces
        while starts and starts[0] <= self.delivered:
            start, end, piece = starts.pop(0), ends.pop(0), pieces.pop(0)
            held.buffered -= end - start
            if end > self.delivered:
                fresh = piece[self.delivered - start :]
                parts.append(fresh)
                self._advance(len(fresh))
        return b"".join(parts)

    def _hold(self, start: int, payload: bytes, *, bounded: bool = True) -> None:
        """Keep the parts of ``payload`` (at stream offset ``start``) not already held.

        ``bounded=False`` is for data at the delivery point, which is drained right away.
        """
        held = self._own_held()
        starts, ends, pieces = held.starts, held.ends, held.pieces
        end = start + len(payload)
        # Cut [start, end) around the held pieces it overlaps: earlier data wins.
        new: list[tuple[int, int]] = []
        i = max(bisect_right(starts, start) - 1, 0)
        cursor = start
        while cursor < end and i < len(starts):
            if ends[i] <= cursor:
                i += 1
                continue
            if starts[i] >= end:
                break
            if starts[i] > cursor:
                new.append((cursor, starts[i]))
            cursor = max(cursor, ends[i])
            i += 1
        if cursor < end:
            new.append((cursor, end))
        if not new:
            return  # a duplicate of held data
        added = sum(b - a for a, b in new)
        max_buffered, max_segments = self._limits
        if bounded and held.buffered + added > max_buffered:
            raise ReassemblyError(
                f"out-of-order data would exceed {max_buffered} bytes "
                f"({held.buffered} held, {added} more)"
            )
        if bounded and len(starts) + len(new) > max_segments:
            raise ReassemblyError(
                f"more than {max_segments} out-of-order segments held"
            )
        for a, b in new:
            j = bisect_right(starts, a)
            starts.insert(j, a)
            ends.insert(j, b)
            pieces.insert(j, payload[a - start : b - start])
        held.buffered += added
