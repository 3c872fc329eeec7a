"""GGUF files in a Hugging Face hub cache (read only), through huggingface_hub's own
``scan_cache_dir``: snapshots, blobs and refs read as the library that wrote them reads
them. Files edgechat pulled are left out by the caller (they are in its registry).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from edgechat.models.stores import Found, group_folder


def models(root: Path) -> list[Found]:
    """The GGUF models cached under ``root``: one per file (split parts joined), named
    ``owner/repo/path/in/repo.gguf``; a file in several revisions counts once."""
    from huggingface_hub import scan_cache_dir
    from huggingface_hub.errors import CacheNotFound

    try:
        info = scan_cache_dir(root)
    except (CacheNotFound, OSError, ValueError):
        return []
    found: list[Found] = []
    for repo in sorted(info.repos, key=lambda r: r.repo_id):
        if repo.repo_type != "model":
            continue
        seen: set[Path] = set()
        # The revision a ref (main) points at first, then the newest.
        revisions = sorted(
            repo.revisions, key=lambda r: (not r.refs, -r.last_modified, r.commit_hash)
        )
        for revision in revisions:
            folders: dict[Path, list[str]] = {}
            for file in revision.files:
                if not file.file_name.lower().endswith(".gguf") or file.blob_path in seen:
                    continue
                seen.add(file.blob_path)
                folders.setdefault(file.file_path.parent, []).append(file.file_name)
            for folder, names in sorted(folders.items()):
                for f in group_folder("hf", revision.snapshot_path, folder, names):
                    inside = f.path.relative_to(revision.snapshot_path).as_posix()
                    found.append(replace(f, name=f"{repo.repo_id}/{inside}"))
    return found
