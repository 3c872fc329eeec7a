"""`edgechat shrink`: the smallest quant of a model that holds up on the user's own text.

From one higher-precision source: split the text (lab/split.py), keep the source's
log-probabilities on the held-out part (lab/quality.py ``Reference``), calibrate an
importance matrix on the other part, make each candidate (each type with and without
the matrix, the mixed recipe), judge it against the source, time it in a fresh process
(bench's child), estimate what it needs here, and name the smallest within the task's
budget that fits (lab/verdict.py). Candidates go to a work folder with a manifest, so
an interrupted run keeps its whole files and the same command carries on from them.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

from edgechat.errors import EdgechatError, InputError
from edgechat.lab.stages import RECIPE, Run, Step
from edgechat.lab.verdict import TYPES_BY_TASK, Candidate, Verdict, candidate_ids, pick
from edgechat.lab.workfolder import Manifest
from edgechat.planning.budget import Budget
from edgechat.service import ModelRequest

# ggml tensor types of 4 bits a weight or fewer: a source made of them is refused.
_LOW = re.compile(r"^(I?Q[1-4]|IQ|TQ|MXFP4)", re.IGNORECASE)
_SOURCE_BITS = {"F32": 32.0, "F16": 16.0, "BF16": 16.0, "Q8_0": 8.5, "Q8_1": 9.0}
_SOURCE_BITS |= {"Q6_K": 6.56, "Q5_1": 6.0, "Q5_0": 5.5, "Q5_K": 5.5}
_TAG = re.compile(r"[-._](f16|bf16|f32|fp16|q8_0|q6_k|q5_k_[ms]|q5_[01])$", re.IGNORECASE)


@dataclass(frozen=True)
class ShrinkRequest:
    source: ModelRequest  # the source and how to load it; its ctx is the chunk size
    texts: tuple[tuple[str, str], ...]  # (name, text) of each --text
    task: str = "chat"
    budget: Budget | None = None  # None: the task's default
    types: tuple[str, ...] = ()  # empty: the task's default types
    chunks: int | None = None  # at most this many chunks for each part
    work: Path | None = None  # default: the cache dir's shrink/<source>
    run_ctx: int = 4096  # the context the pick will run at, for its memory estimate
    speed_tokens: int = 64
    inputs: tuple[Path, ...] = ()  # the --text files: never written over


@dataclass(frozen=True)
class ShrinkResult:
    source: str
    source_quant: str
    source_size: int
    task: str
    n_ctx: int
    text: dict  # name, sha256, bytes, tokens; calibration and held_out: tokens, chunks
    candidates: tuple[Candidate, ...]
    verdict: Verdict
    work: Path
    reused: tuple[str, ...]  # candidates carried over from an interrupted run
    failed: dict[str, str]  # candidate -> why it could not be made or measured
    seconds: float

    def by_id(self, cid: str) -> Candidate:
        return next(c for c in self.candidates if c.id == cid)

    def as_dict(self) -> dict:
        d = {k: v for k, v in asdict(self).items() if k not in ("candidates", "verdict")}
        d["work"] = str(self.work)
        d["candidates"] = [c.as_dict() for c in self.candidates]
        d["verdict"] = self.verdict.as_dict()
        return d


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run: what the work folder keeps (whole files only)."""

    def __init__(self, work: Path, kept: list[str]) -> None:
        super().__init__()
        self.work, self.kept = work, kept


def check_source(facts, name: str) -> float:
    """The source's bits a weight; InputError when it is 4-bit or lower already."""
    layer_types: dict[str, int] = {}
    for t in facts.tensors:
        if t.layer is not None:
            layer_types[t.type_name] = layer_types.get(t.type_name, 0) + t.n_bytes
    main = max(layer_types, key=layer_types.get) if layer_types else (facts.file_type or "F32")
    if _LOW.match(main):
        raise InputError(
            f"{name} is already {facts.file_type or main} (4 bits a weight or fewer): "
            "quantising it again tells you nothing; start from its F16, BF16 or Q8_0 file"
        )
    return _SOURCE_BITS.get(main.upper(), 16.0)


def candidate_types(task: str, wanted: tuple[str, ...], source_bits: float) -> list[str]:
    """The types to try: ``wanted`` or the task's defaults, that llama.cpp makes here
    and that are smaller than the source."""
    from edgechat.lab.quantize import TYPES
    from edgechat.planning.memory import QUANT_BITS

    types = [t.upper() for t in wanted] or list(TYPES_BY_TASK.get(task, TYPES_BY_TASK["chat"]))
    unknown = [t for t in types if t not in TYPES]
    if wanted and unknown:
        raise InputError(f"unknown type {unknown[0]}; choose from {', '.join(TYPES)}")
    out = [t for t in dict.fromkeys(types) if t in TYPES]
    smaller = [t for t in out if QUANT_BITS.get(t, 16.0) < source_bits - 0.01]
    if not smaller:
        raise InputError(
            f"none of {', '.join(out)} is smaller than the source ({source_bits:g} bits a "
            "weight): choose smaller --types"
        )
    return smaller


def _needs_matrix() -> frozenset[str]:
    """The target types llama.cpp refuses to make without an importance matrix."""
    from edgechat.lab import quantize

    needs = quantize.NEEDS_MATRIX
    return frozenset(t for t, (_, base) in quantize.TYPES.items() if base in needs)


