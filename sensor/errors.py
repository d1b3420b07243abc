"""The sensor's one exception tree.

    SensorError
     ├── CaptureError          the capture itself cannot be read (not a capture, unreadable,
     │                         unsupported link type): fatal for that input, exit status 2
     └── ParseError            bad traffic: counted as an anomaly, the flow is marked failed,
          │                    the sensor keeps going. ``kind`` names the anomaly.
          ├── DecodeError      L2-L4 headers (Ethernet, VLAN, IP, TCP) are malformed
          ├── ReassemblyError  a bound of the TCP reassembler was hit
          ├── TlsRecordError   the TLS record layer is malformed or not TLS at all
          ├── HandshakeError   a handshake message is malformed
          └── CertificateError a certificate cannot be parsed by ``cryptography``

Parsers raise a ``ParseError`` subclass for invalid input (chained with ``from`` when
another library's exception is the cause), return ``None`` when they need more bytes, and
return a frozen record when the input is complete.
"""

from __future__ import annotations

from typing import ClassVar


class SensorError(Exception):
    """Root of every error the sensor raises on purpose."""


class CaptureError(SensorError):
    """The capture cannot be read at all; the message names the file and the problem."""


class ParseError(SensorError):
    """Traffic that does not parse. ``kind`` is the stable anomaly name it is counted under."""

    kind: ClassVar[str] = "parse_error"


class DecodeError(ParseError):
    kind = "decode_error"


class ReassemblyError(ParseError):
    kind = "reassembly_limit"


class TlsRecordError(ParseError):
    kind = "tls_record_error"


class HandshakeError(ParseError):
    kind = "tls_handshake_error"


class CertificateError(ParseError):
    kind = "certificate_parse_error"
