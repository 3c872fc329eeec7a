"""A keyring backend that keeps secrets in a JSON file, so tests can run edgechat's
keyring path across processes on a machine with no desktop keyring."""

from __future__ import annotations

import json
import os
from pathlib import Path

from keyring.backend import KeyringBackend
from keyring.errors import PasswordDeleteError


class FileKeyring(KeyringBackend):
    priority = 1

    @property
    def _file(self) -> Path:
        return Path(os.environ["TEST_KEYRING_FILE"])

    def _load(self) -> dict:
        try:
            return json.loads(self._file.read_text())
        except FileNotFoundError:
            return {}

    def get_password(self, service, username):
        return self._load().get(f"{service}/{username}")

    def set_password(self, service, username, password):
        data = self._load()
        data[f"{service}/{username}"] = password
        self._file.write_text(json.dumps(data))

    def delete_password(self, service, username):
        data = self._load()
        if data.pop(f"{service}/{username}", None) is None:
            raise PasswordDeleteError("not set")
        self._file.write_text(json.dumps(data))


class LockedKeyring(FileKeyring):
    """A keyring that holds the token but refuses to delete it (a locked desktop keyring)."""

    def delete_password(self, service, username):
        raise PasswordDeleteError("the keyring is locked")


def keyring_env(file: Path, backend: str = "FileKeyring") -> dict[str, str]:
    """The environment that makes ``backend`` (this module's) the keyring, in this
    process and in children started with ``support.cli.child_env``."""
    return {
        "PYTHON_KEYRING_BACKEND": f"support.filekeyring.{backend}",
        "TEST_KEYRING_FILE": str(file),
    }
