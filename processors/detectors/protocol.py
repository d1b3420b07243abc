"""What the server negotiated: protocol version, cipher suite and ephemeral key exchange.

Three rules, one class each: ``tls.deprecated_version``, ``tls.weak_cipher``,
``tls.weak_dh``. Only what the server chose is judged (ServerHello, ServerKeyExchange, TLS 1.3
key_share): what a client merely offers is never a finding, since a server that refuses it is
doing its job. Thresholds come from :func:`processors.profiles.resolve`; a finding carries the
profile requirement behind its threshold, if any.

Processors may not import ``sensor``, so the cipher suite is judged from its IANA name
(``tls.cipher``), which encodes key exchange, authentication, bulk cipher and MAC (RFC 5246
appendix A.5, RFC 8446 appendix B.4); ``cipher_classes`` is checked against the sensor's
registry flags for every suite in the tests.
"""

from __future__ import annotations

from typing import ClassVar, Final

from processors.base import Finding
from processors.catalog import RULES
from processors.memo import BoundedMemo, event_server_key
from processors.policy import Policy
from processors.profiles import resolve
from schemas.events import HandshakeEvent

# --------------------------------------------------------------------------------------
# Versions. Ranks order TLS versions; SSL is below every TLS minimum. DTLS 1.0 is TLS 1.1
# based (RFC 4347 §1), DTLS 1.2/1.3 match TLS 1.2/1.3 (RFC 6347, RFC 9147).

_RANKS: Final = {
    ("tls", "1.0"): 10, ("tls", "1.1"): 11, ("tls", "1.2"): 12, ("tls", "1.3"): 13,
    ("dtls", "1.0"): 11, ("dtls", "1.2"): 12, ("dtls", "1.3"): 13,
}  # fmt: skip
_SSL_RANK: Final = 3


def _version_rank(protocol: str | None, version: str) -> int | None:
    if protocol == "ssl":
        return _SSL_RANK
    return _RANKS.get((protocol or "tls", version))


def _version_label(protocol: str | None, version: str) -> str:
    if protocol == "ssl":
        return f"SSLv{version.split('.')[0]}"
    return f"{(protocol or 'tls').upper()} {version}"


def _identity(event: HandshakeEvent, value: str) -> tuple[str, ...]:
    return (event_server_key(event), str(event.destination.port), value)


class DeprecatedVersion:
    """``tls.deprecated_version``: the negotiated version is below the minimum."""

    rules: ClassVar[tuple[str, ...]] = ("tls.deprecated_version",)

    def __init__(self, policy: Policy) -> None:
        thresholds = resolve(policy)
        self.min_version = thresholds.min_version
        self._min_rank = _RANKS[("tls", self.min_version)]
        self._requirement = thresholds.requirement("min_version")
        self._enabled = policy.rules.enabled(self.rules[0])

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """One finding when the server negotiated a version below the minimum."""
        tls = event.tls
        if not self._enabled or tls.version is None:
            return []
        rank = _version_rank(tls.version_protocol, tls.version)
        if rank is None or rank >= self._min_rank:
            return []
        label = _version_label(tls.version_protocol, tls.version)
        rule = self.rules[0]
        return [Finding(
            rule=rule,
            severity=RULES[rule].severity,
            message=f"{event_server_key(event)} negotiated {label}, below the minimum "
                    f"TLS {self.min_version}",
            identity=_identity(event, label),
            requirement=self._requirement,
            details={"version": label, "min_version": f"TLS {self.min_version}"},
        )]


# --------------------------------------------------------------------------------------
# Cipher suites, classified from the IANA name: TLS_<kx>_<auth>_WITH_<cipher>_<mac>; TLS 1.3
# TLS_<aead>_<hash>, which does not fix the key exchange (RFC 8446 §4.2.9: (EC)DHE, except
# for psk_ke resumption, which the suite cannot show); SSLv2 SSL_CK_<cipher>_WITH_<mac>
# (RSA key exchange, RFC 6101 appendix E).

# Key exchanges without an ephemeral share: the server's long-term key (or a pre-shared
# key) decrypts every recorded session. GOST suites are left unjudged: their TLS 1.2 and
# TLS 1.3 variants differ in this respect and the name alone cannot tell them apart.
_STATIC_KX_PREFIXES: Final = ("RSA", "DH_DSS", "DH_RSA", "ECDH_ECDSA", "ECDH_RSA", "PSK",
                              "KRB5", "FORTEZZA", "NULL", "CK")
