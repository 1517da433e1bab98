"""What the real receivers started by tests (rotel, Prometheus) have in common."""

from __future__ import annotations

import signal
import subprocess
import tempfile
from typing import IO


class ReceiverProcess:
    """A receiver process, its log file and its scratch directory, stopped by PID."""

    proc: subprocess.Popen[bytes] | None
    _log: IO[bytes]
    _dir: tempfile.TemporaryDirectory[str]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s; the log is closed and the directory removed."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if hasattr(self, "_log"):
            self._log.close()
        self._dir.cleanup()
