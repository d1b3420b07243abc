"""Compliance profiles: what each one sets, where each threshold comes from, and precedence
(explicit policy value > profile > built-in default)."""

from __future__ import annotations

import dataclasses
from typing import Any, get_args

import pytest

from processors import policy as policy_module
from processors.policy import Policy
from processors.profiles import DEFAULTS, PROFILES, Thresholds, resolve

BASELINE = {"null", "export", "anon", "rc4", "des", "3des", "md5"}

# What the documents say (module docstring of processors.profiles has the sources).
EXPECTED: dict[str, dict[str, Any]] = {
    "pci-dss-4": dict(min_version="1.2", forbidden_ciphers=BASELINE, min_rsa_bits=2048,
                      min_dsa_bits=2048, min_ec_bits=224, min_dh_bits=2048, min_dh_ec_bits=224),
    "nist-800-52r2": dict(min_version="1.2", forbidden_ciphers=BASELINE | {"no_forward_secrecy"},
                          min_rsa_bits=2048, min_dsa_bits=2048, min_ec_bits=224,
                          min_dh_bits=2048, min_dh_ec_bits=224),
    "mozilla-intermediate": dict(min_version="1.2",
                                 forbidden_ciphers=BASELINE | {"cbc", "sha1",
                                                               "no_forward_secrecy"},
                                 min_rsa_bits=2048, min_ec_bits=256, min_dh_bits=2048,
                                 min_dh_ec_bits=256),
    "mozilla-modern": dict(min_version="1.3",
                           forbidden_ciphers=BASELINE | {"cbc", "sha1", "no_forward_secrecy"},
                           min_ec_bits=256, min_dh_ec_bits=256),
}

REQUIREMENT_PREFIX = {
    "pci-dss-4": "PCI DSS v4.0 req. 4.2.1: strong cryptography",
    "nist-800-52r2": "NIST SP 800-52r2 §",
    "mozilla-intermediate": "Mozilla Server Side TLS 5.7 intermediate: ",
    "mozilla-modern": "Mozilla Server Side TLS 5.7 modern: ",
}


def test_the_profiles_are_exactly_those_the_policy_accepts() -> None:
    assert set(PROFILES) == set(get_args(policy_module.Profile))


def test_no_profile_gives_the_built_in_defaults_with_no_requirement() -> None:
    thresholds = resolve(Policy())
    assert thresholds == DEFAULTS
    assert thresholds.min_version == "1.2"
    assert thresholds.forbidden_ciphers == BASELINE
    assert (thresholds.min_rsa_bits, thresholds.min_dsa_bits, thresholds.min_ec_bits) == (
        2048, 2048, 224)
    assert {"md5", "sha1"} <= thresholds.forbidden_hashes
    assert (thresholds.min_dh_bits, thresholds.min_dh_ec_bits) == (2048, 224)
    assert all(thresholds.requirement(f.name) is None for f in dataclasses.fields(Thresholds))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_profile_sets_its_thresholds_and_names_its_requirements(name: str) -> None:
    thresholds = resolve(Policy(profile=name))
    assert thresholds.profile == name
    for field, value in EXPECTED[name].items():
        assert getattr(thresholds, field) == value, field
        requirement = thresholds.requirement(field)
        assert requirement is not None and requirement.startswith(REQUIREMENT_PREFIX[name])
    assert {"md5", "sha1"} <= thresholds.forbidden_hashes


def test_requirement_texts_cite_the_right_clause() -> None:
    nist = resolve(Policy(profile="nist-800-52r2"))
    assert nist.requirement("min_version") == (
        "NIST SP 800-52r2 §3.1: servers shall support TLS 1.2 and should not use TLS 1.0/1.1 "
        "(SSL 2.0/3.0 shall not be used)")
    assert (nist.requirement("forbidden_ciphers") or "").startswith("NIST SP 800-52r2 §3.3.1")
    modern = resolve(Policy(profile="mozilla-modern"))
    assert modern.requirement("min_version") == "Mozilla Server Side TLS 5.7 modern: TLS 1.3 only"
    pci = resolve(Policy(profile="pci-dss-4"))
    assert "112-bit" in (pci.requirement("min_rsa_bits") or "")


def test_mozilla_requires_sha256_or_better_signatures() -> None:
    # Mozilla lists only SHA-256/384/512 signatures: SHA-224 is out too.
    for name in ("mozilla-intermediate", "mozilla-modern"):
        assert "sha224" in resolve(Policy(profile=name)).forbidden_hashes
    assert "sha224" not in resolve(Policy(profile="nist-800-52r2")).forbidden_hashes


def test_what_a_profile_does_not_say_falls_back_to_the_default_without_a_requirement() -> None:
    # Mozilla modern admits only ECDSA certificates and no finite-field DH: it sets no RSA,
    # DSA or DH size, so the built-in minimums apply and no Mozilla requirement is quoted.
    modern = resolve(Policy(profile="mozilla-modern"))
    assert (modern.min_rsa_bits, modern.min_dsa_bits, modern.min_dh_bits) == (2048, 2048, 2048)
    for field in ("min_rsa_bits", "min_dsa_bits", "min_dh_bits"):
        assert modern.requirement(field) is None


def test_an_explicit_value_wins_over_the_profile_and_quotes_no_requirement() -> None:
    policy = Policy.model_validate({
        "profile": "mozilla-modern",
        "rules": {"tls.deprecated_version": {"min_version": "1.2"},
                  "tls.weak_cipher": {"forbid": []},
                  "cert.weak_key": {"min_ec_bits": 384},
                  "cert.weak_signature": {"forbidden_hashes": ["md5"]}},
    })
    thresholds = resolve(policy)
    assert thresholds.min_version == "1.2"
    assert thresholds.forbidden_ciphers == frozenset()  # an empty list is a value
    assert thresholds.min_ec_bits == 384
    assert thresholds.forbidden_hashes == {"md5"}
    for field in ("min_version", "forbidden_ciphers", "min_ec_bits", "forbidden_hashes"):
        assert thresholds.requirement(field) is None, field
    # What was not written still comes from the profile, with its requirement.
    assert thresholds.min_dh_ec_bits == 256
    assert (thresholds.requirement("min_dh_ec_bits") or "").startswith(
        "Mozilla Server Side TLS 5.7 modern")


def test_an_explicit_value_without_a_profile_wins_over_the_default() -> None:
    policy = Policy.model_validate({"rules": {"cert.weak_key": {"min_rsa_bits": 3072}}})
    assert resolve(policy).min_rsa_bits == 3072
    assert resolve(policy).min_dsa_bits == 2048


def test_profiles_and_thresholds_are_frozen() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        PROFILES["pci-dss-4"].min_version = "1.0"  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.min_version = "1.0"  # type: ignore[misc]
    assert hash(resolve(Policy(profile="pci-dss-4"))) == hash(resolve(Policy(profile="pci-dss-4")))
