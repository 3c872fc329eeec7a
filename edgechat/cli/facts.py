"""`device`, `inspect`, `estimate`, `recommend`: what this machine and a model are, and what
fits.
"""

from __future__ import annotations

import json
from pathlib import Path

from edgechat.cli.common import _size, _warn


def cmd_device(args) -> int:
    from edgechat.facts.device import detect, format_size

    d = detect(args.memory, args.vram)
    if args.json:
        print(json.dumps(d.as_dict(), indent=2))
        return 0
    rows = [
        *_memory_rows(d),
        ("swap", f"{format_size(d.swap_total)} total, {format_size(d.swap_free)} free"),
        *_cpu_rows(d),
        ("simd", " ".join(d.simd) or "unknown"),
        ("board", d.board or "-"),
        ("os", d.os),
        ("models", f"{d.models_dir} ({format_size(d.disk_free)} free)"),
    ]
    for g in d.gpus:
        mem = (
            "unified memory"
            if g.unified
            else (f"{format_size(g.vram_total)} VRAM, {format_size(g.vram_free)} free")
        )
        rows.append(("gpu", f"{g.name} ({g.vendor}), {mem}"))
    if not d.gpus:
        rows.append(("gpu", "none found"))
    offload = {True: "GPU offload", False: "CPU only", None: "unknown"}[d.gpu_offload]
    rows.append(("llama.cpp", f"{', '.join(d.llama_backends) or 'not installed'} ({offload})"))
    rows.append(("kernels", _kernels_line()))
    if d.overrides:
        rows.append(("assumed", ", ".join(d.overrides)))
    for key, value in rows:
        print(f"{key:<10} {value}")
    return 0


def _kernels_line() -> str:
    """llama.cpp's CPU kernels a load uses here, and why (facts/kernels.py)."""
    from edgechat.doctor import kernels_setting
    from edgechat.facts import kernels

    now = kernels.current(kernels_setting())
    if now is None:
        return "not checked yet: the first model load checks them (seconds, once)"
    return f"{now.title} ({now.why})"


def _memory_rows(d) -> list[tuple[str, str]]:
    """RAM as this process may use it; under a cgroup limit, the host's beside it."""
    from edgechat.facts.device import format_size as size

    lim = d.limits
    assumed = any(o.startswith(("memory=", "gpu=metal")) for o in d.overrides)
    if lim.memory is None or assumed:
        return [("memory", f"{size(d.ram_total)} total, {size(d.ram_available)} available")]
    return [
        ("memory", f"{size(d.ram_total)} for this process, {size(d.ram_available)} free"),
        ("host", f"{size(d.host_ram_total)} total, {size(d.host_ram_available)} available"),
        ("limit", f"memory: {lim.memory_group}"),
    ]


def _cpu_rows(d) -> list[tuple[str, str]]:
    """The CPU; under a CPU quota or an affinity mask, what this process may use of it."""
    from edgechat.text import plural

    lim = d.limits
    cores = f"{d.cores_physical or '?'} physical / {d.cores_logical or '?'} logical"
    rows = [("cpu", f"{d.cpu_model or 'unknown'} ({d.arch}), {cores}")]
    usable = d.cores_usable
    if usable is None or usable >= (d.cores_physical or d.cores_logical or usable):
        return rows
    rows[0] = ("cpu", f"{rows[0][1]}; this process may use {plural(usable, 'core')}")
    if lim.cpu_quota:
        rows.append(("limit", f"{plural(lim.cpu_quota, 'CPU')}: {lim.cpu_group}"))
    if lim.cpus_allowed:
        rows.append(("limit", f"affinity: {plural(lim.cpus_allowed, 'CPU')}"))
    return rows


