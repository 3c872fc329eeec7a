"""Pull GGUF models from the Hugging Face hub into its own cache, resumably and verified.

Files land where huggingface_hub keeps them (``HF_HOME``/``HF_HUB_CACHE``:
``models--owner--name/blobs/<sha256>`` with ``snapshots/<commit>/<file>`` links), so
other tools share them. Why not ``hf_hub_download``? It deletes its partial file
when interrupted, so a Ctrl-C halfway through four gigabytes starts again from
zero, and it does not check the SHA-256 of what arrived. Here huggingface_hub asks
the hub (``model_info``, ``get_hf_file_metadata`` for the redirect, size and hash),
``hubcheck`` validates every name, commit and digest it returns before any of them
becomes a path, and ``transfer`` brings the bytes into a partial file kept across
runs (resuming, with a minimum rate); the file is hashed, and only then moved into
the cache and registered as installed. One pull of a file at a time: a lock in the
cache's ``.locks`` folder, where huggingface_hub keeps its own.
"""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlparse

from edgechat.errors import EdgechatError
from edgechat.facts.device import format_size, models_dir
from edgechat.models import hubcheck, registry
from edgechat.models.installed import remove, verify  # noqa: F401 - `hub.remove`, `hub.verify`
from edgechat.models.transfer import TransferError, download, status_meaning
from edgechat.paths import sha256_of

TIMEOUT_S = 10.0  # connect/read timeout: an unreachable hub fails fast
_SPLIT = re.compile(r"-(\d{5})-of-(\d{5})\.gguf$", re.IGNORECASE)
_QUANT_TAG = re.compile(
    r"(?<![A-Za-z0-9])(I?Q\d_[A-Z0-9_]*?|FP16|F16|BF16|F32|FP32)(?=[-.]|$)", re.IGNORECASE
)


class HubError(EdgechatError):
    """The hub said no, or could not be reached."""


class ChecksumMismatch(HubError):
    pass


class BadToken(HubError):
    """The hub does not accept the token: mistyped, revoked or expired."""

    def __init__(self) -> None:
        super().__init__(
            "the hub does not accept this token (mistyped, revoked or expired): make a new "
            f"one at {endpoint()}/settings/tokens and run `edgechat login` again"
        )


@dataclass(frozen=True)
class RemoteFile:
    name: str  # path in the repo
    size: int
    sha256: str | None


@dataclass(frozen=True)
class Pulled:
    model_id: str
    repo: str
    quant: str
    path: Path  # the file to load (the first part of a split model)
    size: int
    downloaded: int  # bytes fetched this time (0 when already present)


def endpoint() -> str:
    return os.environ.get("HF_ENDPOINT", "https://huggingface.co").rstrip("/")


def quant_of(filename: str) -> str | None:
    base = _SPLIT.sub(".gguf", Path(filename).name)
    tags = _QUANT_TAG.findall(base.removesuffix(".gguf"))
    if not tags:
        return None
    # Qwen names its full-precision files `fp16`; llama.cpp's own name is F16.
    return {"FP16": "F16", "FP32": "F32"}.get(tags[-1].upper(), tags[-1].upper())


def pick_files(siblings: list[RemoteFile], quant: str, repo: str) -> list[RemoteFile]:
    """The GGUF file(s) of ``quant`` in a repo listing; every part of a split model."""
    ggufs = [
        f
        for f in siblings
        if f.name.lower().endswith(".gguf") and not Path(f.name).name.lower().startswith("mmproj")
    ]
    match = [f for f in ggufs if quant_of(f.name) == quant.upper()]
    if not match:
        offered = sorted({q for f in ggufs if (q := quant_of(f.name))})
        raise HubError(
            f"{repo} has no {quant} GGUF file; it offers {', '.join(offered) or 'no GGUF files'}"
        )
    first_parts = [f for f in match if (m := _SPLIT.search(f.name)) and int(m.group(1)) == 1]
    if first_parts:
        prefix = _SPLIT.sub("", first_parts[0].name)
        return sorted((f for f in match if _SPLIT.sub("", f.name) == prefix), key=lambda f: f.name)
    return [min(match, key=lambda f: (len(f.name), f.name))]


def _only_quant(files: list[RemoteFile], repo: str) -> str:
    """The quant to pull from a repo outside the catalog when none was named: its only one,
    else Q4_K_M, else the user must choose."""
    offered = sorted(
        {q for f in files if f.name.lower().endswith(".gguf") and (q := quant_of(f.name))}
    )
    if len(offered) == 1:
        return offered[0]
    if "Q4_K_M" in offered:
        return "Q4_K_M"
    raise HubError(
        f"{repo} offers {', '.join(offered) or 'no GGUF files'}; name one: "
        f"`edgechat models pull {repo}:{offered[0] if offered else 'QUANT'}`"
    )


