"""tlsgen: a deterministic generator of TLS captures for golden tests and benchmarks.

Nothing here opens a socket: it writes bytes into a pcap file. Handshakes are assembled
message by message (``handshake``), so it can produce what no modern TLS library will
negotiate any more (SSLv3, RC4, EXPORT suites, 1024-bit DH); certificates come from a
seeded factory (``certs``); ``pcap`` frames TCP conversations and streams them to disk;
``scenarios`` names the situations a detector must recognise, each with its ground truth.

Determinism: the same scenario, seed and options give byte-identical captures in any
process. Keys are derived from the seed too (RSA primes from a seeded generator, EC and
Ed25519 scalars from seeded bytes) and signatures are deterministic (RSA PKCS#1 v1.5,
RFC 6979 ECDSA, Ed25519), so certificate fingerprints are stable across runs. None of these
keys is secret: they exist only to make certificates that parse and verify.

Usage: ``python -m tools.tlsgen SCENARIO OUT.pcap [--seed N] ...`` (see ``__main__``).
"""

from __future__ import annotations
