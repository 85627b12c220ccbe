"""Private network namespaces: whether this machine permits them, and the loopback switch
a partition uses (refused anywhere but in a namespace of this process's own)."""

from __future__ import annotations

import os
import shutil
import subprocess

from phalanx.errors import ConfigError

PROBE_TIMEOUT_S = 10.0


def own_namespace() -> bool:
    """Whether this process's network namespace differs from its parent's (``unshare -n``
    execs the command, so the parent is whoever asked for the namespace; /proc/1 is not
    always readable in a container)."""
    try:
        mine = os.readlink("/proc/self/ns/net")
        return mine != os.readlink(f"/proc/{os.getppid()}/ns/net")
    except OSError:
        return False


def namespaces_unavailable() -> str | None:
    """Why partitions cannot run here, or None when ``unshare -n`` and ``ip`` both work."""
    for tool in ("unshare", "ip"):
        if shutil.which(tool) is None:
            return f"no `{tool}` on PATH"
    try:
        probe = subprocess.run(
            ["unshare", "-n", "ip", "link", "set", "lo", "up"],
            capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, check=False,
        )  # fmt: skip
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"`unshare -n` failed: {error}"
    if probe.returncode != 0:
        return f"`unshare -n` is not permitted here: {probe.stderr.strip() or probe.returncode}"
    return None


def set_loopback(up: bool) -> None:
    """Bring this namespace's loopback up or down; refused in the host's namespace."""
    if not own_namespace():
        raise ConfigError("refusing to touch the loopback outside a private network namespace")
    subprocess.run(
        ["ip", "link", "set", "lo", "up" if up else "down"],
        check=True, capture_output=True, timeout=PROBE_TIMEOUT_S,
    )  # fmt: skip
