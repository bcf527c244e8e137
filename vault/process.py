"""This process, once it holds a key: no core dumps, not readable through ptrace by its user.

A core file is the process's memory on disk: the master key, the session key and every secret shown
so far, in a file that outlives the command. ``RLIMIT_CORE=0`` stops the kernel writing one;
``PR_SET_DUMPABLE=0`` also stops ``/proc/PID/mem``, ``/proc/PID/environ`` and ``ptrace`` by other
processes of the same user (root keeps them: docs/security.md). Both are inherited by ``fork``, so
the warm agent's handlers are covered by the agent's call; an ``exec`` (``$EDITOR``, a passphrase
command) gets a fresh, dumpable process that holds no key. Standard library only.
"""

from __future__ import annotations

import contextlib

PR_SET_DUMPABLE = 4  # <linux/prctl.h>
_done = False


def forbid_core_dumps() -> None:
    """Turn off core dumps for this process (and its forks); idempotent and cheap the second time."""
    global _done
    if _done:
        return
    import resource

    with contextlib.suppress(ValueError, OSError):
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    with contextlib.suppress(OSError, AttributeError):
        import ctypes

        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_DUMPABLE, 0, 0, 0, 0)
    _done = True
