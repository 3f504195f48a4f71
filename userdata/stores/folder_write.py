"""The folder store's conditional write: a file replaced only if it still holds what an ETag names.

The ETag of a file is the quoted MD5 of its bytes (:func:`~userdata.stores.content_etag`), as S3
gives an object of one PUT. The check and the atomic rename that follows run under one lock of
the process: atomic among this process's writes (every FolderStore's), not against another
process writing the file between them. Folder mode runs one service, hence one writer; replicas
that elect a writer share an S3 store, where the server checks ``If-Match`` itself.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

from . import ABSENT, PreconditionFailed, content_etag

__all__ = ("replace_if",)

_LOCK = threading.Lock()


def replace_if(path: Path, key: str, data: bytes, etag: str | None, write: Callable[[Path, bytes], None]) -> str:
    """``write(path, data)`` (whole or nothing) if the file still has ``etag`` (None: whatever it
    holds; ABSENT: only if there is none); returns the ETag of ``data``. Blocking: call it in a
    thread.

    Raises PreconditionFailed, the file left alone, when it changed since ``etag``, is gone, or
    (ABSENT) is there, unless it holds exactly ``data`` already (then nothing is written).
    """
    ours = content_etag(data)
    with _LOCK:
        if etag is not None:
            try:
                current = content_etag(path.read_bytes())
            except FileNotFoundError:
                if etag == ABSENT:
                    write(path, data)
                    return ours
                raise PreconditionFailed(key, etag) from None
            if current == ours:
                return ours
            if current != etag:
                raise PreconditionFailed(key, etag)
        write(path, data)
    return ours
