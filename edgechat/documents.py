"""Read a document the user wants summarised, refusing what is not usable text."""

from __future__ import annotations

import sys
from pathlib import Path

from edgechat.errors import InputError

# Far beyond any context window; a larger input is refused before it is read.
MAX_BYTES = 64 * 1024 * 1024


def _decode(data: bytes, name: str) -> str:
    if not data.strip():
        raise InputError(f"{name} is empty: there is nothing to summarise")
    if b"\x00" in data[:8192]:
        raise InputError(
            f"{name} looks like a binary file, not text; summarise takes plain text or Markdown"
        )
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"{name} is not UTF-8 text (bad byte at offset {exc.start}); convert it first, "
            f"for example: iconv -f LATIN1 -t UTF-8 {name if name != 'stdin' else 'FILE'}"
        ) from None
    if not text.strip():
        raise InputError(f"{name} is empty: there is nothing to summarise")
    return text


def read_text(source: str) -> tuple[str, str]:
    """Return ``(name, text)`` for a path, or for ``-`` (standard input)."""
    if source == "-":
        data = sys.stdin.buffer.read(MAX_BYTES + 1)
        name = "stdin"
    else:
        path = Path(source).expanduser()
        name = str(path)
        if not path.exists():
            raise InputError(f"no such file: {name}")
        if path.is_dir():
            raise InputError(f"{name} is a folder; give a text or Markdown file")
        try:
            with path.open("rb") as fh:
                data = fh.read(MAX_BYTES + 1)
        except OSError as exc:
            raise InputError(f"cannot read {name}: {exc.strerror}") from None
    if len(data) > MAX_BYTES:
        raise InputError(
            f"{name} is larger than {MAX_BYTES // 2**20} MiB, far beyond the model's context"
        )
    return name, _decode(data, name)