def cmd_inspect(args) -> int:
    from edgechat.cli.table import num, size
    from edgechat.facts.device import format_size
    from edgechat.facts.gguf import inspect
    from edgechat.text import clean

    f = inspect(args.target)
    if not args.target.startswith(("http://", "https://")):
        from edgechat.facts.probe import check_loads

        check_loads(Path(args.target).expanduser())  # facts only of what llama.cpp loads
    if args.json:
        print(json.dumps(f.as_dict(with_tensors=args.tensors), indent=2))
        return 0
    kv = sorted(set(f.n_head_kv))
    swa = sum(f.swa_layers)
    rows = [
        ("model", f"{f.name or '-'} ({f.architecture}, GGUF v{f.version})"),
        ("params", f"{f.n_params / 1e9:.3f} B"),
        ("quant", f"{f.file_type or '?'}, {f.bits_per_weight:.2f} bits per weight"),
        ("weights", f"{format_size(f.tensor_bytes)} (file {format_size(f.file_size)})"),
        ("layers", str(f.n_layers)),
        ("embedding", f"{f.n_embd}, feed-forward {f.n_ff or '?'}"),
        ("heads", f"{f.n_head} query, {'/'.join(map(str, kv))} KV, head size {f.head_dim_k}"),
        ("context", f"{f.context_length} trained"),
        (
            "window",
            f"{f.sliding_window} tokens on {swa} of {f.n_layers} layers"
            if f.sliding_window
            else "none (full attention)",
        ),
        ("vocab", str(f.n_vocab)),
        ("template", "yes" if f.chat_template else "no chat template"),
    ]
    for key, value in rows:
        print(f"{key:<10} {clean(value)}")  # general.name and the rest are the file's own text
    print("mix")
    for qtype, m in f.quant_mix.items():
        share = m["bytes"] / f.tensor_bytes if f.tensor_bytes else 0
        word = "tensor" if m["tensors"] == 1 else "tensors"
        print(
            f"  {clean(qtype):<8} {num(m['tensors'], 4, 0)} {word:<7} "
            f"{num(m['params'] / 1e6, 9)} M params {size(m['bytes'], 10)} ({share:.0%})"
        )
    return 0


def _gpu_plan(est, n_layers: int) -> str:
    """What the plan does with the GPU, in llama.cpp's own count (the head is a layer)."""
    if est.n_gpu_layers > n_layers:
        return f"all {n_layers + 1} layers on the GPU ({est.backend})"
    if est.n_gpu_layers:
        return (
            f"{est.n_gpu_layers} of {n_layers + 1} layers on the GPU ({est.backend}): the output "
            f"head and the last {est.n_gpu_layers - 1}"
        )
    if est.op_offload:
        return f"weights in RAM, large batches on the GPU ({est.backend})"
    return "CPU only"


