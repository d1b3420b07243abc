"""Names and properties of TLS code points: one table per IANA registry.

Every lookup is total: a code point that is not in a table gets a synthetic name
``unknown-0xNNNN`` (four hex digits; six for 24-bit SSLv2 cipher kinds) and never raises,
because the values come straight off the wire. GREASE values (RFC 8701) are recognised by
:func:`is_grease` and named ``GREASE-0xNANA`` by every 16-bit lookup.

Tables (source: IANA "Transport Layer Security (TLS) Parameters" and "TLS Extensions"
registries, https://www.iana.org/assignments/tls-parameters, plus the RFCs named per table):

* protocol versions .......... :func:`version_name`, :func:`version_ecs`
* cipher suites .............. :data:`CIPHER_SUITES`, :func:`cipher_suite`
* extension types ............ :data:`EXTENSION_TYPES`, :func:`extension_name`
* supported groups ........... :data:`SUPPORTED_GROUPS`, :func:`group`, :func:`group_name`
* EC point formats ........... :data:`EC_POINT_FORMATS`, :func:`ec_point_format_name`
* signature schemes .......... :data:`SIGNATURE_SCHEMES`, :func:`signature_scheme_name`
* alert levels/descriptions .. :func:`alert_level_name`, :func:`alert_description_name`
* handshake types ............ :data:`HANDSHAKE_TYPES`, :func:`handshake_type_name`
* content types .............. :data:`CONTENT_TYPES`, :func:`content_type_name`
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Final

# --------------------------------------------------------------------------------------
# GREASE (RFC 8701 section 2): 0x0A0A, 0x1A1A, ... 0xFAFA for 16-bit fields.


def is_grease(value: int) -> bool:
    """True for the sixteen RFC 8701 GREASE values of 16-bit fields (0x0a0a ... 0xfafa)."""
    return (value & 0x0F0F) == 0x0A0A and (value >> 8) == (value & 0xFF)


def _unknown(value: int, digits: int = 4) -> str:
    return f"unknown-0x{value:0{digits}x}"


def _lookup16(table: MappingProxyType[int, str], value: int) -> str:
    name = table.get(value)
    if name is not None:
        return name
    if is_grease(value):
        return f"GREASE-0x{value:04x}"
    return _unknown(value)


# --------------------------------------------------------------------------------------
# Protocol versions: RFC 6101 (SSLv3; SSLv2 hellos carry 0x0002), RFC 2246/4346/5246/8446
# (TLS 1.0-1.3), RFC 4347/6347/9147 (DTLS 1.0/1.2/1.3, one's complement encoding).
# TLS 1.3 drafts were sent as 0x7fNN with NN the draft number (RFC 8446 section 4.2.1
# note); Facebook's Fizz sent 0xfbNN for its experiments with draft NN.

SSL2: Final = 0x0002
SSL3: Final = 0x0300
TLS1_0: Final = 0x0301
TLS1_1: Final = 0x0302
TLS1_2: Final = 0x0303
TLS1_3: Final = 0x0304
DTLS1_0: Final = 0xFEFF
DTLS1_2: Final = 0xFEFD
DTLS1_3: Final = 0xFEFC

_VERSIONS: Final = MappingProxyType(
    {
        SSL2: ("SSLv2", "ssl", "2.0"),
        SSL3: ("SSLv3", "ssl", "3.0"),
        TLS1_0: ("TLSv1.0", "tls", "1.0"),
        TLS1_1: ("TLSv1.1", "tls", "1.1"),
        TLS1_2: ("TLSv1.2", "tls", "1.2"),
        TLS1_3: ("TLSv1.3", "tls", "1.3"),
        DTLS1_0: ("DTLSv1.0", "dtls", "1.0"),
        DTLS1_2: ("DTLSv1.2", "dtls", "1.2"),
        DTLS1_3: ("DTLSv1.3", "dtls", "1.3"),
        # OpenSSL's pre-RFC DTLS (DTLS1_BAD_VER), still seen from old Cisco AnyConnect.
        0x0100: ("DTLSv1.0-pre", "dtls", "1.0"),
    }
)


def version_name(v: int) -> str:
    """Human name of a protocol version: ``TLSv1.2``, ``SSLv3``, ``TLSv1.3-draft23``,
    ``TLSv1.3-draft23-fb``, ``GREASE-0x0a0a``, else ``unknown-0xNNNN``."""
    known = _VERSIONS.get(v)
    if known is not None:
        return known[0]
    if v >> 8 == 0x7F:
        return f"TLSv1.3-draft{v & 0xFF}"
    if v >> 8 == 0xFB:
        return f"TLSv1.3-draft{v & 0xFF}-fb"
    if is_grease(v):
        return f"GREASE-0x{v:04x}"
    return _unknown(v)


def version_ecs(v: int) -> tuple[str, str]:
    """ECS ``(tls.version_protocol, tls.version)`` of a version: ``("tls", "1.2")``,
    ``("ssl", "3.0")``, ``("dtls", "1.2")``; TLS 1.3 drafts give ``("tls", "1.3")``.
    Unknown values give ``("unknown", "unknown-0xNNNN")``."""
    known = _VERSIONS.get(v)
    if known is not None:
        return known[1], known[2]
    if v >> 8 in (0x7F, 0xFB):
        return "tls", "1.3"
    return "unknown", version_name(v)


# --------------------------------------------------------------------------------------
# Cipher suites: IANA "TLS Cipher Suites" registry (RFC 5246 A.5, RFC 8446 B.4, and the
# RFC named in each registry row), SSLv2 CIPHER-KINDs (SSLv2 draft / RFC 6101 E), and a
# few common non-IANA code points. The table below lists code and name only; the parts
# (key exchange, authentication, cipher, MAC) are derived from the name by
# :func:`_describe`, so a transcription error cannot make the name and its parts disagree.


@dataclass(frozen=True, slots=True)
class CipherSuite:
    """One cipher suite and what detectors need to judge it.

    ``kx`` is the key exchange as it shows on the wire: ``RSA``, ``DH``/``ECDH`` (static),
    ``DHE``/``ECDHE`` (ephemeral, which includes the anonymous DH_anon/ECDH_anon suites
    since they send a ServerKeyExchange), ``PSK``, ``DHE_PSK``, ``ECDHE_PSK``,
    ``RSA_PSK``, ``SRP``, ``KRB5``, ``ECCPWD``, ``GOST``, ``NULL``; ``ANY`` for TLS 1.3
    suites, which do not fix it, and ``SCSV`` for signalling values. ``auth`` likewise:
    ``RSA``, ``DSS``, ``ECDSA``, ``anon``, ``PSK``, ``SRP``, ``KRB5``, ``NULL``, ``ANY``...
    ``cipher`` is the bulk cipher (``AES_128_GCM``, ``3DES_EDE_CBC``, ``RC4_128``,
    ``NULL``) and ``mac`` the MAC or, for AEAD suites, the PRF hash.
    """

    code: int
    name: str
    kx: str
    auth: str
    cipher: str
    mac: str
    export: bool = False
    anonymous: bool = False
    null_encryption: bool = False
    rc4: bool = False
    des: bool = False  # single DES, including the 40-bit export DES
    triple_des: bool = False
    md5_mac: bool = False
    aead: bool = False
    scsv: bool = False
    iana: bool = True

    @property
    def weak(self) -> bool:
        """Any of the flags the ``tls.weak_cipher`` rule names (NULL, EXPORT, anon, RC4,
        DES/3DES, MD5 MAC). Signalling values are never weak: they are not negotiated."""
        return (
            self.export
            or self.anonymous
            or self.null_encryption
            or self.rc4
            or self.des
            or self.triple_des
            or self.md5_mac
        )


# Code, name. IANA rows unless in _NON_IANA below.
_SUITE_NAMES = """
0000 TLS_NULL_WITH_NULL_NULL
0001 TLS_RSA_WITH_NULL_MD5
0002 TLS_RSA_WITH_NULL_SHA
0003 TLS_RSA_EXPORT_WITH_RC4_40_MD5
0004 TLS_RSA_WITH_RC4_128_MD5
0005 TLS_RSA_WITH_RC4_128_SHA
0006 TLS_RSA_EXPORT_WITH_RC2_CBC_40_MD5
0007 TLS_RSA_WITH_IDEA_CBC_SHA
0008 TLS_RSA_EXPORT_WITH_DES40_CBC_SHA
0009 TLS_RSA_WITH_DES_CBC_SHA
000a TLS_RSA_WITH_3DES_EDE_CBC_SHA
000b TLS_DH_DSS_EXPORT_WITH_DES40_CBC_SHA
000c TLS_DH_DSS_WITH_DES_CBC_SHA
000d TLS_DH_DSS_WITH_3DES_EDE_CBC_SHA
000e TLS_DH_RSA_EXPORT_WITH_DES40_CBC_SHA
000f TLS_DH_RSA_WITH_DES_CBC_SHA
0010 TLS_DH_RSA_WITH_3DES_EDE_CBC_SHA
0011 TLS_DHE_DSS_EXPORT_WITH_DES40_CBC_SHA
0012 TLS_DHE_DSS_WITH_DES_CBC_SHA
0013 TLS_DHE_DSS_WITH_3DES_EDE_CBC_SHA
0014 TLS_DHE_RSA_EXPORT_WITH_DES40_CBC_SHA
0015 TLS_DHE_RSA_WITH_DES_CBC_SHA
0016 TLS_DHE_RSA_WITH_3DES_EDE_CBC_SHA
0017 TLS_DH_anon_EXPORT_WITH_RC4_40_MD5
0018 TLS_DH_anon_WITH_RC4_128_MD5
0019 TLS_DH_anon_EXPORT_WITH_DES40_CBC_SHA
001a TLS_DH_anon_WITH_DES_CBC_SHA
001b TLS_DH_anon_WITH_3DES_EDE_CBC_SHA
001c SSL_FORTEZZA_KEA_WITH_NULL_SHA
001d SSL_FORTEZZA_KEA_WITH_FORTEZZA_CBC_SHA
001e TLS_KRB5_WITH_DES_CBC_SHA
001f TLS_KRB5_WITH_3DES_EDE_CBC_SHA
0020 TLS_KRB5_WITH_RC4_128_SHA
0021 TLS_KRB5_WITH_IDEA_CBC_SHA
0022 TLS_KRB5_WITH_DES_CBC_MD5
0023 TLS_KRB5_WITH_3DES_EDE_CBC_MD5
0024 TLS_KRB5_WITH_RC4_128_MD5
0025 TLS_KRB5_WITH_IDEA_CBC_MD5
0026 TLS_KRB5_EXPORT_WITH_DES_CBC_40_SHA
0027 TLS_KRB5_EXPORT_WITH_RC2_CBC_40_SHA
0028 TLS_KRB5_EXPORT_WITH_RC4_40_SHA
0029 TLS_KRB5_EXPORT_WITH_DES_CBC_40_MD5
002a TLS_KRB5_EXPORT_WITH_RC2_CBC_40_MD5
002b TLS_KRB5_EXPORT_WITH_RC4_40_MD5
002c TLS_PSK_WITH_NULL_SHA
002d TLS_DHE_PSK_WITH_NULL_SHA
002e TLS_RSA_PSK_WITH_NULL_SHA
002f TLS_RSA_WITH_AES_128_CBC_SHA
0030 TLS_DH_DSS_WITH_AES_128_CBC_SHA
0031 TLS_DH_RSA_WITH_AES_128_CBC_SHA
0032 TLS_DHE_DSS_WITH_AES_128_CBC_SHA
0033 TLS_DHE_RSA_WITH_AES_128_CBC_SHA
0034 TLS_DH_anon_WITH_AES_128_CBC_SHA
0035 TLS_RSA_WITH_AES_256_CBC_SHA
0036 TLS_DH_DSS_WITH_AES_256_CBC_SHA
0037 TLS_DH_RSA_WITH_AES_256_CBC_SHA
0038 TLS_DHE_DSS_WITH_AES_256_CBC_SHA
0039 TLS_DHE_RSA_WITH_AES_256_CBC_SHA
003a TLS_DH_anon_WITH_AES_256_CBC_SHA
003b TLS_RSA_WITH_NULL_SHA256
003c TLS_RSA_WITH_AES_128_CBC_SHA256
003d TLS_RSA_WITH_AES_256_CBC_SHA256
003e TLS_DH_DSS_WITH_AES_128_CBC_SHA256
003f TLS_DH_RSA_WITH_AES_128_CBC_SHA256
0040 TLS_DHE_DSS_WITH_AES_128_CBC_SHA256
0041 TLS_RSA_WITH_CAMELLIA_128_CBC_SHA
0042 TLS_DH_DSS_WITH_CAMELLIA_128_CBC_SHA
0043 TLS_DH_RSA_WITH_CAMELLIA_128_CBC_SHA
0044 TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA
0045 TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA
0046 TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA
0060 TLS_RSA_EXPORT1024_WITH_RC4_56_MD5
0061 TLS_RSA_EXPORT1024_WITH_RC2_CBC_56_MD5
0062 TLS_RSA_EXPORT1024_WITH_DES_CBC_SHA
0063 TLS_DHE_DSS_EXPORT1024_WITH_DES_CBC_SHA
0064 TLS_RSA_EXPORT1024_WITH_RC4_56_SHA
0065 TLS_DHE_DSS_EXPORT1024_WITH_RC4_56_SHA
0066 TLS_DHE_DSS_WITH_RC4_128_SHA
0067 TLS_DHE_RSA_WITH_AES_128_CBC_SHA256
0068 TLS_DH_DSS_WITH_AES_256_CBC_SHA256
0069 TLS_DH_RSA_WITH_AES_256_CBC_SHA256
006a TLS_DHE_DSS_WITH_AES_256_CBC_SHA256
006b TLS_DHE_RSA_WITH_AES_256_CBC_SHA256
006c TLS_DH_anon_WITH_AES_128_CBC_SHA256
006d TLS_DH_anon_WITH_AES_256_CBC_SHA256
0080 TLS_GOSTR341094_WITH_28147_CNT_IMIT
0081 TLS_GOSTR341001_WITH_28147_CNT_IMIT
0082 TLS_GOSTR341094_WITH_NULL_GOSTR3411
0083 TLS_GOSTR341001_WITH_NULL_GOSTR3411
0084 TLS_RSA_WITH_CAMELLIA_256_CBC_SHA
0085 TLS_DH_DSS_WITH_CAMELLIA_256_CBC_SHA
0086 TLS_DH_RSA_WITH_CAMELLIA_256_CBC_SHA
0087 TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA
0088 TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA
0089 TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA
008a TLS_PSK_WITH_RC4_128_SHA
008b TLS_PSK_WITH_3DES_EDE_CBC_SHA
008c TLS_PSK_WITH_AES_128_CBC_SHA
008d TLS_PSK_WITH_AES_256_CBC_SHA
008e TLS_DHE_PSK_WITH_RC4_128_SHA
008f TLS_DHE_PSK_WITH_3DES_EDE_CBC_SHA
0090 TLS_DHE_PSK_WITH_AES_128_CBC_SHA
0091 TLS_DHE_PSK_WITH_AES_256_CBC_SHA
0092 TLS_RSA_PSK_WITH_RC4_128_SHA
0093 TLS_RSA_PSK_WITH_3DES_EDE_CBC_SHA
0094 TLS_RSA_PSK_WITH_AES_128_CBC_SHA
0095 TLS_RSA_PSK_WITH_AES_256_CBC_SHA
0096 TLS_RSA_WITH_SEED_CBC_SHA
0097 TLS_DH_DSS_WITH_SEED_CBC_SHA
0098 TLS_DH_RSA_WITH_SEED_CBC_SHA
0099 TLS_DHE_DSS_WITH_SEED_CBC_SHA
009a TLS_DHE_RSA_WITH_SEED_CBC_SHA
009b TLS_DH_anon_WITH_SEED_CBC_SHA
009c TLS_RSA_WITH_AES_128_GCM_SHA256
009d TLS_RSA_WITH_AES_256_GCM_SHA384
009e TLS_DHE_RSA_WITH_AES_128_GCM_SHA256
009f TLS_DHE_RSA_WITH_AES_256_GCM_SHA384
00a0 TLS_DH_RSA_WITH_AES_128_GCM_SHA256
00a1 TLS_DH_RSA_WITH_AES_256_GCM_SHA384
00a2 TLS_DHE_DSS_WITH_AES_128_GCM_SHA256
00a3 TLS_DHE_DSS_WITH_AES_256_GCM_SHA384
00a4 TLS_DH_DSS_WITH_AES_128_GCM_SHA256
00a5 TLS_DH_DSS_WITH_AES_256_GCM_SHA384
00a6 TLS_DH_anon_WITH_AES_128_GCM_SHA256
00a7 TLS_DH_anon_WITH_AES_256_GCM_SHA384
00a8 TLS_PSK_WITH_AES_128_GCM_SHA256
00a9 TLS_PSK_WITH_AES_256_GCM_SHA384
00aa TLS_DHE_PSK_WITH_AES_128_GCM_SHA256
00ab TLS_DHE_PSK_WITH_AES_256_GCM_SHA384
00ac TLS_RSA_PSK_WITH_AES_128_GCM_SHA256
00ad TLS_RSA_PSK_WITH_AES_256_GCM_SHA384
00ae TLS_PSK_WITH_AES_128_CBC_SHA256
00af TLS_PSK_WITH_AES_256_CBC_SHA384
00b0 TLS_PSK_WITH_NULL_SHA256
00b1 TLS_PSK_WITH_NULL_SHA384
00b2 TLS_DHE_PSK_WITH_AES_128_CBC_SHA256
00b3 TLS_DHE_PSK_WITH_AES_256_CBC_SHA384
00b4 TLS_DHE_PSK_WITH_NULL_SHA256
00b5 TLS_DHE_PSK_WITH_NULL_SHA384
00b6 TLS_RSA_PSK_WITH_AES_128_CBC_SHA256
00b7 TLS_RSA_PSK_WITH_AES_256_CBC_SHA384
00b8 TLS_RSA_PSK_WITH_NULL_SHA256
00b9 TLS_RSA_PSK_WITH_NULL_SHA384
00ba TLS_RSA_WITH_CAMELLIA_128_CBC_SHA256
00bb TLS_DH_DSS_WITH_CAMELLIA_128_CBC_SHA256
00bc TLS_DH_RSA_WITH_CAMELLIA_128_CBC_SHA256
00bd TLS_DHE_DSS_WITH_CAMELLIA_128_CBC_SHA256
00be TLS_DHE_RSA_WITH_CAMELLIA_128_CBC_SHA256
00bf TLS_DH_anon_WITH_CAMELLIA_128_CBC_SHA256
00c0 TLS_RSA_WITH_CAMELLIA_256_CBC_SHA256
00c1 TLS_DH_DSS_WITH_CAMELLIA_256_CBC_SHA256
00c2 TLS_DH_RSA_WITH_CAMELLIA_256_CBC_SHA256
00c3 TLS_DHE_DSS_WITH_CAMELLIA_256_CBC_SHA256
00c4 TLS_DHE_RSA_WITH_CAMELLIA_256_CBC_SHA256
00c5 TLS_DH_anon_WITH_CAMELLIA_256_CBC_SHA256
00c6 TLS_SM4_GCM_SM3
00c7 TLS_SM4_CCM_SM3
00ff TLS_EMPTY_RENEGOTIATION_INFO_SCSV
1301 TLS_AES_128_GCM_SHA256
1302 TLS_AES_256_GCM_SHA384
1303 TLS_CHACHA20_POLY1305_SHA256
1304 TLS_AES_128_CCM_SHA256
1305 TLS_AES_128_CCM_8_SHA256
1306 TLS_AEGIS_256_SHA512
1307 TLS_AEGIS_128L_SHA256
5600 TLS_FALLBACK_SCSV
c001 TLS_ECDH_ECDSA_WITH_NULL_SHA
c002 TLS_ECDH_ECDSA_WITH_RC4_128_SHA
c003 TLS_ECDH_ECDSA_WITH_3DES_EDE_CBC_SHA
c004 TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA
c005 TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA
c006 TLS_ECDHE_ECDSA_WITH_NULL_SHA
c007 TLS_ECDHE_ECDSA_WITH_RC4_128_SHA
c008 TLS_ECDHE_ECDSA_WITH_3DES_EDE_CBC_SHA
c009 TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA
c00a TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA
c00b TLS_ECDH_RSA_WITH_NULL_SHA
c00c TLS_ECDH_RSA_WITH_RC4_128_SHA
c00d TLS_ECDH_RSA_WITH_3DES_EDE_CBC_SHA
c00e TLS_ECDH_RSA_WITH_AES_128_CBC_SHA
c00f TLS_ECDH_RSA_WITH_AES_256_CBC_SHA
c010 TLS_ECDHE_RSA_WITH_NULL_SHA
c011 TLS_ECDHE_RSA_WITH_RC4_128_SHA
c012 TLS_ECDHE_RSA_WITH_3DES_EDE_CBC_SHA
c013 TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA
c014 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA
c015 TLS_ECDH_anon_WITH_NULL_SHA
c016 TLS_ECDH_anon_WITH_RC4_128_SHA
c017 TLS_ECDH_anon_WITH_3DES_EDE_CBC_SHA
c018 TLS_ECDH_anon_WITH_AES_128_CBC_SHA
c019 TLS_ECDH_anon_WITH_AES_256_CBC_SHA
c01a TLS_SRP_SHA_WITH_3DES_EDE_CBC_SHA
c01b TLS_SRP_SHA_RSA_WITH_3DES_EDE_CBC_SHA
c01c TLS_SRP_SHA_DSS_WITH_3DES_EDE_CBC_SHA
c01d TLS_SRP_SHA_WITH_AES_128_CBC_SHA
c01e TLS_SRP_SHA_RSA_WITH_AES_128_CBC_SHA
c01f TLS_SRP_SHA_DSS_WITH_AES_128_CBC_SHA
c020 TLS_SRP_SHA_WITH_AES_256_CBC_SHA
c021 TLS_SRP_SHA_RSA_WITH_AES_256_CBC_SHA
c022 TLS_SRP_SHA_DSS_WITH_AES_256_CBC_SHA
c023 TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA256
c024 TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA384
c025 TLS_ECDH_ECDSA_WITH_AES_128_CBC_SHA256
c026 TLS_ECDH_ECDSA_WITH_AES_256_CBC_SHA384
c027 TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA256
c028 TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA384
c029 TLS_ECDH_RSA_WITH_AES_128_CBC_SHA256
c02a TLS_ECDH_RSA_WITH_AES_256_CBC_SHA384
c02b TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256
c02c TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384
c02d TLS_ECDH_ECDSA_WITH_AES_128_GCM_SHA256
c02e TLS_ECDH_ECDSA_WITH_AES_256_GCM_SHA384
c02f TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256
c030 TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384
c031 TLS_ECDH_RSA_WITH_AES_128_GCM_SHA256
c032 TLS_ECDH_RSA_WITH_AES_256_GCM_SHA384
c033 TLS_ECDHE_PSK_WITH_RC4_128_SHA
c034 TLS_ECDHE_PSK_WITH_3DES_EDE_CBC_SHA
c035 TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA
c036 TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA
c037 TLS_ECDHE_PSK_WITH_AES_128_CBC_SHA256
c038 TLS_ECDHE_PSK_WITH_AES_256_CBC_SHA384
c039 TLS_ECDHE_PSK_WITH_NULL_SHA
c03a TLS_ECDHE_PSK_WITH_NULL_SHA256
c03b TLS_ECDHE_PSK_WITH_NULL_SHA384
c03c TLS_RSA_WITH_ARIA_128_CBC_SHA256
c03d TLS_RSA_WITH_ARIA_256_CBC_SHA384
c03e TLS_DH_DSS_WITH_ARIA_128_CBC_SHA256
c03f TLS_DH_DSS_WITH_ARIA_256_CBC_SHA384
c040 TLS_DH_RSA_WITH_ARIA_128_CBC_SHA256
c041 TLS_DH_RSA_WITH_ARIA_256_CBC_SHA384
c042 TLS_DHE_DSS_WITH_ARIA_128_CBC_SHA256
c043 TLS_DHE_DSS_WITH_ARIA_256_CBC_SHA384
c044 TLS_DHE_RSA_WITH_ARIA_128_CBC_SHA256
c045 TLS_DHE_RSA_WITH_ARIA_256_CBC_SHA384
c046 TLS_DH_anon_WITH_ARIA_128_CBC_SHA256
c047 TLS_DH_anon_WITH_ARIA_256_CBC_SHA384
c048 TLS_ECDHE_ECDSA_WITH_ARIA_128_CBC_SHA256
c049 TLS_ECDHE_ECDSA_WITH_ARIA_256_CBC_SHA384
c04a TLS_ECDH_ECDSA_WITH_ARIA_128_CBC_SHA256
c04b TLS_ECDH_ECDSA_WITH_ARIA_256_CBC_SHA384
c04c TLS_ECDHE_RSA_WITH_ARIA_128_CBC_SHA256
c04d TLS_ECDHE_RSA_WITH_ARIA_256_CBC_SHA384
c04e TLS_ECDH_RSA_WITH_ARIA_128_CBC_SHA256
c04f TLS_ECDH_RSA_WITH_ARIA_256_CBC_SHA384
c050 TLS_RSA_WITH_ARIA_128_GCM_SHA256
c051 TLS_RSA_WITH_ARIA_256_GCM_SHA384
c052 TLS_DHE_RSA_WITH_ARIA_128_GCM_SHA256
c053 TLS_DHE_RSA_WITH_ARIA_256_GCM_SHA384
c054 TLS_DH_RSA_WITH_ARIA_128_GCM_SHA256
c055 TLS_DH_RSA_WITH_ARIA_256_GCM_SHA384
c056 TLS_DHE_DSS_WITH_ARIA_128_GCM_SHA256
c057 TLS_DHE_DSS_WITH_ARIA_256_GCM_SHA384
c058 TLS_DH_DSS_WITH_ARIA_128_GCM_SHA256
c059 TLS_DH_DSS_WITH_ARIA_256_GCM_SHA384
c05a TLS_DH_anon_WITH_ARIA_128_GCM_SHA256
c05b TLS_DH_anon_WITH_ARIA_256_GCM_SHA384
c05c TLS_ECDHE_ECDSA_WITH_ARIA_128_GCM_SHA256
c05d TLS_ECDHE_ECDSA_WITH_ARIA_256_GCM_SHA384
c05e TLS_ECDH_ECDSA_WITH_ARIA_128_GCM_SHA256
c05f TLS_ECDH_ECDSA_WITH_ARIA_256_GCM_SHA384
c060 TLS_ECDHE_RSA_WITH_ARIA_128_GCM_SHA256
c061 TLS_ECDHE_RSA_WITH_ARIA_256_GCM_SHA384
c062 TLS_ECDH_RSA_WITH_ARIA_128_GCM_SHA256
c063 TLS_ECDH_RSA_WITH_ARIA_256_GCM_SHA384
c064 TLS_PSK_WITH_ARIA_128_CBC_SHA256
c065 TLS_PSK_WITH_ARIA_256_CBC_SHA384
c066 TLS_DHE_PSK_WITH_ARIA_128_CBC_SHA256
c067 TLS_DHE_PSK_WITH_ARIA_256_CBC_SHA384
c068 TLS_RSA_PSK_WITH_ARIA_128_CBC_SHA256
c069 TLS_RSA_PSK_WITH_ARIA_256_CBC_SHA384
c06a TLS_PSK_WITH_ARIA_128_GCM_SHA256
c06b TLS_PSK_WITH_ARIA_256_GCM_SHA384
c06c TLS_DHE_PSK_WITH_ARIA_128_GCM_SHA256
c06d TLS_DHE_PSK_WITH_ARIA_256_GCM_SHA384
c06e TLS_RSA_PSK_WITH_ARIA_128_GCM_SHA256
c06f TLS_RSA_PSK_WITH_ARIA_256_GCM_SHA384
c070 TLS_ECDHE_PSK_WITH_ARIA_128_CBC_SHA256
c071 TLS_ECDHE_PSK_WITH_ARIA_256_CBC_SHA384
c072 TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_CBC_SHA256
c073 TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_CBC_SHA384
c074 TLS_ECDH_ECDSA_WITH_CAMELLIA_128_CBC_SHA256
c075 TLS_ECDH_ECDSA_WITH_CAMELLIA_256_CBC_SHA384
c076 TLS_ECDHE_RSA_WITH_CAMELLIA_128_CBC_SHA256
c077 TLS_ECDHE_RSA_WITH_CAMELLIA_256_CBC_SHA384
c078 TLS_ECDH_RSA_WITH_CAMELLIA_128_CBC_SHA256
c079 TLS_ECDH_RSA_WITH_CAMELLIA_256_CBC_SHA384
c07a TLS_RSA_WITH_CAMELLIA_128_GCM_SHA256
c07b TLS_RSA_WITH_CAMELLIA_256_GCM_SHA384
c07c TLS_DHE_RSA_WITH_CAMELLIA_128_GCM_SHA256
c07d TLS_DHE_RSA_WITH_CAMELLIA_256_GCM_SHA384
c07e TLS_DH_RSA_WITH_CAMELLIA_128_GCM_SHA256
c07f TLS_DH_RSA_WITH_CAMELLIA_256_GCM_SHA384
c080 TLS_DHE_DSS_WITH_CAMELLIA_128_GCM_SHA256
c081 TLS_DHE_DSS_WITH_CAMELLIA_256_GCM_SHA384
c082 TLS_DH_DSS_WITH_CAMELLIA_128_GCM_SHA256
c083 TLS_DH_DSS_WITH_CAMELLIA_256_GCM_SHA384
c084 TLS_DH_anon_WITH_CAMELLIA_128_GCM_SHA256
c085 TLS_DH_anon_WITH_CAMELLIA_256_GCM_SHA384
c086 TLS_ECDHE_ECDSA_WITH_CAMELLIA_128_GCM_SHA256
c087 TLS_ECDHE_ECDSA_WITH_CAMELLIA_256_GCM_SHA384
c088 TLS_ECDH_ECDSA_WITH_CAMELLIA_128_GCM_SHA256
c089 TLS_ECDH_ECDSA_WITH_CAMELLIA_256_GCM_SHA384
c08a TLS_ECDHE_RSA_WITH_CAMELLIA_128_GCM_SHA256
c08b TLS_ECDHE_RSA_WITH_CAMELLIA_256_GCM_SHA384
c08c TLS_ECDH_RSA_WITH_CAMELLIA_128_GCM_SHA256
c08d TLS_ECDH_RSA_WITH_CAMELLIA_256_GCM_SHA384
c08e TLS_PSK_WITH_CAMELLIA_128_GCM_SHA256
c08f TLS_PSK_WITH_CAMELLIA_256_GCM_SHA384
c090 TLS_DHE_PSK_WITH_CAMELLIA_128_GCM_SHA256
c091 TLS_DHE_PSK_WITH_CAMELLIA_256_GCM_SHA384
c092 TLS_RSA_PSK_WITH_CAMELLIA_128_GCM_SHA256
c093 TLS_RSA_PSK_WITH_CAMELLIA_256_GCM_SHA384
c094 TLS_PSK_WITH_CAMELLIA_128_CBC_SHA256
c095 TLS_PSK_WITH_CAMELLIA_256_CBC_SHA384
c096 TLS_DHE_PSK_WITH_CAMELLIA_128_CBC_SHA256
c097 TLS_DHE_PSK_WITH_CAMELLIA_256_CBC_SHA384
c098 TLS_RSA_PSK_WITH_CAMELLIA_128_CBC_SHA256
c099 TLS_RSA_PSK_WITH_CAMELLIA_256_CBC_SHA384
c09a TLS_ECDHE_PSK_WITH_CAMELLIA_128_CBC_SHA256
c09b TLS_ECDHE_PSK_WITH_CAMELLIA_256_CBC_SHA384
c09c TLS_RSA_WITH_AES_128_CCM
c09d TLS_RSA_WITH_AES_256_CCM
c09e TLS_DHE_RSA_WITH_AES_128_CCM
c09f TLS_DHE_RSA_WITH_AES_256_CCM
c0a0 TLS_RSA_WITH_AES_128_CCM_8
c0a1 TLS_RSA_WITH_AES_256_CCM_8
c0a2 TLS_DHE_RSA_WITH_AES_128_CCM_8
c0a3 TLS_DHE_RSA_WITH_AES_256_CCM_8
c0a4 TLS_PSK_WITH_AES_128_CCM
c0a5 TLS_PSK_WITH_AES_256_CCM
c0a6 TLS_DHE_PSK_WITH_AES_128_CCM
c0a7 TLS_DHE_PSK_WITH_AES_256_CCM
c0a8 TLS_PSK_WITH_AES_128_CCM_8
c0a9 TLS_PSK_WITH_AES_256_CCM_8
c0aa TLS_PSK_DHE_WITH_AES_128_CCM_8
c0ab TLS_PSK_DHE_WITH_AES_256_CCM_8
c0ac TLS_ECDHE_ECDSA_WITH_AES_128_CCM
c0ad TLS_ECDHE_ECDSA_WITH_AES_256_CCM
c0ae TLS_ECDHE_ECDSA_WITH_AES_128_CCM_8
c0af TLS_ECDHE_ECDSA_WITH_AES_256_CCM_8
c0b0 TLS_ECCPWD_WITH_AES_128_GCM_SHA256
c0b1 TLS_ECCPWD_WITH_AES_256_GCM_SHA384
c0b2 TLS_ECCPWD_WITH_AES_128_CCM_SHA256
c0b3 TLS_ECCPWD_WITH_AES_256_CCM_SHA384
c0b4 TLS_SHA256_SHA256
c0b5 TLS_SHA384_SHA384
c100 TLS_GOSTR341112_256_WITH_KUZNYECHIK_CTR_OMAC
c101 TLS_GOSTR341112_256_WITH_MAGMA_CTR_OMAC
c102 TLS_GOSTR341112_256_WITH_28147_CNT_IMIT
c103 TLS_GOSTR341112_256_WITH_KUZNYECHIK_MGM_L
c104 TLS_GOSTR341112_256_WITH_MAGMA_MGM_L
c105 TLS_GOSTR341112_256_WITH_KUZNYECHIK_MGM_S
c106 TLS_GOSTR341112_256_WITH_MAGMA_MGM_S
cc13 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_OLD_SHA256
cc14 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_OLD_SHA256
cc15 TLS_DHE_RSA_WITH_CHACHA20_POLY1305_OLD_SHA256
cca8 TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256
cca9 TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256
ccaa TLS_DHE_RSA_WITH_CHACHA20_POLY1305_SHA256
ccab TLS_PSK_WITH_CHACHA20_POLY1305_SHA256
ccac TLS_ECDHE_PSK_WITH_CHACHA20_POLY1305_SHA256
ccad TLS_DHE_PSK_WITH_CHACHA20_POLY1305_SHA256
ccae TLS_RSA_PSK_WITH_CHACHA20_POLY1305_SHA256
d001 TLS_ECDHE_PSK_WITH_AES_128_GCM_SHA256
d002 TLS_ECDHE_PSK_WITH_AES_256_GCM_SHA384
d003 TLS_ECDHE_PSK_WITH_AES_128_CCM_8_SHA256
d005 TLS_ECDHE_PSK_WITH_AES_128_CCM_SHA256
fefe SSL_RSA_FIPS_WITH_DES_CBC_SHA
feff SSL_RSA_FIPS_WITH_3DES_EDE_CBC_SHA
ff85 TLS_GOSTR341112_256_WITH_28147_CNT_IMIT
ffe0 SSL_RSA_FIPS_WITH_3DES_EDE_CBC_SHA
ffe1 SSL_RSA_FIPS_WITH_DES_CBC_SHA
010080 SSL_CK_RC4_128_WITH_MD5
020080 SSL_CK_RC4_128_EXPORT40_WITH_MD5
030080 SSL_CK_RC2_128_CBC_WITH_MD5
040080 SSL_CK_RC2_128_CBC_EXPORT40_WITH_MD5
050080 SSL_CK_IDEA_128_CBC_WITH_MD5
060040 SSL_CK_DES_64_CBC_WITH_MD5
0700c0 SSL_CK_DES_192_EDE3_CBC_WITH_MD5
080080 SSL_CK_RC4_64_WITH_MD5
"""

# Codes above that IANA does not list: SSLv3-era Fortezza (RFC 6101 A.6, later reused by
# IANA for KRB5 from 0x1e), the withdrawn 56-bit EXPORT1024 draft, the pre-RFC 7905
# ChaCha20 draft code points (Chrome 2014-2016), old CryptoPro GOST (0xff85, 0x0080-83),
# Netscape's FIPS suites, and the SSLv2 CIPHER-KINDs (24-bit).
_NON_IANA: Final = frozenset(
    {0x1C, 0x1D, 0x60, 0x61, 0x62, 0x63, 0x64, 0x65, 0x66, 0x80, 0x81, 0x82, 0x83}
    | {0xCC13, 0xCC14, 0xCC15, 0xFEFE, 0xFEFF, 0xFF85, 0xFFE0, 0xFFE1}
)

# Key-exchange/authentication part of a suite name (before _WITH_) -> (kx, auth).
_KX_AUTH: Final = MappingProxyType(
    {
        "NULL": ("NULL", "NULL"),
        "RSA": ("RSA", "RSA"),
        "RSA_FIPS": ("RSA", "RSA"),
        "DH_DSS": ("DH", "DSS"),
        "DH_RSA": ("DH", "RSA"),
        "DHE_DSS": ("DHE", "DSS"),
        "DHE_RSA": ("DHE", "RSA"),
        "DH_anon": ("DHE", "anon"),
        "ECDH_ECDSA": ("ECDH", "ECDSA"),
        "ECDH_RSA": ("ECDH", "RSA"),
        "ECDHE_ECDSA": ("ECDHE", "ECDSA"),
        "ECDHE_RSA": ("ECDHE", "RSA"),
        "ECDH_anon": ("ECDHE", "anon"),
        "FORTEZZA_KEA": ("FORTEZZA", "FORTEZZA"),
        "KRB5": ("KRB5", "KRB5"),
        "PSK": ("PSK", "PSK"),
        "DHE_PSK": ("DHE_PSK", "PSK"),
        "PSK_DHE": ("DHE_PSK", "PSK"),
        "RSA_PSK": ("RSA_PSK", "PSK"),
        "ECDHE_PSK": ("ECDHE_PSK", "PSK"),
        "SRP_SHA": ("SRP", "SRP"),
        "SRP_SHA_RSA": ("SRP", "RSA"),
        "SRP_SHA_DSS": ("SRP", "DSS"),
        "ECCPWD": ("ECCPWD", "ECCPWD"),
        "GOSTR341094": ("GOST", "GOST"),
        "GOSTR341001": ("GOST", "GOST"),
        "GOSTR341112_256": ("GOST", "GOST"),
        "CK": ("RSA", "RSA"),  # SSLv2: RSA key exchange, RSA server certificate
    }
)

_MACS: Final = frozenset(
    {"NULL", "MD5", "SHA", "SHA256", "SHA384", "SHA512", "SM3", "OMAC", "IMIT", "GOSTR3411"}
)


def _describe(code: int, name: str) -> CipherSuite:
    """Split an IANA-style suite name into its parts and flags."""
    body = name.split("_", 1)[1]  # drop TLS_/SSL_
    if body.endswith("_SCSV"):
        return CipherSuite(code, name, "SCSV", "SCSV", "NONE", "NONE", scsv=True)
    sslv2 = body.startswith("CK_")  # SSLv2 CIPHER-KIND: SSL_CK_<cipher>_WITH_<mac>
    if sslv2:
        kx_auth, rest = "CK", body[3:]
        cipher, _, mac = rest.rpartition("_WITH_")
    else:
        # TLS 1.3 style names (and SM4 / integrity-only suites) have no _WITH_: they fix
        # only the cipher and the hash.
        kx_auth, _, rest = body.rpartition("_WITH_")
        cipher, _, mac = rest.rpartition("_")
    export = "EXPORT" in body
    kx_auth = kx_auth.replace("_EXPORT1024", "").replace("_EXPORT", "")
    kx, auth = _KX_AUTH[kx_auth] if kx_auth else ("ANY", "ANY")
    if mac not in _MACS:
        # CCM, CCM_8, MGM_L/_S: AEAD named without a hash; the PRF is SHA-256 (RFC 6655
        # section 3) or Streebog-256 for GOST (RFC 9367).
        cipher, mac = rest, ("STREEBOG256" if kx == "GOST" else "SHA256")
    cipher = cipher.replace("_OLD", "").replace("_EXPORT40", "")
    if cipher in ("SHA256", "SHA384"):  # RFC 9150 integrity-only suites
        cipher = "NULL"
    aead = any(m in cipher for m in ("GCM", "CCM", "POLY1305", "MGM", "AEGIS"))
    return CipherSuite(
        code=code,
        name=name,
        kx=kx,
        auth=auth,
        cipher=cipher,
        mac=mac,
        export=export,
        anonymous=auth in ("anon", "NULL"),
        null_encryption=cipher == "NULL",
        rc4=cipher.startswith("RC4"),
        des=cipher.startswith("DES") and "EDE" not in cipher and "192" not in cipher,
        triple_des="3DES" in cipher or "EDE3" in cipher,
        md5_mac=mac == "MD5",
        aead=aead,
        iana=code not in _NON_IANA and code <= 0xFFFF,
    )


def _build_suites() -> MappingProxyType[int, CipherSuite]:
    table: dict[int, CipherSuite] = {}
    for line in _SUITE_NAMES.split():
        if "_" not in line:
            code = int(line, 16)
            continue
        table[code] = _describe(code, line)
    return MappingProxyType(table)


CIPHER_SUITES: Final = _build_suites()
"""Every known cipher suite, keyed by its 16-bit code (24-bit for SSLv2 CIPHER-KINDs)."""


@lru_cache(maxsize=4096)
def cipher_suite(code: int) -> CipherSuite:
    """The suite for ``code``; total, never raises.

    An SSLv2 cipher spec ``0x00XXYY`` is the TLS suite ``0xXXYY`` (RFC 5246 appendix E.2),
    which as an int is the same number. Unknown and GREASE codes give a suite named
    ``unknown-0xNNNN`` / ``GREASE-0xNANA`` with kx/auth/cipher/mac ``UNKNOWN``, no flags.
    """
    known = CIPHER_SUITES.get(code)
    if known is not None:
        return known
    digits = 4 if code <= 0xFFFF else 6
    name = f"GREASE-0x{code:04x}" if is_grease(code) else _unknown(code, digits)
    return CipherSuite(code, name, "UNKNOWN", "UNKNOWN", "UNKNOWN", "UNKNOWN", iana=False)


def cipher_suite_name(code: int) -> str:
    """IANA name of a suite (``TLS_AES_128_GCM_SHA256``), else ``unknown-0xNNNN``."""
    return cipher_suite(code).name


# --------------------------------------------------------------------------------------
# Extension types: IANA "TLS ExtensionType Values" (RFC 8446 4.2, RFC 6066, RFC 7301,
# RFC 8422, RFC 7627, RFC 8879, RFC 9345, draft-ietf-tls-esni); 0x3374 (NPN), 0x4469 and
# 0x44cd (ALPS), 0x7550 (Channel ID) and 0xffce (ESNI draft) are common unregistered ones.

EXTENSION_TYPES: Final = MappingProxyType(
    {
        0: "server_name",
        1: "max_fragment_length",
        2: "client_certificate_url",
        3: "trusted_ca_keys",
        4: "truncated_hmac",
        5: "status_request",
        6: "user_mapping",
        7: "client_authz",
        8: "server_authz",
        9: "cert_type",
        10: "supported_groups",
        11: "ec_point_formats",
        12: "srp",
        13: "signature_algorithms",
        14: "use_srtp",
        15: "heartbeat",
        16: "application_layer_protocol_negotiation",
        17: "status_request_v2",
        18: "signed_certificate_timestamp",
        19: "client_certificate_type",
        20: "server_certificate_type",
        21: "padding",
        22: "encrypt_then_mac",
        23: "extended_master_secret",
        24: "token_binding",
        25: "cached_info",
        26: "tls_lts",
        27: "compress_certificate",
        28: "record_size_limit",
        29: "pwd_protect",
        30: "pwd_clear",
        31: "password_salt",
        32: "ticket_pinning",
        33: "tls_cert_with_extern_psk",
        34: "delegated_credential",
        35: "session_ticket",
        36: "TLMSP",
        37: "TLMSP_proxying",
        38: "TLMSP_delegate",
        39: "supported_ekt_ciphers",
        41: "pre_shared_key",
        42: "early_data",
        43: "supported_versions",
        44: "cookie",
        45: "psk_key_exchange_modes",
        47: "certificate_authorities",
        48: "oid_filters",
        49: "post_handshake_auth",
        50: "signature_algorithms_cert",
        51: "key_share",
        52: "transparency_info",
        53: "connection_id_deprecated",
        54: "connection_id",
        55: "external_id_hash",
        56: "external_session_id",
        57: "quic_transport_parameters",
        58: "ticket_request",
        59: "dnssec_chain",
        60: "sequence_number_encryption_algorithms",
        61: "rrc",
        62: "tls_flags",
        0x3374: "next_protocol_negotiation",
        0x4469: "application_settings_old",
        0x44CD: "application_settings",
        0x7550: "channel_id",
        0xFD00: "ech_outer_extensions",
        0xFE0D: "encrypted_client_hello",
        0xFF01: "renegotiation_info",
        0xFFCE: "encrypted_server_name",
    }
)


def extension_name(code: int) -> str:
    """Name of an extension type (``server_name``), ``GREASE-0xNANA`` or ``unknown-0xNNNN``."""
    return _lookup16(EXTENSION_TYPES, code)


# --------------------------------------------------------------------------------------
# Supported groups: IANA "TLS Supported Groups" (RFC 8422 5.1.1, RFC 7919, RFC 8734,
# RFC 9189, draft-ietf-tls-mlkem / -ecdhe-mlkem; 0x6399/0x639a are the withdrawn Kyber
# draft code points Chrome 124-130 and Cloudflare sent).


@dataclass(frozen=True, slots=True)
class Group:
    """A named group. ``kind``: ``ec`` (elliptic curve incl. x25519/x448), ``ffdhe``
    (finite field, RFC 7919), ``pq`` (pure ML-KEM), ``hybrid`` (ECDHE + ML-KEM/Kyber),
    ``explicit`` (RFC 8422 arbitrary explicit curves), ``unknown``."""

    code: int
    name: str
    kind: str


_GROUP_ROWS: Final = (
    (1, "sect163k1"), (2, "sect163r1"), (3, "sect163r2"), (4, "sect193r1"),
    (5, "sect193r2"), (6, "sect233k1"), (7, "sect233r1"), (8, "sect239k1"),
    (9, "sect283k1"), (10, "sect283r1"), (11, "sect409k1"), (12, "sect409r1"),
    (13, "sect571k1"), (14, "sect571r1"), (15, "secp160k1"), (16, "secp160r1"),
    (17, "secp160r2"), (18, "secp192k1"), (19, "secp192r1"), (20, "secp224k1"),
    (21, "secp224r1"), (22, "secp256k1"), (23, "secp256r1"), (24, "secp384r1"),
    (25, "secp521r1"), (26, "brainpoolP256r1"), (27, "brainpoolP384r1"),
    (28, "brainpoolP512r1"), (29, "x25519"), (30, "x448"), (31, "brainpoolP256r1tls13"),
    (32, "brainpoolP384r1tls13"), (33, "brainpoolP512r1tls13"), (34, "GC256A"),
    (35, "GC256B"), (36, "GC256C"), (37, "GC256D"), (38, "GC512A"), (39, "GC512B"),
    (40, "GC512C"), (41, "curveSM2"),
    (256, "ffdhe2048"), (257, "ffdhe3072"), (258, "ffdhe4096"), (259, "ffdhe6144"),
    (260, "ffdhe8192"),
    (512, "MLKEM512"), (513, "MLKEM768"), (514, "MLKEM1024"),
    (0x11EB, "SecP256r1MLKEM768"), (0x11EC, "X25519MLKEM768"),
    (0x11ED, "SecP384r1MLKEM1024"),
    (0x6399, "X25519Kyber768Draft00"), (0x639A, "SecP256r1Kyber768Draft00"),
    (0xFF01, "arbitrary_explicit_prime_curves"), (0xFF02, "arbitrary_explicit_char2_curves"),
)  # fmt: skip


def _group_kind(code: int) -> str:
    if 256 <= code <= 511:
        return "ffdhe"
    if 512 <= code <= 514:
        return "pq"
    if code in (0x11EB, 0x11EC, 0x11ED, 0x6399, 0x639A):
        return "hybrid"
    if code in (0xFF01, 0xFF02):
        return "explicit"
    return "ec"


SUPPORTED_GROUPS: Final = MappingProxyType(
    {code: Group(code, name, _group_kind(code)) for code, name in _GROUP_ROWS}
)


def group(code: int) -> Group:
    """The named group for ``code``; total (``unknown-0xNNNN`` / ``GREASE-0xNANA``)."""
    known = SUPPORTED_GROUPS.get(code)
    if known is not None:
        return known
    name = f"GREASE-0x{code:04x}" if is_grease(code) else _unknown(code)
    return Group(code, name, "unknown")


def group_name(code: int) -> str:
    """Name of a supported group (``x25519``, ``ffdhe2048``, ``X25519MLKEM768``)."""
    return group(code).name


# --------------------------------------------------------------------------------------
# EC point formats: IANA "TLS EC Point Formats" (RFC 8422 5.1.2).

EC_POINT_FORMATS: Final = MappingProxyType(
    {0: "uncompressed", 1: "ansiX962_compressed_prime", 2: "ansiX962_compressed_char2"}
)


def ec_point_format_name(code: int) -> str:
    """Name of an EC point format (8-bit code)."""
    return EC_POINT_FORMATS.get(code) or _unknown(code, 2)


# --------------------------------------------------------------------------------------
# Signature schemes: IANA "TLS SignatureScheme" (RFC 8446 4.2.3, RFC 8734, RFC 8998,
# draft-ietf-tls-mldsa). TLS 1.2 (hash, signature) pairs from "TLS HashAlgorithm" and
# "TLS SignatureAlgorithm" (RFC 5246 7.4.1.4.1) that have no scheme name are named
# ``<signature>_<hash>`` (e.g. ``dsa_sha256``, ``rsa_md5``).

SIGNATURE_SCHEMES: Final = MappingProxyType(
    {
        0x0201: "rsa_pkcs1_sha1",
        0x0203: "ecdsa_sha1",
        0x0401: "rsa_pkcs1_sha256",
        0x0501: "rsa_pkcs1_sha384",
        0x0601: "rsa_pkcs1_sha512",
        0x0403: "ecdsa_secp256r1_sha256",
        0x0503: "ecdsa_secp384r1_sha384",
        0x0603: "ecdsa_secp521r1_sha512",
        0x0708: "sm2sig_sm3",
        0x0709: "gostr34102012_256a",
        0x070A: "gostr34102012_256b",
        0x070B: "gostr34102012_256c",
        0x070C: "gostr34102012_256d",
        0x070D: "gostr34102012_512a",
        0x070E: "gostr34102012_512b",
        0x070F: "gostr34102012_512c",
        0x0804: "rsa_pss_rsae_sha256",
        0x0805: "rsa_pss_rsae_sha384",
        0x0806: "rsa_pss_rsae_sha512",
        0x0807: "ed25519",
        0x0808: "ed448",
        0x0809: "rsa_pss_pss_sha256",
        0x080A: "rsa_pss_pss_sha384",
        0x080B: "rsa_pss_pss_sha512",
        0x081A: "ecdsa_brainpoolP256r1tls13_sha256",
        0x081B: "ecdsa_brainpoolP384r1tls13_sha384",
        0x081C: "ecdsa_brainpoolP512r1tls13_sha512",
        0x0904: "mldsa44",
        0x0905: "mldsa65",
        0x0906: "mldsa87",
    }
)

_HASHES: Final = MappingProxyType(
    {0: "none", 1: "md5", 2: "sha1", 3: "sha224", 4: "sha256", 5: "sha384", 6: "sha512"}
)
_SIGNATURES: Final = MappingProxyType({0: "anonymous", 1: "rsa", 2: "dsa", 3: "ecdsa"})


def signature_scheme_name(code: int) -> str:
    """Name of a SignatureScheme or TLS 1.2 (hash, signature) pair; total."""
    known = SIGNATURE_SCHEMES.get(code)
    if known is not None:
        return known
    hash_name, sig_name = _HASHES.get(code >> 8), _SIGNATURES.get(code & 0xFF)
    if hash_name is not None and sig_name is not None:
        return f"{sig_name}_{hash_name}"
    return _lookup16(MappingProxyType({}), code)


# --------------------------------------------------------------------------------------
# Alerts: IANA "TLS Alerts" (RFC 8446 6, RFC 5246 7.2, RFC 6066, RFC 7301, RFC 9147,
# draft-ietf-tls-esni); levels from RFC 5246 7.2.

ALERT_LEVELS: Final = MappingProxyType({1: "warning", 2: "fatal"})

ALERT_DESCRIPTIONS: Final = MappingProxyType(
    {
        0: "close_notify",
        10: "unexpected_message",
        20: "bad_record_mac",
        21: "decryption_failed",
        22: "record_overflow",
        30: "decompression_failure",
        40: "handshake_failure",
        41: "no_certificate",
        42: "bad_certificate",
        43: "unsupported_certificate",
        44: "certificate_revoked",
        45: "certificate_expired",
        46: "certificate_unknown",
        47: "illegal_parameter",
        48: "unknown_ca",
        49: "access_denied",
        50: "decode_error",
        51: "decrypt_error",
        52: "too_many_cids_requested",
        60: "export_restriction",
        70: "protocol_version",
        71: "insufficient_security",
        80: "internal_error",
        86: "inappropriate_fallback",
        90: "user_canceled",
        100: "no_renegotiation",
        109: "missing_extension",
        110: "unsupported_extension",
        111: "certificate_unobtainable",
        112: "unrecognized_name",
        113: "bad_certificate_status_response",
        114: "bad_certificate_hash_value",
        115: "unknown_psk_identity",
        116: "certificate_required",
        117: "general_error",
        120: "no_application_protocol",
        121: "ech_required",
    }
)


def alert_level_name(code: int) -> str:
    """``warning``/``fatal``, else ``unknown-0xNN``."""
    return ALERT_LEVELS.get(code) or _unknown(code, 2)


def alert_description_name(code: int) -> str:
    """Name of an alert description (``handshake_failure``), else ``unknown-0xNN``."""
    return ALERT_DESCRIPTIONS.get(code) or _unknown(code, 2)


# --------------------------------------------------------------------------------------
# Handshake types: IANA "TLS HandshakeType" (RFC 8446 4, RFC 5246 7.4, RFC 6066,
# RFC 6347, RFC 8879, RFC 9147).

HANDSHAKE_TYPES: Final = MappingProxyType(
    {
        0: "hello_request",
        1: "client_hello",
        2: "server_hello",
        3: "hello_verify_request",
        4: "new_session_ticket",
        5: "end_of_early_data",
        6: "hello_retry_request",
        8: "encrypted_extensions",
        9: "request_connection_id",
        10: "new_connection_id",
        11: "certificate",
        12: "server_key_exchange",
        13: "certificate_request",
        14: "server_hello_done",
        15: "certificate_verify",
        16: "client_key_exchange",
        17: "client_certificate_request",
        20: "finished",
        21: "certificate_url",
        22: "certificate_status",
        23: "supplemental_data",
        24: "key_update",
        25: "compressed_certificate",
        26: "ekt_key",
        67: "next_protocol",  # NPN draft, not IANA
        254: "message_hash",
    }
)


def handshake_type_name(code: int) -> str:
    """Name of a handshake message type, else ``unknown-0xNN``."""
    return HANDSHAKE_TYPES.get(code) or _unknown(code, 2)


# --------------------------------------------------------------------------------------
# Content types: IANA "TLS ContentType" (RFC 8446 5.1, RFC 6520, RFC 9146, RFC 9147).

CONTENT_TYPES: Final = MappingProxyType(
    {
        20: "change_cipher_spec",
        21: "alert",
        22: "handshake",
        23: "application_data",
        24: "heartbeat",
        25: "tls12_cid",
        26: "ack",
        27: "return_routability_check",
    }
)


def content_type_name(code: int) -> str:
    """Name of a record content type, else ``unknown-0xNN``."""
    return CONTENT_TYPES.get(code) or _unknown(code, 2)
