"""Child processes that end when their parent does: `preexec_fn` for subprocess.Popen."""

from __future__ import annotations

import ctypes
import os
import signal
from collections.abc import Callable, Iterable

_PR_SET_PDEATHSIG = 1


def die_with_parent(
    parent: int, on_parent_death: signal.Signals, ignore: Iterable[signal.Signals] = ()
) -> Callable[[], None]:
    """A preexec_fn: the kernel sends the child `on_parent_death` when the parent dies, and
    the `ignore`d signals stay ignored through exec.

    Chosen over the child polling its parent pid: no timer in every child, and it also
    covers a SIGKILLed parent at once. PDEATHSIG follows the *thread* that forked, so
    fork from a thread that lives as long as the child should."""
    libc = ctypes.CDLL(None, use_errno=True)  # loaded before fork, not in the child
    ignored = tuple(ignore)

    def arm() -> None:
        # Ignored before exec, a signal stays ignored through the child's whole start
        # (Python installs its KeyboardInterrupt handler only over SIG_DFL).
        _arm(libc, parent, on_parent_death, ignored)

    return arm


def _arm(
    libc: ctypes.CDLL, parent: int, on_death: signal.Signals, ignored: tuple[signal.Signals, ...]
) -> None:
    for sig in ignored:
        signal.signal(sig, signal.SIG_IGN)
    libc.prctl(_PR_SET_PDEATHSIG, int(on_death), 0, 0, 0)
    if os.getppid() != parent:  # the parent died before prctl took effect
        os.kill(os.getpid(), signal.SIGKILL)