def _hub_error(e: Exception, repo: str, token_sent: bool = True) -> HubError:
    """One clear line for what huggingface_hub raised."""
    from huggingface_hub import errors

    if isinstance(e, errors.GatedRepoError):
        return HubError(
            f"{repo} is gated: accept its licence at {endpoint()}/{repo} while signed in, "
            "then run `edgechat login` with a token from your account settings"
        )
    if isinstance(e, errors.RepositoryNotFoundError):
        return HubError(
            f"no repo {repo} on the hub (or it is private: `edgechat login` first if it is yours)"
        )
    if isinstance(e, errors.OfflineModeIsEnabled):
        return HubError("HF_HUB_OFFLINE is set, so nothing can be pulled; unset it to download")
    if isinstance(e, errors.HfHubHTTPError):
        if e.response is None:
            return HubError(f"the hub failed for {repo}; try again later")
        if e.response.status_code == 401 and token_sent:  # not gated nor missing: refused
            return BadToken()
        return HubError(status_meaning(e.response.status_code, repo))
    return HubError(
        f"cannot reach the Hugging Face hub at {endpoint()} ({type(e).__name__}); "
        "check the connection, or use a model already on disk (`edgechat models list`)"
    )


def _network_errors() -> tuple[type[BaseException], ...]:
    import httpx2  # huggingface_hub's own HTTP client
    from huggingface_hub import errors

    return (errors.HfHubHTTPError, errors.OfflineModeIsEnabled, httpx2.HTTPError)


def whoami(token: str) -> str:
    """The account name a token belongs to; BadToken when the hub refuses it, HubError
    when the hub cannot be asked."""
    from huggingface_hub.utils import build_hf_headers, get_session, hf_raise_for_status

    try:
        r = get_session().get(
            f"{endpoint()}/api/whoami-v2",
            headers=build_hf_headers(token=token),
            timeout=TIMEOUT_S,
        )
        hf_raise_for_status(r)
        return str(r.json().get("name") or "?")
    except _network_errors() as e:
        raise _hub_error(e, "your account") from None
    except ValueError:
        raise HubError(f"{endpoint()} gave an answer that is not JSON for whoami") from None


def list_files(repo: str, token: str | None) -> tuple[str, list[RemoteFile]]:
    """The repo's commit and its files, with sizes and LFS hashes."""
    from huggingface_hub import HfApi

    try:
        info = HfApi(endpoint=endpoint(), token=token or False).model_info(
            repo, files_metadata=True, timeout=TIMEOUT_S
        )
        siblings = [
            (s.rfilename, (s.lfs.size if s.lfs else s.size) or 0, s.lfs.sha256 if s.lfs else None)
            for s in info.siblings or []
        ]
    except _network_errors() as e:
        raise _hub_error(e, repo, bool(token)) from None
    except (ValueError, TypeError, KeyError, AttributeError):  # HTML, or JSON of another shape
        raise HubError(
            f"{endpoint()} did not answer with a model listing for {repo} (a web page or "
            "other data): it is not a Hugging Face hub, or it is broken; check HF_ENDPOINT"
        ) from None
    return hubcheck.commit(info.sha, repo), [RemoteFile(*s) for s in siblings]


def repo_folder(repo: str) -> Path:
    from huggingface_hub.file_download import repo_folder_name

    return models_dir() / repo_folder_name(repo_id=repo, repo_type="model")


def check_disk(needed: int, where: Path) -> None:
    """Refuse before downloading when the disk cannot hold the file and a margin."""
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    margin = max(256 * 1024**2, needed // 50)
    if needed + margin > free:
        raise HubError(
            f"not enough disk space: the download needs {format_size(needed)} (plus "
            f"{format_size(margin)} to spare) and {probe} has {format_size(free)} free; "
            "free some space, pick a smaller quant, or set HF_HOME to a bigger disk"
        )


def _fetch(
    repo: str,
    commit: str,
    f: RemoteFile,
    folder: Path,
    token: str | None,
    tqdm_class,
    say: Callable[[str], None] = lambda _: None,
) -> tuple[Path, int]:
    """Bring one file into the blob store; returns (blob path, bytes downloaded now)."""
    from huggingface_hub import get_hf_file_metadata, hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo, f.name, revision=commit, endpoint=endpoint())
    try:
        meta = get_hf_file_metadata(url, token=token or False, timeout=TIMEOUT_S)
    except _network_errors() as e:
        raise _hub_error(e, repo, bool(token)) from None
    digest = hubcheck.digest(f.sha256 or meta.etag, f.name)
    etag = (meta.etag or "").removeprefix("W/").strip('"').lower()
    if f.sha256 and len(etag) == 64 and etag != digest:
        raise hubcheck.UnsafeListing(
            f"the hub gives two different SHA-256 for {f.name} (listing and file); "
            "it is broken: try again later"
        )
    if meta.size is not None and meta.size != f.size:
        raise hubcheck.UnsafeListing(
            f"the hub lists {f.name} as {f.size:,} bytes but serves {meta.size:,}: "
            "the listing and the file disagree; try again later"
        )
    if not meta.location or urlparse(meta.location).scheme not in ("http", "https"):
        raise hubcheck.UnsafeListing(f"the hub gave no download address for {f.name}")
    blobs = folder / "blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    hubcheck.inside(blobs, folder)
    blob = blobs / digest
    if blob.is_file() and not blob.is_symlink() and blob.stat().st_size == f.size:
        return blob, 0
    if blob.is_symlink() or (blob.exists() and not blob.is_file()):
        raise HubError(f"{blob} is not a file edgechat made; move it aside and pull again")
    partial = blobs / f"{digest}.incomplete"
    headers = build_hf_headers(token=token or False)
    if urlparse(meta.location).netloc != urlparse(url).netloc:
        headers.pop("authorization", None)  # the token is for the hub, not the file host
    try:
        if partial.is_file() and not partial.is_symlink() and partial.stat().st_size > f.size:
            partial.unlink()  # a different file under this name: start again
        got = download(meta.location, partial, f.size, headers, f.name, tqdm_class, say)
    except OSError as e:
        if e.errno == errno.ENOSPC:
            raise HubError(
                f"the disk filled up while downloading {f.name}; the partial file is kept at "
                f"{partial}: free some space and pull again to resume"
            ) from None
        raise HubError(f"cannot write {partial}: {e.strerror or e}") from None
    except TransferError as e:
        raise HubError(str(e)) from None
    actual = sha256_of(partial)
    if actual != digest:
        partial.unlink()
        raise ChecksumMismatch(
            f"{f.name} arrived corrupted (SHA-256 {actual[:12]}..., the hub says "
            f"{digest[:12]}...); the bad file was deleted: pull again"
        )
    os.chmod(partial, 0o644)
    os.replace(partial, blob)
    return blob, got


