"""The one way in to a model, for every front end and lab command: what the user asked
for (``ModelRequest``) -> a plan that fits (``plan_model``) -> a loaded engine
(``open_model``), or a server's model when the request names one. The estimate that
judged the plan is kept and returned, so what was estimated is what runs; after the
load, ``chat_check`` says what every front end must tell the user. Nothing here
prints: warnings go to ``say`` and into the result.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from edgechat.config import Settings
from edgechat.errors import EdgechatError
from edgechat.planning.plan import RunPlan, Sampling

if TYPE_CHECKING:
    from edgechat.facts.device import Device
    from edgechat.llama.contract import ChatEngine
    from edgechat.planning.fit import Fit
    from edgechat.planning.memory import MemoryEstimate
    from edgechat.planning.recommend import Choice

Say = Callable[[str], None]


@dataclass(frozen=True)
class ModelRequest:
    """What the user asked for, with the settings' defaults filled in."""

    model: str | None = None  # a GGUF path or installed id; None: default_model, else starter
    ctx: int = 4096
    threads: int = 0  # 0: chosen at load from the free cores (planning/threads.py)
    gpu_layers: int = -1  # -1: as many as fit the GPU (all when they do)
    memory: str | None = None  # assume this much RAM (like 8G)
    vram: str | None = None  # assume this much GPU memory
    force: bool = False  # load even when the estimate says it won't fit
    default_model: str = ""  # the configured default, used when ``model`` is None
    type_k: str = "f16"  # KV cache types: they change both the estimate and the load
    type_v: str = "f16"
    verbose: bool = False  # llama.cpp's own log on stderr
    remote: str | None = None  # a server's URL: its model answers, not a local one
    remote_model: str | None = None  # the server's model (default: its first)
    api_key: str | None = None  # the server's key (default: EDGECHAT_API_KEY, keyring)
    parallel: int = 1  # sequences decoded together (serve); 0: as many as fit, up to 4
    exact: bool = False  # batched replies exactly as alone (serve --exact; RunPlan.exact_batches)
    cpu_kernels: str = "auto"  # llama.cpp's CPU kernels (RunPlan.cpu_kernels)

    @classmethod
    def from_args(cls, args, settings: Settings) -> ModelRequest:
        """From parsed options (argparse, or any object with the same names) and settings."""

        def opt(name: str):
            return getattr(args, name, None)

        kv = opt("kv_cache") or settings.kv_cache
        return cls(
            model=opt("model"),
            ctx=opt("ctx") or settings.ctx,
            threads=opt("threads") if opt("threads") is not None else settings.threads,
            gpu_layers=opt("gpu_layers") if opt("gpu_layers") is not None else settings.gpu_layers,
            memory=opt("memory"),
            vram=opt("vram"),
            force=bool(opt("force")),
            default_model=settings.default_model,
            type_k=kv,
            type_v=kv,
            verbose=bool(opt("verbose")),
            remote=opt("remote"),
            remote_model=opt("remote_model"),
            api_key=opt("api_key"),
            cpu_kernels=opt("cpu_kernels") or settings.cpu_kernels,
        )

    def for_model(self, model: str | None) -> ModelRequest:
        return replace(self, model=model)


@dataclass(frozen=True)
class Planned:
    """A plan checked against this device, and what it will cost."""

    plan: RunPlan
    estimate: MemoryEstimate
    fit: Fit
    label: str  # the installed id when there is one, else the file name
    warnings: tuple[str, ...] = ()
    expected_tps: float | None = None  # the speed estimate here (None: bandwidth not known)


@dataclass(frozen=True)
class Loaded:
    engine: ChatEngine
    estimate: MemoryEstimate | None  # None for a server's model: its memory is its own
    fit: Fit | None
    warnings: tuple[str, ...]
    label: str


def sampling(settings: Settings, args=None, **overrides) -> Sampling:
    """The sampler settings: the user's settings, then ``overrides``, then the options
    the user typed (--temperature, --max-tokens, --seed), which win."""
    values = settings.sampling_values()
    values.update(overrides)
    for name in ("temperature", "max_tokens", "seed"):
        if getattr(args, name, None) is not None:
            values[name] = getattr(args, name)
    return Sampling(**values)


def _label(path: Path, model: str | None) -> str:
    from edgechat.models import registry

    if model and not Path(model).expanduser().is_file():
        return model
    return next((k for k, p in registry.installed().items() if p == path), path.name)


def plan_model(
    request: ModelRequest,
    device: Device | None = None,
    say: Say | None = None,
    what: str = "--model",
) -> Planned:
    """The plan to load for ``request``; raises with the figures and the ways out when it
    does not fit (unless ``force``, which turns the refusal into a warning). ``what``
    names where the model came from, for the message when it is not found."""
    from edgechat.llama import backend

    backend.load()  # llama.cpp before gguf's numpy, or a CUDA build crashes on load
    from edgechat.facts.device import detect
    from edgechat.facts.gguf import inspect_file
    from edgechat.models import registry
    from edgechat.planning.fit import plan_for, plan_parallel, refusal
    from edgechat.planning.memory import Shape

    if request.ctx < 64:
        raise EdgechatError(f"--ctx {request.ctx} is too small; use 512 or more")
    path = registry.resolve(request.model, request.default_model, what=what)
    plan = RunPlan(
        model_path=path,
        n_ctx=request.ctx,
        n_threads=request.threads,
        n_gpu_layers=max(0, request.gpu_layers),
        type_k=request.type_k,
        type_v=request.type_v,
        n_seq=max(1, request.parallel),
        exact_batches=request.exact,
        cpu_kernels=request.cpu_kernels,
    )
    shape = Shape.from_facts(inspect_file(path))
    device = device or detect(request.memory, request.vram)
    if request.parallel == 0:
        est, fit = plan_parallel(plan, shape, device, auto_gpu=request.gpu_layers < 0)
    else:
        est, fit = plan_for(plan, shape, device, auto_gpu=request.gpu_layers < 0)
    warnings = []
    if not fit.fits:
        if not request.force:
            raise EdgechatError(refusal(fit, est))
        warnings.append(f"loading anyway (--force): {fit.why}")
    for line in warnings:
        if say:
            say(line)
    expected = _expected_tps(shape, est, device)
    return Planned(est.plan, est, fit, _label(path, request.model), tuple(warnings), expected)