def cmd_estimate(args) -> int:
    from edgechat import config
    from edgechat.facts.device import detect
    from edgechat.models.target import locate
    from edgechat.planning.fit import plan_for
    from edgechat.planning.gpu import GPU_RUNTIME, RUNTIME_VARIES
    from edgechat.planning.plan import RunPlan
    from edgechat.planning.recommend import speed_text
    from edgechat.planning.speed import cpu_bandwidth, tokens_per_second

    settings = config.load()
    target = locate(args.model, settings.default_model, warn=_warn)
    if target.source == "file":
        from edgechat.facts.probe import check_loads

        check_loads(target.path)  # an estimate only for what llama.cpp would load
    device = detect(args.memory, args.vram, args.gpu)
    gpu_layers = args.gpu_layers if args.gpu_layers is not None else settings.gpu_layers
    kv = args.kv_cache or settings.kv_cache
    plan = RunPlan(
        target.path,
        n_ctx=args.ctx or settings.ctx,
        n_gpu_layers=max(0, gpu_layers),
        n_seq=args.parallel or 1,
        type_k=kv,
        type_v=kv,
    )
    est, fit = plan_for(plan, target.shape, device, auto_gpu=gpu_layers < 0)
    speed = tokens_per_second(target.shape, est, device, cpu_bandwidth(device))
    if args.json:
        out = {
            "model": target.label,
            "source": target.source,
            "quant": target.quant,
            "params": target.shape.n_params,
            "weights_bytes": target.shape.weight_bytes,
            **est.as_dict(),
            "fit": fit.label,
            "fit_reason": fit.why or None,
            "ram_available_bytes": fit.ram_available,
            "vram_free_bytes": fit.vram_free,
            "tokens_per_s": float(speed_text(speed.tokens_per_s)),
            "speed_bound": speed.bound,
            "assumed": list(device.overrides),
        }
        if est.backend:
            out["gpu_runtime_note"] = RUNTIME_VARIES
        out["model_path"] = str(target.path)
        print(json.dumps(out, indent=2))
        return 0
    from edgechat.text import clean

    print(f"model      {clean(target.label)} ({target.source})")
    print(
        f"weights    {_size(target.shape.weight_bytes)}, {target.shape.n_params / 1e9:.2f} B params"
    )
    seqs = f" x {plan.n_seq} replies at once" if plan.n_seq > 1 else ""
    print(
        f"plan       context {est.n_ctx} tokens{seqs} ({kv} KV cache), "
        f"{_gpu_plan(est, target.shape.n_layers)}"
    )
    print(f"{'part':<18} {'RAM':>10} {'VRAM':>10}")
    for name, (ram, vram) in est.parts.items():
        if ram or vram:
            print(
                f"  {name:<16} {_size(ram) if ram else '-':>10} {_size(vram) if vram else '-':>10}"
            )
    print(f"{'peak':<18} {_size(est.ram_peak):>10} {_size(est.vram) if est.vram else '-':>10}")
    if est.ram_loading and est.ram_loading >= est.ram_peak:
        print(
            f"  RAM peaks while loading (the whole file passes through it); "
            f"needed while generating: {_size(est.ram_needed)}"
        )
    elif est.ram_needed != est.ram_peak:
        print(f"  needed (the OS can reclaim the rest): {_size(est.ram_needed)}")
    if est.backend and est.backend in GPU_RUNTIME:
        print(f"  {RUNTIME_VARIES}; {est.backend}: {GPU_RUNTIME[est.backend].source}")
    print(f"speed      about {speed_text(speed.tokens_per_s)} tokens/s ({speed.bound}-bound)")
    print(f"fit        {fit.label}" + (f": {fit.why}" if fit.why else ""))
    if device.overrides:
        print(f"assumed    {', '.join(device.overrides)}")
    return 0


def cmd_recommend(args) -> int:
    from edgechat import config, service
    from edgechat.cli.table import wrap
    from edgechat.facts.device import detect
    from edgechat.models import credentials, receipts
    from edgechat.models.registry import installed as installed_models
    from edgechat.planning.budget import default as default_budget
    from edgechat.planning.recommend import nothing_fits

    settings = config.load()
    device = detect(args.memory, args.vram, args.gpu)
    kv = args.kv_cache or settings.kv_cache
    choices = service.recommendations(device, args.task, args.ctx or settings.ctx, kv, warn=_warn)
    installed = installed_models()
    budget = default_budget(args.task)
    mine = [  # installed models measured on the user's text, catalog or not
        {
            "id": key,
            "summary": r.summary(),
            "figures": r.figures.as_dict(),
            "meets_budget": budget.meets(r.figures),
            "verdict": r.verdict(budget),
        }
        for key, r in receipts.installed().items()
        if key in installed
    ]
    shown = choices if args.all else choices[: max(1, args.limit)]
    none = nothing_fits(choices, device)
    if args.json:
        print(
            json.dumps(
                {
                    "task": args.task,
                    "device": {
                        "ram_total_bytes": device.ram_total,
                        "ram_available_bytes": device.ram_available,
                        "gpus": [g.name for g in device.gpus],
                        "assumed": list(device.overrides),
                    },
                    "signed_in": credentials.token()[0] is not None,
                    "kv_cache": kv,
                    "fit_means": "memory only: tokens_per_s is the speed estimate",
                    "nothing_fits": none,
                    "choices": [c.as_dict() for c in shown],
                    "budget": {**budget.as_dict(), "words": budget.describe()},
                    "measured": mine,
                },
                indent=2,
            )
        )
        return 0
    gpu = ", ".join(f"{g.name} {_size(g.vram_total)}" for g in device.gpus) or "no GPU"
    print("\n".join(wrap(f"for {args.task} on {_size(device.ram_total)} RAM, {gpu}:", 2, first=0)))
    print("\n".join(ranking_table(choices, shown)))
    if none:
        print("\n".join(wrap(none, 2, first=0)))
    if mine:
        print(f"measured on your text ({args.task} budget: {budget.describe()}):")
        for m in mine:
            print("\n".join(wrap(f"{m['id']}: {m['summary']}, {m['verdict']}", 5, first=3)))
    if device.overrides:
        print(f"assumed: {', '.join(device.overrides)}")
    return 0


