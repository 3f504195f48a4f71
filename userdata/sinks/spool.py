"""Spool: bytes appended piece by piece, then read back whole without holding the GIL to copy them."""

from __future__ import annotations

import os
import tempfile
import threading
from typing import BinaryIO

__all__ = ("Spool",)


class Spool:
    """Bytes appended piece by piece to an anonymous file, then read back whole in one read.

    Joining the pieces of a large output.csv holds the GIL while it copies (so does a growing
    BytesIO or bytearray, once glibc has raised its mmap threshold), which stalls the event loop
    even when done in a thread. A read into a new bytes object copies in the kernel with the GIL
    released, so the loop runs on meanwhile. Appending a slice is one small write.

    >>> spool = Spool()
    >>> spool.write(b"user_id,"); spool.write(b"first_name\\n")
    >>> spool.read_and_close(), spool.closed
    (b'user_id,first_name\\n', True)
    """

    def __init__(self) -> None:
        # read_and_close() runs in a thread, close() may come from the loop: never both at once.
        self._lock = threading.Lock()
        self._file: BinaryIO
        if hasattr(os, "memfd_create"):  # Linux: in memory, never on a disk
            self._file = open(os.memfd_create("userdata-output", os.MFD_CLOEXEC), "w+b", buffering=0)  # noqa: SIM115
        else:
            self._file = tempfile.TemporaryFile(buffering=0)  # noqa: SIM115
        self._size = 0

    @property
    def closed(self) -> bool:
        """True once read back or closed: the file is gone."""
        return self._file.closed

    def write(self, data: bytes) -> None:
        """Append ``data``."""
        view = memoryview(data)
        while view:
            view = view[self._file.write(view) :]
        self._size += len(data)

    def read_and_close(self) -> bytes:
        """Everything written, as one bytes object; call it in a thread, as it copies it all."""
        with self._lock:
            return self._read_and_close()

    def _read_and_close(self) -> bytes:
        try:
            self._file.seek(0)
            parts = []
            left = self._size
            while left:
                part = self._file.read(left)
                if not part:
                    raise OSError(f"spool ended {left} bytes early")
                parts.append(part)
                left -= len(part)
            return parts[0] if len(parts) == 1 else b"".join(parts)
        finally:
            self._file.close()

    def close(self) -> None:
        """Close (again: a no-op)."""
        with self._lock:
            self._file.close()
