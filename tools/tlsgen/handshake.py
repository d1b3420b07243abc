"""TLS records and handshake messages built as bytes, with no TLS library involved.

Every builder returns wire bytes: a handshake message is ``type || u24 length || body``
(RFC 8446 4, RFC 5246 7.4), ready to be concatenated with others and wrapped into records by
:func:`records`, which cuts the stream into fragments of at most 2^14 bytes (RFC 5246 6.2.1),
so several messages may share a record and one message may span several. Nothing is
checked for cryptographic sense: signatures, key shares and encrypted records are random
bytes of the right length, because a passive sensor sees only their sizes.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Sequence
from functools import lru_cache

# Protocol versions (RFC 6101, 2246, 4346, 5246, 8446).
SSL3, TLS10, TLS11, TLS12, TLS13 = 0x0300, 0x0301, 0x0302, 0x0303, 0x0304

# Record content types (RFC 8446 5.1) and handshake types (RFC 8446 4, RFC 5246 7.4).
CHANGE_CIPHER_SPEC, ALERT, HANDSHAKE, APPLICATION_DATA = 20, 21, 22, 23
CLIENT_HELLO, SERVER_HELLO, CERTIFICATE, SERVER_KEY_EXCHANGE = 1, 2, 11, 12
SERVER_HELLO_DONE, CLIENT_KEY_EXCHANGE, FINISHED = 14, 16, 20

# Extension code points (IANA "TLS ExtensionType Values").
EXT_SERVER_NAME, EXT_SUPPORTED_GROUPS, EXT_EC_POINT_FORMATS = 0, 10, 11
EXT_SIGNATURE_ALGORITHMS, EXT_ALPN, EXT_EXTENDED_MASTER_SECRET = 13, 16, 23
EXT_SUPPORTED_VERSIONS, EXT_PSK_MODES, EXT_KEY_SHARE, EXT_RENEGOTIATION_INFO = 43, 45, 51, 0xFF01

# Named groups (RFC 8422 5.1.1, RFC 7919 2) and the length of their key shares.
SECP256R1, SECP384R1, X25519, FFDHE2048 = 23, 24, 29, 256
KEY_SHARE_LENGTH = {SECP256R1: 65, SECP384R1: 97, X25519: 32, 30: 56, FFDHE2048: 256}

# Alert levels and a few descriptions (RFC 8446 6).
WARNING, FATAL = 1, 2
CLOSE_NOTIFY, UNEXPECTED_MESSAGE, HANDSHAKE_FAILURE = 0, 10, 40
BAD_CERTIFICATE, UNKNOWN_CA, PROTOCOL_VERSION = 42, 48, 70

RSA_PKCS1_SHA256 = 0x0401
DEFAULT_SIGNATURE_ALGORITHMS = (0x0403, 0x0804, 0x0401, 0x0503, 0x0805, 0x0501, 0x0806, 0x0601)
DEFAULT_GROUPS = (X25519, SECP256R1, SECP384R1)
MAX_FRAGMENT = 2**14  # RFC 5246 6.2.1: TLSPlaintext.length <= 2^14
GREASE_VALUES = tuple(0x0A0A + 0x1010 * i for i in range(16))  # RFC 8701 2


def u8(n: int) -> bytes:
    return n.to_bytes(1, "big")


def u16(n: int) -> bytes:
    return n.to_bytes(2, "big")


def u24(n: int) -> bytes:
    return n.to_bytes(3, "big")


def vector(data: bytes, len_size: int) -> bytes:
    """An opaque vector with a ``len_size``-byte length prefix (RFC 8446 3.4)."""
    return len(data).to_bytes(len_size, "big") + data


def u16_list(values: Iterable[int], len_size: int = 2) -> bytes:
    return vector(b"".join(u16(v) for v in values), len_size)


def random_bytes(rng: random.Random, n: int) -> bytes:
    return rng.randbytes(n)


# -- records ----------------------------------------------------------------------------


def record(content_type: int, version: int, fragment: bytes) -> bytes:
    """One record: ``type || version || u16 length || fragment`` (RFC 5246 6.2.1)."""
    return u8(content_type) + u16(version) + vector(fragment, 2)


def records(content_type: int, version: int, payload: bytes) -> bytes:
    """``payload`` (one or more concatenated messages) as records of at most 2^14 bytes."""
    if not payload:
        return record(content_type, version, b"")
    return b"".join(
        record(content_type, version, payload[i : i + MAX_FRAGMENT])
        for i in range(0, len(payload), MAX_FRAGMENT)
    )


def change_cipher_spec(version: int) -> bytes:
    """A ChangeCipherSpec record (RFC 5246 7.1): one byte, 1."""
    return record(CHANGE_CIPHER_SPEC, version, b"\x01")


def alert(level: int, description: int, version: int) -> bytes:
    """A plaintext Alert record (RFC 8446 6)."""
    return record(ALERT, version, u8(level) + u8(description))


def encrypted_record(content_type: int, version: int, length: int, rng: random.Random) -> bytes:
    """A record of ``length`` random bytes: what an encrypted Finished, application data or
    TLS 1.3 flight looks like on the wire (RFC 8446 5.2 TLSCiphertext)."""
    return record(content_type, version, rng.randbytes(length))


# -- hellos -----------------------------------------------------------------------------


def handshake(msg_type: int, body: bytes) -> bytes:
    """A handshake message: ``msg_type || u24 length || body`` (RFC 8446 4)."""
    return u8(msg_type) + vector(body, 3)


def extension(ext_type: int, data: bytes) -> bytes:
    return u16(ext_type) + vector(data, 2)


def server_name_ext(host: str) -> bytes:
    """RFC 6066 3: a ServerNameList holding one host_name."""
    name = host.encode("ascii")
    return extension(EXT_SERVER_NAME, vector(u8(0) + vector(name, 2), 2))


def alpn_ext(protocols: Sequence[bytes]) -> bytes:
    """RFC 7301 3.1: ProtocolNameList."""
    return extension(EXT_ALPN, vector(b"".join(vector(p, 1) for p in protocols), 2))


def key_share_entry(group: int, rng: random.Random) -> bytes:
    """RFC 8446 4.2.8 KeyShareEntry with a random key of the group's size."""
    return u16(group) + vector(rng.randbytes(KEY_SHARE_LENGTH.get(group, 32)), 2)