_EPHEMERAL_KX_PREFIXES: Final = ("DHE_", "ECDHE_", "DH_anon", "ECDH_anon", "PSK_DHE")


def cipher_classes(name: str | None) -> frozenset[str]:
    """The weak-cipher classes (``processors.policy.WeakCipherClass``) of a suite named as
    IANA does; empty for ``None``, signalling values and names we cannot parse
    (``unknown-0x....``)."""
    if not name or not name.startswith(("TLS_", "SSL_")) or name.endswith("_SCSV"):
        return frozenset()
    body = name[4:]
    if body.startswith("CK_"):
        kx_auth, (cipher, _, mac) = "CK", body[3:].rpartition("_WITH_")
    elif "_WITH_" in body:
        kx_auth, _, rest = body.partition("_WITH_")
        cipher, _, mac = rest.rpartition("_")
    else:
        kx_auth, (cipher, _, mac) = "", body.rpartition("_")
    found: set[str] = set()
    if "EXPORT" in body:
        found.add("export")
    if kx_auth == "NULL" or "_anon" in kx_auth:
        found.add("anon")
    # RFC 9150 integrity-only suites (TLS_SHA256_SHA256) encrypt nothing either.
    if cipher == "NULL" or cipher in ("SHA256", "SHA384"):
        found.add("null")
    if cipher.startswith("RC4"):
        found.add("rc4")
    if cipher.startswith("DES") and "EDE" not in cipher:
        found.add("des")  # includes 40-bit export DES; DES_192_EDE3 is 3DES
    if "3DES" in cipher or "EDE3" in cipher:
        found.add("3des")
    if "CBC" in cipher:
        found.add("cbc")
    if mac == "MD5":
        found.add("md5")
    if mac == "SHA":  # RFC 5246 names HMAC-SHA1 "SHA"
        found.add("sha1")
    static = kx_auth.startswith(_STATIC_KX_PREFIXES)
    if static and not kx_auth.startswith(_EPHEMERAL_KX_PREFIXES):
        found.add("no_forward_secrecy")
    return frozenset(found)


class WeakCipher:
    """``tls.weak_cipher``: the negotiated suite falls in a forbidden class."""

    rules: ClassVar[tuple[str, ...]] = ("tls.weak_cipher",)

    def __init__(self, policy: Policy) -> None:
        thresholds = resolve(policy)
        self.forbidden = thresholds.forbidden_ciphers
        self._requirement = thresholds.requirement("forbidden_ciphers")
        self._enabled = policy.rules.enabled(self.rules[0])
        self._weak: BoundedMemo[str, list[str]] = BoundedMemo(4096)

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """One finding naming every forbidden class of the negotiated suite."""
        cipher = event.tls.cipher
        if not self._enabled or cipher is None:
            return []
        # A handful of suites make up all the traffic: their verdict is memoised (bounded).
        weak = self._weak.get(cipher)
        if weak is None:
            weak = self._weak.put(cipher, sorted(cipher_classes(cipher) & self.forbidden))
        if not weak:
            return []
        rule = self.rules[0]
        return [Finding(
            rule=rule,
            severity=RULES[rule].severity,
            message=f"{event_server_key(event)} negotiated {cipher} ({', '.join(weak)})",
            identity=_identity(event, cipher),
            requirement=self._requirement,
            details={"cipher": cipher, "classes": list(weak), "forbidden": sorted(self.forbidden)},
        )]


# --------------------------------------------------------------------------------------
# Named groups (IANA "TLS Supported Groups"): the size compared with the minimum. EC sizes
# are field sizes (RFC 8422 5.1.1, SEC 2, RFC 7027); X25519/X448 count as 256/448 like
# P-256/P-448-class curves of the same security (RFC 7748 §1: ~128 and ~224 bits). Finite-
# field groups (RFC 7919) are compared with the DH minimum. ML-KEM and hybrid groups are
# not judged here: they are at least as strong as their classical half (P-256 or X25519 and
# up). OpenSSL's aliases (prime256v1...) are accepted as well.

