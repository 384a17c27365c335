"""Writing generated files: whole or not at all, with their mode from the first byte."""

import os
from pathlib import Path

__all__ = ["write_file"]


def write_file(path: Path, text: str, mode: int = 0o644) -> Path:
    """Write ``text`` to ``path`` through a temporary file created with ``mode`` (so a
    secret is never readable by others, not even briefly) and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(descriptor, "w") as file:
        file.write(text)
        file.flush()
        os.fsync(file.fileno())
    os.chmod(temporary, mode)  # os.open's mode is filtered through the umask
    os.replace(temporary, path)
    return path
