"""Loading the policy YAML: good files, and one exact line per problem for bad ones."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from processors.policy import Policy
from processors.policy_file import PolicyError, load_policy

GOOD = """\
# certwatch policy
profile: nist-800-52r2
trust:
  system: false
  ca_files: [certs/private-root.pem]
pins:
  - host: "*.bank.example"
    sha256: ["AB:CD:{hex}"]
rules:
  cert.expiring_soon:
    days: 30
  tls.weak_cipher:
    forbid: [rc4, cbc]
  traffic.spike:
    enabled: false
suppress:
  default: 2h
  cert.expired: 1d
"""


def write(tmp_path: Path, text: str | bytes, name: str = "policy.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    return path


def problems(path: Path) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        load_policy(path)
    assert str(caught.value) == "\n".join(caught.value.problems)
    return caught.value.problems


def test_a_good_policy_loads(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    root = write(tmp_path / "certs", "PEM", "private-root.pem")
    path = write(tmp_path, GOOD.replace("{hex}", "ef" * 30))
    policy = load_policy(path)
    assert policy.profile == "nist-800-52r2"
    assert policy.trust.system is False
    assert policy.trust.ca_files == [root]  # relative to the policy file, not the cwd
    assert policy.pins[0].sha256 == ["abcd" + "ef" * 30]
    assert policy.rules.expiring_soon.days == 30
    assert policy.rules.weak_cipher.forbid == ["rc4", "cbc"]
    assert not policy.rules.enabled("traffic.spike")
    assert policy.suppression("cert.expired") == timedelta(days=1)
    assert policy.suppression("tls.weak_dh") == timedelta(hours=2)


@pytest.mark.parametrize("text", ["", "\n\n", "# nothing set yet\n", "---\n", "~\n"])
def test_an_empty_file_is_the_default_policy(tmp_path: Path, text: str) -> None:
    assert load_policy(write(tmp_path, text)) == Policy()


def test_a_bad_value_names_file_line_setting_and_value(tmp_path: Path) -> None:
    path = write(tmp_path, "profile: pci-dss-4\n\nrules:\n  cert.expiring_soon:\n"
                           "    enabled: true\n    days: soon\n")
    assert problems(path) == [
        f"{path}:6: rules.cert.expiring_soon.days: Input should be a valid integer (got 'soon')"]


def test_an_unknown_key_is_an_error_that_lists_the_allowed_keys(tmp_path: Path) -> None:
    path = write(tmp_path, "profiles: pci-dss-4\n")
    assert problems(path) == [
        f"{path}:1: profiles: unknown key (extra inputs are not permitted); allowed here: "
        "allowlist, pins, profile, rules, suppress, trust"]


def test_a_misspelt_rule_name(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  cert.expird:\n    enabled: false\n")
    (problem,) = problems(path)
    assert problem.startswith(f"{path}:2: rules.cert.expird: unknown key (extra inputs are "
                              "not permitted); allowed here: cert.changed, cert.expired, ")
    assert problem.endswith(", tls.weak_dh, traffic.spike, traffic.unexpected_source")


def test_unknown_key_inside_a_list_item(tmp_path: Path) -> None:
    path = write(tmp_path, "pins:\n  - host: a.example\n    issuer: CN=x\n"
                           "  - host: b.example\n    sha: abc\n")
    assert problems(path) == [
        f"{path}:5: pins[1].sha: unknown key (extra inputs are not permitted); allowed here: "
        "host, issuer, sha256, spki_sha256"]


def test_missing_and_model_level_errors_point_at_the_list_item(tmp_path: Path) -> None:
    path = write(tmp_path, "pins:\n  - issuer: CN=x\n  - host: b.example\n")
    assert problems(path) == [
        f"{path}:2: pins[0].host: Field required",
        f"{path}:3: pins[1]: a pin needs at least one of sha256, spki_sha256 or issuer",
    ]


def test_every_problem_is_reported_in_file_order(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  tls.weak_cipher:\n    forbid: [rc4, rc5]\n"
                           "profile: pci\nsuppress:\n  default: never\n")
    assert problems(path) == [
        f"{path}:3: rules.tls.weak_cipher.forbid[1]: Input should be 'null', 'export', "
        "'anon', 'rc4', 'des', '3des', 'md5', 'cbc', 'sha1' or 'no_forward_secrecy' "
        "(got 'rc5')",
        f"{path}:4: profile: Input should be 'pci-dss-4', 'nist-800-52r2', "
        "'mozilla-intermediate' or 'mozilla-modern' (got 'pci')",
        f"{path}:6: suppress.default: 'never' is not a duration, like 90s, 15m, 1h or 14d",
    ]


def test_attribute_names_are_located_too(tmp_path: Path) -> None:
    # Rules accepts the attribute name as well as the rule name (populate_by_name): the
    # problem is reported in the operator's own spelling.
    path = write(tmp_path, "rules:\n  expiring_soon:\n    days: -1\n")
    assert problems(path) == [
        f"{path}:3: rules.expiring_soon.days: Input should be greater than or equal to 0 "
        "(got -1)"]


def test_a_duplicate_key_is_an_error(tmp_path: Path) -> None:
    path = write(tmp_path, "rules:\n  cert.expired:\n    enabled: true\n"
                           "  cert.expired:\n    enabled: false\n")
    assert problems(path) == [f"{path}:4: rules.cert.expired: duplicate key (first at line 2)"]


@pytest.mark.parametrize(("text", "expected"), [
    ("rules:\n  cert.expired: {enabled: true\n", ":3: invalid YAML: while parsing a flow "
     "mapping, expected ',' or '}', but got '<stream end>'"),
    ("profile: [pci\n", ":2: invalid YAML: while parsing a flow sequence, expected ',' or "
     "']', but got '<stream end>'"),
    ("a: 1\n---\nb: 2\n", ":2: invalid YAML: expected a single document in the stream, but "
     "found another document"),
    ("x: !!python/object:os.system ls\n", ":1: invalid YAML: could not determine a "
     "constructor for the tag 'tag:yaml.org,2002:python/object:os.system'"),
])
def test_invalid_yaml_is_one_line_with_its_line_number(tmp_path: Path, text: str,
                                                       expected: str) -> None:
    path = write(tmp_path, text)
    assert problems(path) == [f"{path}{expected}"]


def test_the_policy_must_be_a_mapping(tmp_path: Path) -> None:
    path = write(tmp_path, "- profile\n- rules\n")
    assert problems(path) == [
        f"{path}:1: the policy must be a mapping of settings (key: value), not a list"]


def test_unreadable_files(tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    assert problems(missing) == [f"{missing}: cannot read the policy: No such file or directory"]
    assert problems(tmp_path) == [f"{tmp_path}: cannot read the policy: Is a directory"]
    binary = write(tmp_path, b"profile: pci-dss-4\n\xff\xfe\n")
    assert problems(binary) == [f"{binary}:2: not UTF-8 text (invalid start byte)"]


def test_ca_files_must_exist_relative_to_the_policy(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                    ) -> None:
    (tmp_path / "conf").mkdir()
    write(tmp_path, "PEM", "root.pem")  # beside the cwd, not beside the policy
    monkeypatch.chdir(tmp_path)
    path = write(tmp_path / "conf", "trust:\n  ca_files:\n    - root.pem\n")
    assert problems(path) == [
        f"{path}:3: trust.ca_files[0]: {tmp_path / 'conf' / 'root.pem'} does not exist "
        "(relative paths are read from the policy file's folder)"]
    absolute = write(tmp_path / "conf", f"trust:\n  ca_files: [{tmp_path / 'root.pem'}]\n",
                     "abs.yaml")
    assert load_policy(absolute).trust.ca_files == [tmp_path / "root.pem"]


def test_a_folder_is_not_a_ca_file(tmp_path: Path) -> None:
    (tmp_path / "certs").mkdir()
    path = write(tmp_path, "trust:\n  ca_files: [certs]\n")
    assert problems(path) == [
        f"{path}:2: trust.ca_files[0]: {tmp_path / 'certs'} is not a file "
        "(relative paths are read from the policy file's folder)"]