def client_hello(
    rng: random.Random,
    *,
    version: int = TLS12,
    cipher_suites: Sequence[int],
    server_name: str | None = None,
    alpn: Sequence[bytes] = (),
    supported_versions: Sequence[int] = (),
    groups: Sequence[int] = DEFAULT_GROUPS,
    signature_algorithms: Sequence[int] = DEFAULT_SIGNATURE_ALGORITHMS,
    key_share_groups: Sequence[int] = (),
    grease: int | None = None,
    session_id: bytes = b"",
    extensions: bool = True,
) -> bytes:
    """A ClientHello message (RFC 8446 4.1.2 / RFC 5246 7.4.1.2).

    ``grease`` (one of :data:`GREASE_VALUES`) adds RFC 8701 values where browsers put them:
    first cipher suite, first and last extension, first group, first supported version and
    first key share. ``extensions=False`` sends none at all, as SSLv3 clients did.
    """
    suites = ((grease,) if grease is not None else ()) + tuple(cipher_suites)
    body = u16(version) + rng.randbytes(32) + vector(session_id, 1) + u16_list(suites)
    body += vector(b"\x00", 1)  # compression: null only
    if not extensions:
        return handshake(CLIENT_HELLO, body)
    exts: list[bytes] = []
    if grease is not None:
        exts.append(extension(grease, b""))
    if server_name is not None:
        exts.append(server_name_ext(server_name))
    exts.append(extension(EXT_EXTENDED_MASTER_SECRET, b""))
    exts.append(extension(EXT_RENEGOTIATION_INFO, b"\x00"))
    g = ((grease,) if grease is not None else ()) + tuple(groups)
    exts.append(extension(EXT_SUPPORTED_GROUPS, u16_list(g)))
    exts.append(extension(EXT_EC_POINT_FORMATS, vector(b"\x00", 1)))
    if alpn:
        exts.append(alpn_ext(alpn))
    if signature_algorithms:
        exts.append(extension(EXT_SIGNATURE_ALGORITHMS, u16_list(signature_algorithms)))
    if key_share_groups:
        shares = b"".join(key_share_entry(k, rng) for k in key_share_groups)
        if grease is not None:
            shares = u16(grease) + vector(b"\x00", 2) + shares
        exts.append(extension(EXT_PSK_MODES, vector(b"\x01", 1)))
        exts.append(extension(EXT_KEY_SHARE, vector(shares, 2)))
    if supported_versions:
        v = ((grease,) if grease is not None else ()) + tuple(supported_versions)
        exts.append(extension(EXT_SUPPORTED_VERSIONS, u16_list(v, 1)))
    if grease is not None:
        # RFC 8701 3: a second GREASE extension, distinct from the first, with a body.
        exts.append(extension(grease ^ 0x1010, b"\x00"))
    return handshake(CLIENT_HELLO, body + vector(b"".join(exts), 2))