_EC_GROUP_BITS: Final = {
    "sect163k1": 163, "sect163r1": 163, "sect163r2": 163, "sect193r1": 193,
    "sect193r2": 193, "sect233k1": 233, "sect233r1": 233, "sect239k1": 239,
    "sect283k1": 283, "sect283r1": 283, "sect409k1": 409, "sect409r1": 409,
    "sect571k1": 571, "sect571r1": 571,
    "secp160k1": 160, "secp160r1": 160, "secp160r2": 160, "secp192k1": 192,
    "secp192r1": 192, "prime192v1": 192, "secp224k1": 224, "secp224r1": 224,
    "secp256k1": 256, "secp256r1": 256, "prime256v1": 256, "secp384r1": 384,
    "secp521r1": 521,
    "brainpoolp256r1": 256, "brainpoolp384r1": 384, "brainpoolp512r1": 512,
    "brainpoolp256r1tls13": 256, "brainpoolp384r1tls13": 384, "brainpoolp512r1tls13": 512,
    "x25519": 256, "x448": 448, "curvesm2": 256,
    "gc256a": 256, "gc256b": 256, "gc256c": 256, "gc256d": 256,
    "gc512a": 512, "gc512b": 512, "gc512c": 512,
}  # fmt: skip
_FFDHE_BITS: Final = {"ffdhe2048": 2048, "ffdhe3072": 3072, "ffdhe4096": 4096,
                      "ffdhe6144": 6144, "ffdhe8192": 8192}


def named_group_bits(name: str) -> tuple[str, int] | None:
    """``("ec", bits)`` or ``("dh", bits)`` for a named group, None when not judged."""
    key = name.lower()
    if key in _EC_GROUP_BITS:
        return "ec", _EC_GROUP_BITS[key]
    if key in _FFDHE_BITS:
        return "dh", _FFDHE_BITS[key]
    return None


class WeakDh:
    """``tls.weak_dh``: the server's ephemeral group is smaller than the minimum."""

    rules: ClassVar[tuple[str, ...]] = ("tls.weak_dh",)

    def __init__(self, policy: Policy) -> None:
        thresholds = resolve(policy)
        self.min_dh_bits = thresholds.min_dh_bits
        self.min_ec_bits = thresholds.min_dh_ec_bits
        self._dh_requirement = thresholds.requirement("min_dh_bits")
        self._ec_requirement = thresholds.requirement("min_dh_ec_bits")
        self._enabled = policy.rules.enabled(self.rules[0])
        self._verdicts: BoundedMemo[tuple[int | None, str | None],
                                    tuple[str, str, int, int, str | None] | None] = (
            BoundedMemo(4096))

    def _judge(self, event: HandshakeEvent) -> tuple[str, str, int, int, str | None] | None:
        """(kind, value, bits, minimum, requirement) of a too-small group, else None."""
        kx = event.certwatch.tls.key_exchange
        if kx is None:
            return None
        if kx.dh_prime_bits is not None and kx.dh_prime_bits < self.min_dh_bits:
            return ("dh", f"DH-{kx.dh_prime_bits}", kx.dh_prime_bits, self.min_dh_bits,
                    self._dh_requirement)
        sized = named_group_bits(kx.named_group) if kx.named_group else None
        if sized is None or kx.named_group is None:
            return None
        kind, bits = sized
        minimum, requirement = ((self.min_dh_bits, self._dh_requirement) if kind == "dh"
                                else (self.min_ec_bits, self._ec_requirement))
        if bits >= minimum:
            return None
        return kind, kx.named_group, bits, minimum, requirement

    def inspect(self, event: HandshakeEvent) -> list[Finding]:
        """One finding when the DH prime or the named group is below its minimum."""
        if not self._enabled:
            return []
        kx = event.certwatch.tls.key_exchange
        if kx is None:
            return []
        # The verdict depends on the group only, and a few groups make up all the traffic.
        group = (kx.dh_prime_bits, kx.named_group)
        if group in self._verdicts:
            weak = self._verdicts[group]
        else:
            weak = self._verdicts.put(group, self._judge(event))
        if weak is None:
            return []
        kind, value, bits, minimum, requirement = weak
        label = "DH group" if kind == "dh" else "ECDH curve"
        rule = self.rules[0]
        return [Finding(
            rule=rule,
            severity=RULES[rule].severity,
            message=f"{event_server_key(event)} used a {bits}-bit {label} ({value}), below "
                    f"the minimum of {minimum} bits",
            identity=_identity(event, value),
            requirement=requirement,
            details={"group": value, "kind": kind, "bits": bits, "min_bits": minimum},
        )]
