"""Dropping root after opening the capture, and the refusal to run as root by default.

The real drop runs in a child process (it cannot be undone); the checks that must never
change this process's identity patch the system calls to fail loudly instead.
"""

from __future__ import annotations

import grp
import json
import os
import pwd
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sensor.privileges import PrivilegeError, drop_privileges, refuse_root

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def no_identity_change(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make any attempt to change this process's ids fail the test instead of succeeding."""

    def forbidden(*args: object) -> None:
        raise AssertionError(f"tried to change process identity: {args}")

    for name in ("setgroups", "setresgid", "setresuid", "setuid", "setgid"):
        monkeypatch.setattr(os, name, forbidden)


@pytest.mark.usefixtures("no_identity_change")
def test_unknown_user_or_group_is_a_clear_permission_error() -> None:
    with pytest.raises(PrivilegeError, match="no such user 'certwatch-nobody-here'") as info:
        drop_privileges("certwatch-nobody-here")
    assert isinstance(info.value, PermissionError)
    with pytest.raises(PrivilegeError, match="no such group 'certwatch-no-group'"):
        drop_privileges("nobody", "certwatch-no-group")


@pytest.mark.usefixtures("no_identity_change")
def test_dropping_to_root_or_without_root_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(PrivilegeError, match="it is root"):
        drop_privileges("root")
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    with pytest.raises(PrivilegeError, match=r"not running as root \(uid 1000\)"):
        drop_privileges("nobody")


def test_root_is_refused_unless_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    with pytest.raises(PrivilegeError, match=r"--user NAME.*--allow-root"):
        refuse_root(allow_root=False)
    refuse_root(allow_root=True)
    monkeypatch.setattr(os, "geteuid", lambda: 65534)
    refuse_root(allow_root=False)


CHILD = textwrap.dedent(
    """
    import json, os, socket, sys, time
    import encodings.idna  # getaddrinfo needs it; after the drop it may not be importable
    from sensor.capture import open_live
    from sensor.errors import CaptureError
    from sensor.privileges import drop_privileges

    user, group = sys.argv[1], sys.argv[2] or None
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    capture = open_live("lo", bpf=f"tcp port {port}")
    drop_privileges(user, group)
    out = {"resuid": os.getresuid(), "resgid": os.getresgid(), "groups": os.getgroups()}
    try:
        socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
        out["raw_socket"] = "opened"
    except PermissionError:
        out["raw_socket"] = "refused"
    try:
        open_live("lo")
        out["open_live"] = "opened"
    except CaptureError as exc:
        out["open_live"] = str(exc)
    try:
        os.setuid(0)
        out["setuid0"] = "root again"
    except PermissionError:
        out["setuid0"] = "refused"
    socket.create_connection(("127.0.0.1", port), timeout=5).close()
    time.sleep(0.2)
    out["frames"] = len(capture.read_available())
    print(json.dumps(out))
    """
)


def _other_group(primary: int) -> grp.struct_group | None:
    return next((g for g in grp.getgrall() if g.gr_gid not in (0, primary)), None)


@pytest.mark.live
@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to drop privileges")
def test_child_drops_to_nobody_keeps_its_socket_and_cannot_go_back() -> None:
    nobody = pwd.getpwnam("nobody")
    group = _other_group(nobody.pw_gid)
    result = subprocess.run(
        [sys.executable, "-c", CHILD, "nobody", group.gr_name if group else ""],
        cwd=ROOT,
        env={
            "PATH": os.environ.get("PATH", ""),
            "PYTHONPATH": str(ROOT),
            "PYTHONDONTWRITEBYTECODE": "1",
        },
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    out = json.loads(result.stdout)
    gid = group.gr_gid if group else nobody.pw_gid
    assert out["resuid"] == [nobody.pw_uid] * 3
    assert out["resgid"] == [gid] * 3
    assert out["groups"] == []
    assert out["raw_socket"] == "refused"
    assert "lo: live capture needs CAP_NET_RAW" in out["open_live"]
    assert "setcap cap_net_raw,cap_net_admin+eip" in out["open_live"]
    assert out["setuid0"] == "refused"
    assert out["frames"] >= 3  # SYN, SYN-ACK, ACK at least, through the old socket