def ranking_table(choices: list, shown: list) -> list[str]:
    """The ranking in 80 columns: installed models marked (●), never moved up; an id too
    long for its column on a line of its own; the reason wrapped under it; installed
    models ranked below the cut named after it, with their places."""
    from edgechat.cli.table import labelled, num, size, wrap
    from edgechat.planning.recommend import speed_text

    lines = [f"     {'model':<34} {'RAM':>9} {'VRAM':>9} {'tok/s':>6}  memory fit"]
    for i, c in enumerate(shown, 1):
        e = c.estimate
        vram = "unified" if e.backend == "metal" else (size(e.vram, 9) if e.vram else "-")
        tps = speed_text(c.speed.tokens_per_s)
        tps = tps if len(tps) <= 6 else num(c.speed.tokens_per_s, 6, 0)
        figures = f"{size(e.ram_needed, 9)} {vram:>9} {tps:>6}  {c.fit.label}"
        mark = "●" if c.installed else " "
        lines += labelled(f"{i:>2} {mark} {c.id}", 39, figures)
        lines += wrap(c.reason, 5)
    below = [f"{c.id} (#{i})" for i, c in enumerate(choices, 1) if c.installed and i > len(shown)]
    if below:
        lines += wrap(f"also installed, ranked lower: {', '.join(below)}", 2, first=0)
    if any(c.installed for c in shown):
        lines.append("● installed: on this machine, works offline")
    return lines


def register(sub) -> None:
    from edgechat.cli.options import add_device_options, add_gpu_option, add_json, add_kv_cache
    from edgechat.limits import choices, flag

    dev = sub.add_parser(
        "device", help="what this machine has: RAM, CPU, GPUs, disk, llama.cpp build"
    )
    add_device_options(dev)
    add_json(dev)
    dev.set_defaults(func=cmd_device)

    ins = sub.add_parser("inspect", help="facts from a GGUF header (a file or an http(s) URL)")
    ins.add_argument("target", metavar="PATH|URL")
    add_json(ins)
    ins.add_argument("--tensors", action="store_true", help="with --json: list every tensor")
    ins.set_defaults(func=cmd_inspect)

    est = sub.add_parser(
        "estimate", help="memory and speed a model needs here, before downloading or loading it"
    )
    est.add_argument("model", help="a GGUF file, an http(s) URL of one, or a catalog ID[:QUANT]")
    est.add_argument(
        "--ctx", type=flag("ctx"), metavar="N", help="context size in tokens (default 4096)"
    )
    est.add_argument(
        "--gpu-layers",
        type=flag("gpu_layers"),
        metavar="N",
        help="layers to offload (default: all that fit)",
    )
    est.add_argument(
        "--parallel",
        type=flag("parallel"),
        metavar="N",
        help="replies generated at once (`serve --parallel`): a KV cache each (default 1)",
    )
    add_kv_cache(est)
    add_device_options(est)
    add_gpu_option(est)
    add_json(est, "print the estimate as JSON")
    est.set_defaults(func=cmd_estimate)

    rec = sub.add_parser("recommend", help="the models and quants that suit this device, ranked")
    rec.add_argument("--task", choices=choices("task"), default="chat", help="what for")
    rec.add_argument(
        "--ctx", type=flag("ctx"), metavar="N", help="context size in tokens (default 4096)"
    )
    rec.add_argument(
        "-n", "--limit", type=flag("limit"), default=8, metavar="N", help="show the best N"
    )
    rec.add_argument("--all", action="store_true", help="show every catalog model for the task")
    add_kv_cache(rec)
    add_device_options(rec)
    add_gpu_option(rec)
    add_json(rec, "print the ranking as JSON")
    rec.set_defaults(func=cmd_recommend)