def server_hello(
    rng: random.Random,
    *,
    version: int,
    cipher_suite: int,
    session_id: bytes = b"",
    alpn: bytes | None = None,
    key_share_group: int | None = None,
) -> bytes:
    """A ServerHello (RFC 5246 7.4.1.3). For ``version`` TLS 1.3 the legacy_version is
    0x0303 and supported_versions/key_share carry the real choice (RFC 8446 4.1.3); SSLv3
    hellos carry no extension block (RFC 6101 5.6.1.3)."""
    legacy = min(version, TLS12)
    body = u16(legacy) + rng.randbytes(32) + vector(session_id, 1) + u16(cipher_suite) + b"\x00"
    exts: list[bytes] = []
    if version == TLS13:
        exts.append(extension(EXT_SUPPORTED_VERSIONS, u16(TLS13)))
        exts.append(extension(EXT_KEY_SHARE, key_share_entry(key_share_group or X25519, rng)))
    elif version > SSL3:
        exts.append(extension(EXT_RENEGOTIATION_INFO, b"\x00"))
        exts.append(extension(EXT_EXTENDED_MASTER_SECRET, b""))
        if alpn is not None:
            exts.append(alpn_ext((alpn,)))
    if not exts:
        return handshake(SERVER_HELLO, body)
    return handshake(SERVER_HELLO, body + vector(b"".join(exts), 2))


# -- the rest of a TLS <= 1.2 handshake --------------------------------------------------


def certificate(chain: Sequence[bytes], *, tls13: bool = False) -> bytes:
    """A Certificate message: RFC 5246 7.4.2 (a u24 list of u24 DER), or RFC 8446 4.4.2
    (empty request context, each entry followed by empty extensions)."""
    if tls13:
        entries = b"".join(vector(der, 3) + vector(b"", 2) for der in chain)
        return handshake(CERTIFICATE, vector(b"", 1) + vector(entries, 3))
    return handshake(CERTIFICATE, vector(b"".join(vector(der, 3) for der in chain), 3))


def _signed(params: bytes, version: int, signature_length: int, rng: random.Random) -> bytes:
    """ServerKeyExchange params followed by their signature: TLS 1.2 prefixes the
    SignatureAndHashAlgorithm (RFC 5246 7.4.3); earlier versions do not (RFC 4346 7.4.3)."""
    signature = vector(rng.randbytes(signature_length), 2)
    if version >= TLS12:
        signature = u16(RSA_PKCS1_SHA256) + signature
    return handshake(SERVER_KEY_EXCHANGE, params + signature)


def server_key_exchange_dhe(
    prime: int, version: int, rng: random.Random, *, generator: int = 2, signature_length: int = 256
) -> bytes:
    """ServerDHParams (RFC 5246 7.4.3): dh_p, dh_g, dh_Ys, then the signature."""
    size = (prime.bit_length() + 7) // 8
    ys = rng.randbytes(size)
    params = vector(prime.to_bytes(size, "big"), 2) + vector(u8(generator), 2) + vector(ys, 2)
    return _signed(params, version, signature_length, rng)


