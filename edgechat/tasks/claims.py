"""Which conversations an app window has open, so two windows on one home never write
into the same chat.

Each open conversation is held with a lock file of its own (``filelock``, which comes
with huggingface_hub): a second window that asks for it is told it is taken and opens
its own chat instead. The operating system lets go of the locks of a window that dies,
so a crash never leaves a chat locked.
"""

from __future__ import annotations

import contextlib
from pathlib import Path


class Claims:
    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self._held: dict[int, object] = {}  # conversation id -> its FileLock

    def _lock(self, conversation_id: int):
        from filelock import FileLock

        from edgechat.paths import ensure_private_dir

        ensure_private_dir(self.folder)
        return FileLock(self.folder / f"{conversation_id}.lock", timeout=0, thread_local=False)

    def take(self, conversation_id: int) -> bool:
        """Hold ``conversation_id`` for this window; False when another window holds it.
        Where no lock can be made (a read-only data folder) nothing is refused."""
        from filelock import Timeout

        if conversation_id in self._held:
            return True
        try:
            lock = self._lock(conversation_id)
            lock.acquire()
        except Timeout:
            return False
        except OSError:
            return True
        self._held[conversation_id] = lock
        return True

    def drop(self, conversation_id: int, forget: bool = False) -> None:
        """Let go of a conversation; ``forget``: it was deleted, so its lock file goes too."""
        lock = self._held.pop(conversation_id, None)
        if lock is None:
            return
        if forget:
            with contextlib.suppress(OSError):
                (self.folder / f"{conversation_id}.lock").unlink()
        lock.release()

    def elsewhere(self, conversation_id: int) -> bool:
        """Whether another window holds ``conversation_id`` now."""
        if conversation_id in self._held:
            return False
        if not self.take(conversation_id):
            return True
        self.drop(conversation_id)
        return False

    def close(self) -> None:
        for conversation_id in list(self._held):
            self.drop(conversation_id)
