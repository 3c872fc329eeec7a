"""Where each tool keeps its models, found as the tool itself finds them: its
environment variables first, then its defaults for this platform."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from edgechat.errors import EdgechatError


def _env_path(name: str) -> Path | None:
    """A folder from the environment, read as the tools do (quotes and spaces trimmed)."""
    value = os.environ.get(name, "").strip().strip("\"'")
    return Path(value).expanduser() if value else None


# Ollama's Linux installer runs it as a service whose home is /usr/share/ollama.
SYSTEM_OLLAMA = Path("/usr/share/ollama/.ollama/models")


def ollama_roots() -> list[Path]:
    """OLLAMA_MODELS, else ~/.ollama/models (and the Linux service's, when readable)."""
    set_ = _env_path("OLLAMA_MODELS")
    if set_:
        return [set_]
    roots = [Path.home() / ".ollama" / "models"]
    if sys.platform.startswith("linux"):
        roots.append(SYSTEM_OLLAMA)
    return roots


def lmstudio_roots() -> list[Path]:
    """LM Studio's models folder: its settings' downloadsFolder, ~/.lmstudio/models (the
    home may be moved: ~/.lmstudio-home-pointer says where), and the older
    ~/.cache/lm-studio/models."""
    home = Path.home()
    lm_home = home / ".lmstudio"
    try:
        pointer = _small(home / ".lmstudio-home-pointer").strip()
        if pointer:
            lm_home = Path(pointer).expanduser()
    except (OSError, ValueError, EdgechatError):
        pass
    roots = []
    try:
        settings = json.loads(_small(lm_home / "settings.json"))
        folder = settings.get("downloadsFolder") if isinstance(settings, dict) else None
        if isinstance(folder, str) and folder.strip():
            roots.append(Path(folder).expanduser())
    except (OSError, ValueError, RecursionError, EdgechatError):
        pass
    roots += [lm_home / "models", home / ".cache" / "lm-studio" / "models"]
    return roots


def _small(path: Path) -> str:
    """Another tool's settings file: a regular file of at most a megabyte (never a pipe
    or a device), as text."""
    from edgechat.paths import read_user_file

    return read_user_file(path, 1 << 20, EdgechatError).decode("utf-8")


def llamacpp_root() -> Path:
    """llama.cpp's fs_get_cache_directory(): LLAMA_CACHE, else the platform's cache folder
    (~/Library/Caches on macOS, %LOCALAPPDATA% on Windows, XDG_CACHE_HOME or ~/.cache)
    with llama.cpp under it."""
    set_ = _env_path("LLAMA_CACHE")
    if set_:
        return set_
    if sys.platform == "darwin":
        base = Path.home() / "Library" / "Caches"
    elif sys.platform == "win32":
        base = _env_path("LOCALAPPDATA") or Path.home() / "AppData" / "Local"
    else:
        base = _env_path("XDG_CACHE_HOME") or Path.home() / ".cache"
    return base / "llama.cpp"


def hf_roots() -> list[Path]:
    """The Hugging Face hub cache (HF_HUB_CACHE, HF_HOME/hub, ~/.cache/huggingface/hub);
    llama.cpp's own downloads go there too now, or into LLAMA_CACHE in the same layout."""
    from edgechat.facts.device import models_dir

    roots = [models_dir()]
    if _env_path("LLAMA_CACHE"):
        roots.append(llamacpp_root())
    return roots