def server_key_exchange_ecdhe(
    group: int, version: int, rng: random.Random, *, signature_length: int = 256
) -> bytes:
    """ServerECDHParams (RFC 8422 5.4): curve_type named_curve (3), the group, the point."""
    point = rng.randbytes(KEY_SHARE_LENGTH.get(group, 65))
    return _signed(u8(3) + u16(group) + vector(point, 1), version, signature_length, rng)


def server_key_exchange_rsa(
    modulus_bits: int, version: int, rng: random.Random, *, signature_length: int = 256
) -> bytes:
    """ServerRSAParams (RFC 2246 7.4.3): the temporary RSA key of an EXPORT suite."""
    modulus = rng.getrandbits(modulus_bits) | (1 << (modulus_bits - 1)) | 1
    size = (modulus_bits + 7) // 8
    params = vector(modulus.to_bytes(size, "big"), 2) + vector((65537).to_bytes(3, "big"), 2)
    return _signed(params, version, signature_length, rng)


def server_hello_done() -> bytes:
    return handshake(SERVER_HELLO_DONE, b"")


def client_key_exchange(kx: str, version: int, rng: random.Random, *, size: int = 256) -> bytes:
    """ClientKeyExchange (RFC 5246 7.4.7) for key exchange ``kx`` (``RSA``, ``DHE``,
    ``ECDHE``). SSLv3 sends the RSA-encrypted secret without a length (RFC 6101 5.6.7.1)."""
    if kx == "ECDHE":
        return handshake(CLIENT_KEY_EXCHANGE, vector(rng.randbytes(size), 1))
    if kx == "RSA" and version == SSL3:
        return handshake(CLIENT_KEY_EXCHANGE, rng.randbytes(size))
    return handshake(CLIENT_KEY_EXCHANGE, vector(rng.randbytes(size), 2))


# -- Diffie-Hellman groups ---------------------------------------------------------------


def _fixed_point(bits: int, series: str) -> int:
    """floor(x * 2^bits) for x = pi (Machin's formula) or e (sum of 1/k!), by integer
    arithmetic: the constants the RFC 2409/3526/7919 primes are built from."""
    guard = 64
    one = 1 << (bits + guard)
    if series == "e":
        total, term, k = 0, one, 0
        while term:
            total, k = total + term, k + 1
            term //= k
        return total >> guard

    def arctan_inv(x: int) -> int:
        total = term = one // x
        n, sign = 1, -1
        while term:
            term //= x * x
            n += 2
            total += sign * (term // n)
            sign = -sign
        return total

    return (16 * arctan_inv(5) - 4 * arctan_inv(239)) >> guard


@lru_cache(maxsize=4)
def rfc_dh_prime(name: str) -> int:
    """A published safe prime, recomputed from its RFC's defining formula:
    ``modp1024`` (RFC 2409 6.2, Oakley group 2), ``modp2048`` (RFC 3526 3, group 14),
    ``ffdhe2048`` (RFC 7919 A.1)."""
    if name == "modp1024":
        return 2**1024 - 2**960 - 1 + 2**64 * (_fixed_point(894, "pi") + 129093)
    if name == "modp2048":
        return 2**2048 - 2**1984 - 1 + 2**64 * (_fixed_point(1918, "pi") + 124476)
    if name == "ffdhe2048":
        return 2**2048 - 2**1984 + 2**64 * (_fixed_point(1918, "e") + 560316) - 1
    raise KeyError(name)


def dh_prime(bits: int, rng: random.Random) -> int:
    """A DH modulus of exactly ``bits`` bits: the RFC 2409/3526 safe prime for 1024 and
    2048, else an odd number of that length (the sensor measures the size only)."""
    if bits == 1024:
        return rfc_dh_prime("modp1024")
    if bits == 2048:
        return rfc_dh_prime("modp2048")
    return rng.getrandbits(bits) | (1 << (bits - 1)) | 1
