"""The Hugging Face token: in the OS keyring, else where huggingface_hub keeps its own.

Headless machines (a Pi over SSH, a container) often have no keyring backend; then
the token goes to huggingface_hub's token file (0600), or comes from ``HF_TOKEN``,
and edgechat says which. The token itself is never printed or logged.
"""

from __future__ import annotations

import os
from pathlib import Path

from edgechat.errors import EdgechatError

SERVICE = "edgechat"
ACCOUNT = "huggingface"


def keyring_backend():
    """The usable keyring backend, or None where there is none."""
    try:
        import keyring
        from keyring.backends import fail, null

        backend = keyring.get_keyring()
    except Exception:  # a broken keyring install must not break edgechat
        return None
    if isinstance(backend, (fail.Keyring, null.Keyring)):
        return None
    return backend


def token_file() -> Path:
    home = os.environ.get("HF_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "huggingface"
    )
    return Path(os.environ.get("HF_TOKEN_PATH") or Path(home) / "token").expanduser()


def token() -> tuple[str | None, str]:
    """The token and where it came from (keyring, HF_TOKEN, token file, none)."""
    backend = keyring_backend()
    if backend is not None:
        try:
            found = backend.get_password(SERVICE, ACCOUNT)
        except Exception:
            found = None
        if found:
            return found, "keyring"
    if os.environ.get("HF_TOKEN"):
        return os.environ["HF_TOKEN"], "HF_TOKEN"
    path = token_file()
    try:
        found = path.read_text().strip()
    except OSError:
        found = ""
    return (found, f"token file {path}") if found else (None, "none")


def store(value: str) -> str:
    """Keep the token; returns where it went, in words."""
    value = value.strip()
    if not value or any(c.isspace() for c in value):
        raise EdgechatError(
            "that is not a token: paste the token from huggingface.co/settings/tokens"
        )
    backend = keyring_backend()
    if backend is not None:
        try:
            backend.set_password(SERVICE, ACCOUNT, value)
            return f"the system keyring ({type(backend).__name__})"
        except Exception as e:
            raise EdgechatError(f"the keyring refused the token: {type(e).__name__}") from None
    from edgechat.paths import write_private

    path = token_file()
    write_private(path, value + "\n")
    return f"{path} (no system keyring here; readable only by you)"


def forget() -> tuple[list[str], list[str]]:
    """Remove the stored token everywhere edgechat put it; returns where it was removed
    from, and why it could not be removed where that failed (never silently)."""
    removed, failed = [], []
    backend = keyring_backend()
    if backend is not None:
        try:
            if backend.get_password(SERVICE, ACCOUNT):
                backend.delete_password(SERVICE, ACCOUNT)
                removed.append("keyring")
        except Exception as e:  # every keyring backend raises its own kinds
            failed.append(f"the keyring refused ({type(e).__name__}: {e})")
    path = token_file()
    if path.is_file():
        try:
            path.unlink()
            removed.append(str(path))
        except OSError as e:
            failed.append(f"cannot delete {path}: {e.strerror or e}")
    return removed, failed


# -- the API key of an OpenAI-compatible server (edgechat serve, or a remote one) ------

API_ACCOUNT = "api-key"
API_ENV = "EDGECHAT_API_KEY"


def api_key(given: str | None = None) -> tuple[str | None, str]:
    """The API key and where it came from (--api-key, EDGECHAT_API_KEY, keyring, none).
    Never printed: callers say only where it came from."""
    if given:
        return given, "--api-key"
    if os.environ.get(API_ENV):
        return os.environ[API_ENV], API_ENV
    backend = keyring_backend()
    if backend is not None:
        try:
            found = backend.get_password(SERVICE, API_ACCOUNT)
        except Exception:
            found = None
        if found:
            return found, "keyring"
    return None, "none"


def store_api_key(value: str) -> str:
    """Keep the API key in the keyring; returns where it went, in words."""
    value = value.strip()
    if not value or any(c.isspace() for c in value):
        raise EdgechatError("an API key is one word with no spaces")
    backend = keyring_backend()
    if backend is None:
        raise EdgechatError(
            f"there is no system keyring here; set {API_ENV} in the server's environment instead"
        )
    try:
        backend.set_password(SERVICE, API_ACCOUNT, value)
    except Exception as e:
        raise EdgechatError(f"the keyring refused the key: {type(e).__name__}") from None
    return f"the system keyring ({type(backend).__name__})"
