"""Giving up root once the capture socket is open.

Opening an AF_PACKET socket needs CAP_NET_RAW (and CAP_NET_ADMIN for promiscuous mode and
a receive buffer above ``net.core.rmem_max``): run as root, or grant the capabilities to the
interpreter with ``setcap cap_net_raw,cap_net_admin+eip /path/to/python3``. Nothing after
that needs them, and the sensor parses hostile bytes, so the intended order is::

    capture = open_live("eth1")          # needs CAP_NET_RAW
    if args.user:
        drop_privileges(args.user, args.group)
    refuse_root(args.allow_root)         # root with no --user: refused unless allowed

An open socket keeps working after the drop (the kernel checks the capability when the
socket is created, not when it is read); opening a new one fails.

Import everything the process will need *before* dropping: after it, every module still to
be imported must be readable by the new user, and an interpreter installed under ``/root``
(pyenv, uv) is not. Seen here: ``getaddrinfo`` failed with "unknown encoding: idna"
until ``encodings.idna`` was imported before the drop.
"""

from __future__ import annotations

import grp
import os
import pwd

__all__ = ["PrivilegeError", "drop_privileges", "refuse_root"]


class PrivilegeError(PermissionError):
    """The process cannot get to, or refuses to run with, the privileges asked for."""


def drop_privileges(user: str, group: str | None = None) -> None:
    """Become ``user`` (and ``group``, else the user's primary group) for good.

    Clears the supplementary groups and sets the real, effective and saved IDs, so no
    capability and no way back to root remains; then checks that: ``setuid(0)`` must fail
    and the effective capability set must be empty. Raises :class:`PrivilegeError` if the
    user or group does not exist, the target is root, the process is not root, or the
    check fails.
    """
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise PrivilegeError(f"cannot drop privileges: no such user {user!r}") from None
    try:
        gid = entry.pw_gid if group is None else grp.getgrnam(group).gr_gid
    except KeyError:
        raise PrivilegeError(f"cannot drop privileges: no such group {group!r}") from None
    uid = entry.pw_uid
    if uid == 0:
        raise PrivilegeError(f"cannot drop privileges to {user!r}: it is root (uid 0)")
    if os.geteuid() != 0:
        raise PrivilegeError(
            f"cannot drop privileges to {user!r}: not running as root (uid {os.geteuid()})"
        )
    # Order matters: groups and gid first, while we still may change them.
    os.setgroups([])
    os.setresgid(gid, gid, gid)
    os.setresuid(uid, uid, uid)
    _verify_dropped(uid, gid)


def _verify_dropped(uid: int, gid: int) -> None:
    if os.getresuid() != (uid, uid, uid) or os.getresgid() != (gid, gid, gid):
        raise PrivilegeError(f"privilege drop incomplete: ids {os.getresuid()}/{os.getresgid()}")
    if os.getgroups():
        raise PrivilegeError(f"privilege drop incomplete: groups {os.getgroups()}")
    try:
        os.setuid(0)
    except PermissionError:
        pass  # what we want: there is no way back
    else:
        raise PrivilegeError("privilege drop failed: setuid(0) succeeded afterwards")
    effective = _effective_capabilities()
    if effective:
        raise PrivilegeError(f"privilege drop left capabilities: CapEff={effective:#x}")


def _effective_capabilities() -> int:
    """CapEff of this process from /proc (0 where /proc is not mounted: nothing to check)."""
    try:
        # Bytes, not text: a text file would look up a codec, i.e. maybe import a module,
        # and after the drop the interpreter's own files may be unreadable.
        with open("/proc/self/status", "rb") as status:
            for line in status:
                if line.startswith(b"CapEff:"):
                    return int(line.split()[1], 16)
    except OSError:
        return 0
    return 0


def refuse_root(allow_root: bool) -> None:
    """Refuse to go on as root unless ``allow_root``: call it after the optional
    :func:`drop_privileges`, so running as root without ``--user`` needs ``--allow-root``.
    Raises :class:`PrivilegeError` with what to do instead."""
    if os.geteuid() == 0 and not allow_root:
        raise PrivilegeError(
            "refusing to run as root: pass --user NAME to drop privileges once the capture "
            "is open (or grant CAP_NET_RAW with setcap and run unprivileged), "
            "or --allow-root to run as root anyway"
        )
