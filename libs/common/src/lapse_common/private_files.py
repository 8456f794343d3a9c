"""Writing secrets (private keys, tokens, password files) so that nobody else can read them,
not even for a moment.

`write_text` followed by `chmod` leaves a window in which the file exists with the umask's
mode (often world-readable), and a crash in between leaves it that way. Here the bytes go to
a temporary file created 0600 in the same directory, reach the disk, and only then take the
final name, so the file is either absent, the old one, or complete and private.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

PRIVATE_MODE = 0o600


def write_private_file(path: Path, data: bytes) -> None:
    """Create or replace `path` with `data`, readable and writable by its owner only."""
    path.parent.mkdir(parents=True, exist_ok=True)
    # mkstemp: an unpredictable name opened with O_EXCL and mode 0600, so nothing planted
    # beforehand (a file, a symlink) is written through, and a crashed run's leftover is no
    # obstacle.
    descriptor, staged = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    temporary = Path(staged)
    try:
        with os.fdopen(descriptor, "wb") as file:
            # A umask can narrow mkstemp's 0600 (to one the owner cannot even rewrite);
            # fchmod makes it exactly 0600.
            os.fchmod(file.fileno(), PRIVATE_MODE)
            file.write(data)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            temporary.unlink()
        raise
