"""The one way the project writes a file: next to its destination, fsynced, then renamed over it.

A reader (or a crash) sees the old file or the complete new one, never half of one: a half-written privacy
ledger would under-count spending, a half-written checkpoint would not resume. Text, bytes, and anything a
library writes to a binary stream (torch.save, DataFrame.to_parquet, Figure.savefig) go through the same door.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

Content = str | bytes | Callable[[BinaryIO], object]


def write_atomically(out_path: str | Path, content: Content, mode: int = 0o644) -> Path:
    """Write `content` (text as UTF-8, bytes, or a function that writes to the open binary stream) to `out_path`
    all or nothing; the folder is created if needed. Returns the path written."""
    target = Path(out_path)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            if isinstance(content, str):
                stream.write(content.encode("utf-8"))
            elif isinstance(content, bytes):
                stream.write(content)
            else:
                content(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return target