def _expected_tps(shape, est, device) -> float | None:
    """Generation speed the estimate expects here, for telling a reply that runs far
    below it (planning/threads.py); None until the CPU's bandwidth has been measured."""
    from edgechat.planning.speed import known_cpu_bandwidth, tokens_per_second

    gb_s = known_cpu_bandwidth(device)
    return tokens_per_second(shape, est, device, gb_s).tokens_per_s if gb_s else None


def load(planned: Planned, verbose: bool = False, say: Say | None = None) -> Loaded:
    """Load a checked plan (on the thread that will run the model). What the file gets
    wrong but can be run anyway (a chat template that does not parse) goes to ``say``."""
    from edgechat.llama.engine import Engine
    from edgechat.models import registry

    engine = Engine(planned.plan, verbose=verbose, say=say)
    engine.expected_tps = planned.expected_tps
    try:
        registry.touch(planned.plan.model_path)
    except EdgechatError as e:  # when it was last used is worth no lost chat
        if say:
            say(f"not noted as used: {e}")
    warnings = list(planned.warnings)
    info = engine.info()
    if info.get("chat_template_problem"):
        warnings.append(
            f"the chat template in {planned.plan.model_path.name} "
            f"{info['chat_template_problem']}, which may suit the model less"
        )
        if say:
            say(warnings[-1])
    return Loaded(engine, planned.estimate, planned.fit, tuple(warnings), planned.label)


def connect(request: ModelRequest, say: Say | None = None) -> Loaded:
    """The server's model ``request.remote`` names; says where the text will go before
    any is sent."""
    from edgechat.llama.remote import open_remote
    from edgechat.llama.remote_http import shown
    from edgechat.models import credentials

    key, _ = credentials.api_key(request.api_key)
    engine = open_remote(request.remote, request.remote_model, key)
    name = shown(engine.model, 80)  # the server's words: no terminal escapes
    # No redirect is followed (llama/remote_http.py): this host is the only one it reaches.
    notice = (
        f"remote model {name} at {engine.url}: your text is sent to {engine.where} "
        "and answered there, not on this machine"
    )
    if say:
        say(notice)
    return Loaded(engine, None, None, (notice,), f"{name} @ {engine.where}")


def open_model(
    request: ModelRequest,
    say: Say | None = None,
    device: Device | None = None,
    *,
    loading: Say | None = None,
    run: Callable | None = None,
) -> Loaded:
    """Plan, check and load the model ``request`` names, or connect to its server.

    ``loading(file name)`` is told just before a local load starts (for a progress
    line); ``run(fn, *args)`` runs the load where the engine will live (the app's llama
    thread) and returns its result; by default it runs here.
    """
    if request.remote:
        return connect(request, say)
    planned = plan_model(request, device, say)
    if loading:
        loading(planned.plan.model_path.name)
    if run is None:
        return load(planned, request.verbose, say)
    return run(load, planned, request.verbose, say)


@dataclass(frozen=True)
class ChatCheck:
    """What a front end must tell the user once a model is loaded for chatting."""

    refusal: str | None  # the model cannot hold a chat (a base model), and why
    warnings: tuple[str, ...]  # it can, but not quite as asked (context capped)


def chat_check(engine: ChatEngine, wanted_ctx: int) -> ChatCheck:
    """A base model is refused with the reason; a context capped at what the model was
    trained for is said. A server's model is the server's to judge."""
    if not engine.is_local:
        return ChatCheck(None, ())
    from edgechat.llama.base_model import base_model_reason

    warnings = []
    if engine.n_ctx < wanted_ctx:
        info = engine.info()
        warnings.append(
            f"context capped at {engine.n_ctx} tokens (asked {wanted_ctx}): "
            f"{Path(info['path']).name} was trained for {info.get('n_ctx_train', engine.n_ctx)}"
        )
    return ChatCheck(base_model_reason(engine), tuple(warnings))


def recommendations(
    device: Device,
    task: str = "chat",
    n_ctx: int = 4096,
    kv_cache: str = "f16",
    cpu_gb_s: float | None = None,
    warn: Say | None = None,
    catalog_models: dict | None = None,
) -> list[Choice]:
    """The one ranking `recommend` and the app's picker both show: the catalog's models
    and the ones on this machine, for ``task`` here, weighed by the quality receipts of
    what was measured on the user's text. ``cpu_gb_s``: the CPU's bandwidth when the
    caller measured it already (the app, off its UI thread); ``warn``: catalog entries
    left out; ``catalog_models``: the catalog as the caller read it (default: load it)."""
    from edgechat.models import credentials, receipts, registry
    from edgechat.planning import catalog
    from edgechat.planning.recommend import recommend
    from edgechat.planning.speed import cpu_bandwidth

    return recommend(
        catalog.load(warn=warn) if catalog_models is None else catalog_models,
        device,
        task,
        n_ctx,
        cpu_gb_s if cpu_gb_s is not None else cpu_bandwidth(device),
        signed_in=credentials.token()[0] is not None,
        kv_cache=kv_cache,
        installed=registry.installed(),
        measured={key: r.figures for key, r in receipts.installed().items()},
    )