def shrink(
    req: ShrinkRequest,
    progress: Callable[[Step], None] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> ShrinkResult:
    from edgechat.llama import backend

    backend.load()  # llama.cpp before numpy
    from edgechat.facts.device import detect
    from edgechat.facts.gguf import inspect_file
    from edgechat.models import receipts, registry
    from edgechat.paths import paths, refuse_inputs
    from edgechat.planning.budget import default

    started = time.monotonic()
    src = registry.resolve(req.source.model, req.source.default_model, what="SOURCE")
    facts = inspect_file(src)
    bits = check_source(facts, src.name)
    budget = req.budget or default(req.task)
    types = candidate_types(req.task, req.types, bits)
    ids = candidate_ids(types, _needs_matrix())
    name = req.texts[0][0] + (f" and {len(req.texts) - 1} more" if len(req.texts) > 1 else "")
    text = "\n\n".join(t for _, t in req.texts)
    stem = _TAG.sub("", src.stem) or src.stem
    work = req.work or paths().cache_dir / "shrink" / stem
    try:
        work.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise EdgechatError(f"cannot use {work}: {e.strerror or e}; pass another --work") from None
    if not receipts.hash_cached(src) and src.stat().st_size > 1 << 30:
        say(f"reading {src.name} once for its SHA-256 (the receipts name files by it)")
    key = {
        "source": receipts.file_sha256(src),
        "text": receipts.text_ref(name, text).sha256,
        "n_ctx": req.source.ctx,
        "chunks": req.chunks,
        "recipe": RECIPE,
    }
    outputs = ["shrink.json", "imatrix.gguf", "reference.npy"]
    outputs += [f"{stem}-{t}{'-imatrix' * im}.gguf" for _, t, im in ids]
    for output in outputs:  # the work folder never holds what the run reads
        refuse_inputs(work / output, [src, *req.inputs])
    manifest = Manifest(work, key, say)
    device = detect(req.source.memory, req.source.vram)
    run = Run(req, src, facts, budget, ids, stem, work, manifest, device, progress, say)
    try:
        run.go(text, name)
    except KeyboardInterrupt:
        raise Interrupted(work, manifest.kept()) from None
    finally:
        (work / "reference.npy").unlink(missing_ok=True)  # big, and only for this run
    candidates = tuple(run.candidates)
    return ShrinkResult(
        source=str(src),
        source_quant=facts.file_type or "?",
        source_size=src.stat().st_size,
        task=req.task,
        n_ctx=req.source.ctx,
        text=run.text_facts,
        candidates=candidates,
        verdict=pick(candidates, budget, f"the source ({facts.file_type})"),
        work=work,
        reused=tuple(run.reused),
        failed=dict(run.failed),
        seconds=time.monotonic() - started,
    )


def check_keep_id(model_id: str) -> None:
    """Refuse a --keep id before the run, not after an hour of it."""
    from edgechat.models import registry

    if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*(:[A-Za-z0-9._-]+)?", model_id):
        raise InputError(
            f"--keep {model_id}: an id is letters, digits, '.', '_' and '-' (ID or ID:QUANT)"
        )
    if model_id.lower() in {k.lower() for k in registry.installed()}:
        raise InputError(f"'{model_id}' is installed already; choose another --keep id")


def keep(result: ShrinkResult, model_id: str) -> dict:
    """Install the pick under ``model_id``: moved into edgechat's models folder and
    registered (``models rm`` deletes it); its receipts follow it by hash."""
    import os
    import shutil

    from edgechat.models import receipts, registry
    from edgechat.paths import ensure_private_dir, paths

    if result.verdict.pick is None:
        raise EdgechatError(f"nothing to keep: {result.verdict.why}")
    chosen = result.by_id(result.verdict.pick)
    src = Path(chosen.path)
    if src.is_symlink() or src.resolve().parent != Path(result.work).resolve():
        raise EdgechatError(f"{src} is not a file of the work folder {result.work}: not kept")
    sha = receipts.file_sha256(src)
    model_id = model_id if ":" in model_id else f"{model_id}:{chosen.type}"
    check_keep_id(model_id)
    folder = ensure_private_dir(paths().data_dir / "models")
    dest = folder / f"{model_id.replace(':', '-')}.gguf"
    if dest.exists():
        raise EdgechatError(f"{dest} exists already; choose another --keep id")
    tmp = dest.with_name(f".{dest.name}.{os.getpid()}.partial")
    try:
        try:
            os.replace(src, dest)  # same file system: instant
        except OSError:
            shutil.copyfile(src, tmp)
            os.replace(tmp, dest)
            src.unlink()
    except OSError as e:
        tmp.unlink(missing_ok=True)
        raise EdgechatError(f"cannot move {src.name} into {folder}: {e.strerror or e}") from None
    receipts.remember(dest, sha)
    record = {
        "path": str(dest),
        "files": [str(dest)],
        "quant": chosen.type,
        "size": dest.stat().st_size,
        "source": "copy",
        "sha256": [sha],
        "made_by": "shrink",
        "imatrix": chosen.imatrix,
        "made_from": result.source,
    }
    registry.register(model_id, record)
    return {**record, "id": model_id}