Progress = Callable[[str, int, int], None]  # (file name, bytes there, bytes in all)


def _reporter(progress: Progress):
    """The transfer reports through a tqdm class: this one draws nothing and hands the
    figures to ``progress`` (which may raise to stop the transfer)."""
    from tqdm import tqdm

    class Report(tqdm):
        def __init__(self, *args, **kwargs):
            kwargs.pop("name", None)
            kwargs.update(disable=False, file=io.StringIO())
            super().__init__(*args, **kwargs)
            self._name = kwargs.get("desc") or ""

        def update(self, n=1):
            super().update(n)
            progress(self._name, self.n, self.total or 0)

    return Report


def pull(
    spec: str,
    default_quant: Callable[[str], str] | None = None,
    progress: Progress | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Pulled:
    """Download ``ID[:QUANT]`` or ``owner/repo[:QUANT]``, verify it and register it.

    ``default_quant(catalog_id)`` picks the quant when none is given (for example
    ``planning.recommend.default_quant``, the recommender's choice for this device);
    else the catalog's, and Q4_K_M outside the catalog. ``progress`` hears of every
    transfer and ``say`` gets a line at the start and the end; nothing is printed.
    """
    tqdm_class = _reporter(progress) if progress else None
    from edgechat.models import credentials
    from edgechat.planning import catalog

    catalog_id, repo, quant = hubcheck.parse_spec(spec)
    if catalog_id is not None:
        # The catalog names the repo; the repo's own file list decides which quants exist.
        model, listed_quant = catalog.find(catalog_id, warn=say)
        repo = model.repo
        quant = quant or (default_quant(model.id) if default_quant else listed_quant)
        model_id = f"{model.id}:{quant}"
    hubcheck.quant(quant, model.quants if catalog_id is not None else None, repo)
    repo = hubcheck.repo(repo)
    token, _ = credentials.token()
    commit, files = list_files(repo, token)
    if catalog_id is None:
        quant = quant or _only_quant(files, repo)
        model_id = f"{repo}:{quant}"
    wanted = pick_files(files, quant, repo)
    for f in wanted:
        hubcheck.file_name(f.name, repo)
        hubcheck.size(f.size, f.name)
        if f.sha256 is not None:
            hubcheck.digest(f.sha256, f.name)
    folder = repo_folder(repo)
    hubcheck.inside(folder, models_dir())
    remaining = 0
    for f in wanted:
        blob = folder / "blobs" / (f.sha256 or "")
        partial = blob.with_name(blob.name + ".incomplete")
        if not (f.sha256 and blob.is_file()):
            remaining += f.size - (partial.stat().st_size if partial.is_file() else 0)
    check_disk(remaining, folder)
    total = sum(f.size for f in wanted)
    say(f"pulling {model_id} from {repo}: {len(wanted)} file(s), {format_size(total)}")
    from edgechat.models.cachefiles import link, pull_lock

    started, fetched, pointers = time.monotonic(), 0, []
    for f in wanted:
        with pull_lock(folder, f):
            blob, got = _fetch(repo, commit, f, folder, token, tqdm_class, say)
            fetched += got
            pointers.append(link(folder, commit, f.name, blob))
    elapsed = time.monotonic() - started
    if fetched:
        say(f"downloaded {format_size(fetched)} in {elapsed:.1f} s, SHA-256 verified")
    registry.register(
        model_id,
        {
            "path": str(pointers[0]),
            "files": [str(p) for p in pointers],
            "repo": repo,
            "commit": commit,
            "quant": quant,
            "size": total,
            "sha256": [f.sha256 and f.sha256.lower() for f in wanted],
            "source": "hub",
        },
    )
    return Pulled(model_id, repo, quant, pointers[0], total, fetched)
