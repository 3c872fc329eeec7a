"""The ``edgechat`` command line: parse arguments, call the services, render.

Start-up must stay instant (a Raspberry Pi runs this): only the standard library is
imported here; each command imports what it needs when it runs.

Exit codes: 0 ok, 1 a problem the message explains, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
from pathlib import Path

from edgechat import __version__


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("-m", "--model", help="a GGUF file path or an installed model id")
    p.add_argument("--ctx", type=int, metavar="N", help="context size in tokens (default 4096)")
    p.add_argument("--threads", type=int, metavar="N", help="CPU threads (default: physical cores)")
    p.add_argument(
        "--gpu-layers",
        type=int,
        metavar="N",
        help="layers to offload to the GPU (default: all that fit)",
    )
    p.add_argument("--verbose", action="store_true", help="show llama.cpp's own log")
    p.add_argument(
        "--force", action="store_true", help="load even when the memory estimate says it won't fit"
    )
    _add_device_options(p)


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", metavar="SIZE", help="assume this much RAM (like 8G)")
    p.add_argument("--vram", metavar="SIZE", help="assume this much GPU memory (like 6G)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="edgechat",
        description="A private assistant that runs entirely on this device. "
        "With no command it opens a chat.",
    )
    parser.add_argument("--version", action="version", version=f"edgechat {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    chat = sub.add_parser(
        "chat", help="chat with a model, offline (full-screen; --plain for lines)"
    )
    _add_model_options(chat)
    chat.add_argument("prompt", nargs="?", help="answer this one message and exit")
    chat.add_argument("--plain", action="store_true", help="line mode, for SSH and scripts")
    chat.add_argument("--system", metavar="TEXT", help="system prompt for this session")
    chat.add_argument("--temperature", type=float, metavar="T", help="sampling temperature")
    chat.add_argument("--seed", type=int, help="sampling seed, for repeatable replies")
    chat.add_argument("--max-tokens", type=int, metavar="N", help="longest reply in tokens")
    chat.add_argument("--json", action="store_true", help="print each reply as a JSON line")
    chat.set_defaults(func=cmd_chat)

    summ = sub.add_parser(
        "summarise",
        aliases=["summarize"],
        help="summarise documents of any length, offline (text, Markdown, HTML, PDF, DOCX)",
    )
    summ.add_argument("files", nargs="+", metavar="FILE", help="files, or - for standard input")
    _add_model_options(summ)
    summ.add_argument("--length", choices=["short", "medium", "long"], default="medium")
    summ.add_argument("--style", choices=["paragraph", "bullets"], default="paragraph")
    summ.add_argument("--focus", metavar="TEXT", help="what the reader cares about")
    summ.add_argument("--out", metavar="FILE", help="write the summary to FILE (atomically)")
    summ.add_argument("--json", action="store_true", help="print the summary and its stats as JSON")
    summ.set_defaults(func=cmd_summarise)

    dev = sub.add_parser(
        "device", help="what this machine has: RAM, CPU, GPUs, disk, llama.cpp build"
    )
    _add_device_options(dev)
    dev.add_argument("--json", action="store_true", help="print as JSON")
    dev.set_defaults(func=cmd_device)

    ins = sub.add_parser("inspect", help="facts from a GGUF header (a file or an http(s) URL)")
    ins.add_argument("target", metavar="PATH|URL")
    ins.add_argument("--json", action="store_true", help="print as JSON")
    ins.add_argument("--tensors", action="store_true", help="with --json: list every tensor")
    ins.set_defaults(func=cmd_inspect)

    est = sub.add_parser(
        "estimate", help="memory and speed a model needs here, before downloading or loading it"
    )
    est.add_argument("model", help="a GGUF file, an http(s) URL of one, or a catalog ID[:QUANT]")
    est.add_argument("--ctx", type=int, metavar="N", help="context size in tokens (default 4096)")
    est.add_argument(
        "--gpu-layers", type=int, metavar="N", help="layers to offload (default: all that fit)"
    )
    _add_device_options(est)
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    est.set_defaults(func=cmd_estimate)

    rec = sub.add_parser("recommend", help="the models and quants that suit this device, ranked")
    rec.add_argument(
        "--task", choices=["chat", "code", "math", "summarise"], default="chat", help="what for"
    )
    rec.add_argument("--ctx", type=int, metavar="N", help="context size in tokens (default 4096)")
    rec.add_argument("-n", "--limit", type=int, default=8, metavar="N", help="show the best N")
    rec.add_argument("--all", action="store_true", help="show every catalog model for the task")
    _add_device_options(rec)
    rec.add_argument("--json", action="store_true", help="print the ranking as JSON")
    rec.set_defaults(func=cmd_recommend)

    mod = sub.add_parser("models", help="list, pull, remove, import and verify models")
    msub = mod.add_subparsers(dest="action", metavar="ACTION")
    mod.set_defaults(func=cmd_models_list, json=False)
    m_list = msub.add_parser("list", help="the models on this machine")
    m_list.add_argument("--json", action="store_true", help="print them as JSON")
    m_list.set_defaults(func=cmd_models_list)
    m_pull = msub.add_parser("pull", help="download ID[:QUANT] or owner/repo[:QUANT], verified")
    m_pull.add_argument(
        "model", help="a catalog id like qwen2.5-1.5b-instruct[:Q4_K_M], or owner/repo:QUANT"
    )
    m_pull.add_argument("--json", action="store_true", help="print the result as JSON")
    m_pull.set_defaults(func=cmd_models_pull)
    m_rm = msub.add_parser("rm", help="remove a pulled or imported model and free its space")
    m_rm.add_argument("model", help="the model id, as `edgechat models list` shows it")
    m_rm.add_argument("--json", action="store_true", help="print the result as JSON")
    m_rm.set_defaults(func=cmd_models_rm)
    m_imp = msub.add_parser("import", help="register a local GGUF file (no copy unless --copy)")
    m_imp.add_argument("path", help="the GGUF file")
    m_imp.add_argument("--id", help="the id to give it (default: from the file name)")
    m_imp.add_argument("--copy", action="store_true", help="copy it into edgechat's data dir")
    m_imp.add_argument("--json", action="store_true", help="print the result as JSON")
    m_imp.set_defaults(func=cmd_models_import)
    m_ver = msub.add_parser("verify", help="re-check pulled files against the hub's SHA-256")
    m_ver.add_argument("model", nargs="?", help="one model id (default: all pulled models)")
    m_ver.add_argument("--json", action="store_true", help="print the result as JSON")
    m_ver.set_defaults(func=cmd_models_verify)
    m_info = msub.add_parser("info", help="catalog facts, header facts and the memory estimate")
    m_info.add_argument("model", help="an installed id, a catalog ID[:QUANT] or a GGUF path")
    m_info.add_argument("--ctx", type=int, metavar="N", help="context for the estimate")
    m_info.add_argument("--json", action="store_true", help="print it as JSON")
    m_info.set_defaults(func=cmd_models_info)

    login = sub.add_parser("login", help="store a Hugging Face token for gated models")
    login.add_argument("--token", help=argparse.SUPPRESS)  # for scripts; prefer the prompt
    login.set_defaults(func=cmd_login)
    logout = sub.add_parser("logout", help="remove the stored Hugging Face token")
    logout.set_defaults(func=cmd_logout)

    ben = sub.add_parser("bench", help="measure load, prompt and generation speed, TTFT, memory")
    ben.add_argument(
        "models", nargs="*", metavar="MODEL", help="paths or ids (default: the default)"
    )
    ben.add_argument("--ctx", type=int, default=2048, metavar="N", help="context (default 2048)")
    ben.add_argument("--repeat", type=int, default=3, metavar="N", help="runs per model (3)")
    ben.add_argument("--tokens", type=int, default=128, metavar="N", help="tokens to generate")
    ben.add_argument("--json", action="store_true", help="print the table as JSON")
    ben.set_defaults(func=cmd_bench)

    qual = sub.add_parser(
        "quality", help="perplexity, KL divergence and top-1 agreement against a reference"
    )
    qual.add_argument("model", help="the model to judge (path or id)")
    qual.add_argument("--ref", required=True, help="the reference (e.g. the F16 or Q8_0 file)")
    qual.add_argument("--text", required=True, metavar="FILE", help="your own text")
    qual.add_argument("--ctx", type=int, default=512, metavar="N", help="chunk size (512)")
    qual.add_argument("--json", action="store_true", help="print the figures as JSON")
    qual.set_defaults(func=cmd_quality)

    qnt = sub.add_parser("quantize", aliases=["quantise"], help="quantise a GGUF model yourself")
    qnt.add_argument("src", metavar="IN.gguf")
    qnt.add_argument("dst", metavar="OUT.gguf")
    qnt.add_argument("--type", required=True, help="Q4_K_M, Q5_K_M, Q6_K, Q8_0, Q4_0 ...")
    qnt.add_argument(
        "--recipe",
        choices=["uniform", "mixed"],
        default="mixed",
        help="mixed keeps embeddings and output head at higher precision",
    )
    qnt.add_argument(
        "--allow-requantize",
        action="store_true",
        help="quantise a file that is already quantised (loses quality)",
    )
    qnt.add_argument("--json", action="store_true", help="print the result as JSON")
    qnt.set_defaults(func=cmd_quantize)

    doc = sub.add_parser("doctor", help="check this install and print the fix for each problem")
    doc.add_argument("--json", action="store_true", help="print the checks as JSON")
    doc.set_defaults(func=cmd_doctor)

    cfg = sub.add_parser("config", help="show paths and settings; set or unset a setting")
    cfg.add_argument("action", nargs="?", choices=["show", "set", "unset"], default="show")
    cfg.add_argument("key", nargs="?")
    cfg.add_argument("value", nargs="?")
    cfg.add_argument("--json", action="store_true", help="print as JSON")
    cfg.set_defaults(func=cmd_config)
    return parser


# -- helpers ---------------------------------------------------------------------------


def _interactive() -> bool:
    return sys.stdin.isatty()


def _load_engine(args, settings):
    """Resolve the model, check it fits, load it, with a progress line on a terminal."""
    from edgechat import store
    from edgechat.engine import Engine
    from edgechat.loading import checked_plan

    plan = checked_plan(
        args.model,
        settings,
        args.ctx,
        args.threads,
        args.gpu_layers,
        args.memory,
        args.vram,
        args.force,
    )
    name = plan.model_path.name
    show = sys.stderr.isatty()
    if show:
        sys.stderr.write(f"loading {name} ...")
        sys.stderr.flush()
    engine = Engine(plan, verbose=args.verbose)
    store.touch(plan.model_path)
    if show:
        sys.stderr.write(
            f"\rloaded {name} in {engine.load_s:.1f} s · context {engine.n_ctx} tokens\n"
        )
    return engine


def _sampling(args, settings, **overrides):
    from edgechat.plan import Sampling

    values = dict(
        temperature=settings.temperature,
        top_k=settings.top_k,
        top_p=settings.top_p,
        min_p=settings.min_p,
        max_tokens=settings.max_tokens,
    )
    values.update(overrides)
    if getattr(args, "temperature", None) is not None:
        values["temperature"] = args.temperature
    if getattr(args, "max_tokens", None) is not None:
        values["max_tokens"] = args.max_tokens
    if getattr(args, "seed", None) is not None:
        values["seed"] = args.seed
    return Sampling(**values)


# -- commands --------------------------------------------------------------------------


def _wants_app(args) -> bool:
    """The full-screen app, unless asked for lines or talking to a pipe."""
    if args.plain or args.prompt or args.json:
        return False
    return sys.stdin.isatty() and sys.stdout.isatty() and os.environ.get("TERM") != "dumb"


def cmd_chat(args) -> int:
    from edgechat import config, privacy
    from edgechat.plain import PlainChat

    if _wants_app(args):
        from edgechat.tui.app import LaunchOptions, run

        return run(
            LaunchOptions(
                args.model,
                args.ctx,
                args.threads,
                args.gpu_layers,
                args.memory,
                args.vram,
                args.force,
                start="auto" if getattr(args, "no_command", False) else "chat",
            )
        )
    privacy.go_offline()
    settings = config.load()
    engine = _load_engine(args, settings)
    system = args.system if args.system is not None else settings.system_prompt
    session = PlainChat(engine, _sampling(args, settings), system, as_json=args.json)
    if args.prompt:
        session.ask(args.prompt)
        return 0
    interactive = _interactive()
    if interactive:
        with contextlib.suppress(ImportError):
            import readline  # noqa: F401 - line editing and history for input()
        sys.stderr.write("Type a message; /help for commands, Ctrl-D to leave.\n")
        return session.run(lambda: input(">>> "), interactive=True)

    def read_line() -> str:
        line = sys.stdin.readline()
        if not line:
            raise EOFError
        return line.rstrip("\n")

    return session.run(read_line, interactive=False)


def _progress_printer():
    """Chunks done of total and ETA on stderr: redrawn on a terminal, a line each otherwise."""
    tty = sys.stderr.isatty()

    def show(p) -> None:
        total = f"/{p.total}" if p.total else ""
        eta = (
            f", about {p.eta_s:.0f} s left"
            if p.eta_s is not None and p.done < (p.total or 0)
            else ""
        )
        what = {"map": "reading", "reduce": "combining", "final": "writing the summary"}[p.stage]
        line = f"{what}: {p.done}{total}{eta}" if p.stage != "final" else what
        if tty:
            sys.stderr.write(f"\r\033[K{line}")
            if p.stage == "final" and p.done:
                sys.stderr.write("\n")
        elif p.stage != "final" or not p.done:
            sys.stderr.write(line + "\n")
        sys.stderr.flush()

    return show


def _chained(docs) -> object:
    """The paragraphs of several documents in turn, each headed by its name."""
    for doc in docs:
        if len(docs) > 1:
            yield f"# {Path(doc.name).name}"
        yield from doc.paragraphs


def cmd_summarise(args) -> int:
    from edgechat import config, documents, privacy
    from edgechat.errors import EdgechatError
    from edgechat.summarise import Options, Summariser

    privacy.go_offline()
    settings = config.load()
    if args.files.count("-") > 1:
        raise documents.InputError("standard input (-) can be given once")
    docs = [documents.open_document(f) for f in args.files]  # bad input fails before loading
    engine = _load_engine(args, settings)
    summariser = Summariser(
        engine,
        Options(args.length, args.style, args.focus),
        _sampling(args, settings, temperature=0.3),
        progress=_progress_printer(),
    )
    sizes = [d.size for d in docs]
    result = summariser.run(_chained(docs), sum(sizes) if None not in sizes else None)
    if not result.text:
        sys.stderr.write("edgechat: the model returned an empty summary; try a larger model\n")
        return 1
    if args.out:
        from edgechat.paths import write_atomic

        try:
            write_atomic(Path(args.out).expanduser(), result.text + "\n")
        except EdgechatError:
            print(result.text)  # the summary took minutes: never lose it to a bad path
            raise
    if args.json:
        out = {
            "summary": result.text,
            "sources": [d.name for d in docs],
            "model": engine.info()["name"],
            "model_path": str(engine.plan.model_path),
            "length": args.length,
            "style": args.style,
            "focus": args.focus,
            "chunks": result.chunks,
            "levels": result.levels,
            "calls": len(result.calls),
            "tokens_in": result.tokens_in,
            "tokens_out": result.tokens_out,
            "seconds": round(result.seconds, 2),
            "engine_seconds": round(result.engine_seconds, 2),
            "n_ctx": engine.n_ctx,
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    elif not args.out:
        print(result.text)
    else:
        sys.stderr.write(f"summary written to {args.out}\n")
    return 0


def cmd_device(args) -> int:
    from edgechat.device import detect, format_size

    d = detect(args.memory, args.vram)
    if args.json:
        print(json.dumps(d.as_dict(), indent=2))
        return 0
    cores = f"{d.cores_physical or '?'} physical / {d.cores_logical or '?'} logical"
    rows = [
        ("memory", f"{format_size(d.ram_total)} total, {format_size(d.ram_available)} available"),
        ("swap", f"{format_size(d.swap_total)} total, {format_size(d.swap_free)} free"),
        ("cpu", f"{d.cpu_model or 'unknown'} ({d.arch}), {cores}"),
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
    if d.overrides:
        rows.append(("assumed", ", ".join(d.overrides)))
    for key, value in rows:
        print(f"{key:<10} {value}")
    return 0


def cmd_inspect(args) -> int:
    from edgechat.device import format_size
    from edgechat.gguf import inspect

    f = inspect(args.target)
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
        print(f"{key:<10} {value}")
    print("mix")
    for qtype, m in f.quant_mix.items():
        share = m["bytes"] / f.tensor_bytes if f.tensor_bytes else 0
        print(
            f"  {qtype:<8} {m['tensors']:>4} tensors {m['params'] / 1e6:>9.1f} M params "
            f"{format_size(m['bytes']):>10} ({share:.0%})"
        )
    return 0


def _size(n: int | None) -> str:
    from edgechat.device import format_size

    return format_size(n)


def cmd_estimate(args) -> int:
    from edgechat import config, store
    from edgechat.device import detect
    from edgechat.fit import plan_for
    from edgechat.plan import RunPlan
    from edgechat.speed import cpu_bandwidth, tokens_per_second

    settings = config.load()
    target = store.locate(args.model, settings.default_model)
    device = detect(args.memory, args.vram)
    gpu_layers = args.gpu_layers if args.gpu_layers is not None else settings.gpu_layers
    plan = RunPlan(target.path, n_ctx=args.ctx or settings.ctx, n_gpu_layers=max(0, gpu_layers))
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
            "tokens_per_s": round(speed.tokens_per_s, 1),
            "speed_bound": speed.bound,
            "assumed": list(device.overrides),
        }
        out["model_path"] = str(target.path)
        print(json.dumps(out, indent=2))
        return 0
    print(f"model      {target.label} ({target.source})")
    print(
        f"weights    {_size(target.shape.weight_bytes)}, {target.shape.n_params / 1e9:.2f} B params"
    )
    gpu = f", {est.n_gpu_layers} GPU layers ({est.backend})" if est.n_gpu_layers else ", CPU only"
    print(f"plan       context {est.n_ctx} tokens{gpu}")
    print(f"{'part':<18} {'RAM':>10} {'VRAM':>10}")
    for name, (ram, vram) in est.parts.items():
        if ram or vram:
            print(
                f"  {name:<16} {_size(ram) if ram else '-':>10} {_size(vram) if vram else '-':>10}"
            )
    print(f"{'peak':<18} {_size(est.ram_peak):>10} {_size(est.vram) if est.vram else '-':>10}")
    if est.ram_needed != est.ram_peak:
        print(f"  needed (the OS can reclaim the rest): {_size(est.ram_needed)}")
    print(f"speed      about {speed.tokens_per_s:.1f} tokens/s ({speed.bound}-bound)")
    print(f"fit        {fit.label}" + (f": {fit.why}" if fit.why else ""))
    if device.overrides:
        print(f"assumed    {', '.join(device.overrides)}")
    return 0


def cmd_recommend(args) -> int:
    from edgechat import catalog, config
    from edgechat.device import detect
    from edgechat.recommend import recommend
    from edgechat.speed import cpu_bandwidth

    settings = config.load()
    device = detect(args.memory, args.vram)
    choices = recommend(
        catalog.load(), device, args.task, args.ctx or settings.ctx, cpu_bandwidth(device)
    )
    shown = choices if args.all else choices[: max(1, args.limit)]
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
                    "choices": [c.as_dict() for c in shown],
                },
                indent=2,
            )
        )
        return 0
    gpu = ", ".join(f"{g.name} {_size(g.vram_total)}" for g in device.gpus) or "no GPU"
    print(f"for {args.task} on {_size(device.ram_total)} RAM, {gpu}:")
    print(f"  {'model':<36} {'RAM':>9} {'VRAM':>9} {'tok/s':>6}  fit")
    for i, c in enumerate(shown, 1):
        e = c.estimate
        vram = "unified" if e.backend == "metal" else (_size(e.vram) if e.vram else "-")
        print(
            f"{i:>2} {c.model.id + ':' + c.quant:<36} {_size(e.ram_needed):>9} {vram:>9} "
            f"{c.speed.tokens_per_s:>6.1f}  {c.fit.label}"
        )
        print(f"   {c.reason}")
    if device.overrides:
        print(f"assumed: {', '.join(device.overrides)}")
    return 0


def cmd_models_list(args) -> int:
    import time

    from edgechat import store

    records = store.registry()
    rows = []
    starter = store.starter_model_path()
    if starter and store.STARTER_ID not in records:
        rows.append(
            {
                "id": store.STARTER_ID,
                "quant": "Q4_1",
                "size": starter.stat().st_size,
                "path": str(starter),
                "source": "starter package",
                "last_used": None,
            }
        )
    for model_id, r in sorted(records.items()):
        present = Path(r.get("path", "")).is_file()
        rows.append(
            {
                "id": model_id,
                "quant": r.get("quant"),
                "size": r.get("size"),
                "path": r.get("path"),
                "source": r.get("source") if present else f"{r.get('source')} (file missing)",
                "last_used": r.get("last_used"),
            }
        )
    if args.json:
        print(json.dumps(rows, indent=2))
        return 0
    if not rows:
        print("no models yet: `edgechat recommend` suggests one, `edgechat models pull ID` gets it")
        return 0
    print(f"{'id':<44} {'size':>9}  {'last used':<16} source")
    for r in rows:
        used = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_used"]))
            if r["last_used"]
            else "-"
        )
        print(f"{r['id']:<44} {_size(r['size']):>9}  {used:<16} {r['source']}")
    return 0


def _recommended_quant(catalog_id: str) -> str:
    from edgechat import catalog, config
    from edgechat.device import detect
    from edgechat.recommend import choose
    from edgechat.speed import cpu_bandwidth

    model = catalog.load()[catalog_id]
    device = detect()
    task = model.tasks[0]
    return choose(model, task, config.load().ctx, device, cpu_bandwidth(device)).quant


def cmd_models_pull(args) -> int:
    from edgechat import hub

    say = (lambda line: None) if args.json else (lambda line: sys.stderr.write(line + "\n"))
    try:
        pulled = hub.pull(args.model, _recommended_quant, hub.progress_bar(), say)
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted: the partial download is kept; pull again to resume\n")
        return 130
    out = {
        "id": pulled.model_id,
        "repo": pulled.repo,
        "quant": pulled.quant,
        "path": str(pulled.path),
        "size": pulled.size,
        "downloaded": pulled.downloaded,
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        already = " (already here)" if not pulled.downloaded else ""
        print(f"{pulled.model_id}{already}: {pulled.path}")
        print(f"chat with it: edgechat chat --model {pulled.model_id}")
    return 0


def cmd_models_rm(args) -> int:
    from edgechat import hub

    record, freed = hub.remove(args.model)
    if args.json:
        print(json.dumps({"id": record["id"], "freed": freed, "path": record.get("path")}))
    elif record.get("source") == "import":
        print(f"forgot {record['id']}; the file stays at {record['path']}")
    else:
        print(f"removed {record['id']}, freed {_size(freed)}")
    return 0


def cmd_models_import(args) -> int:
    import re
    import shutil

    from edgechat import store
    from edgechat.gguf import inspect_file
    from edgechat.paths import ensure_private_dir, paths

    src = Path(args.path).expanduser().resolve()
    facts = inspect_file(src)  # refuses a truncated or non-GGUF file with one line
    model_id = (args.id or re.sub(r"[^a-z0-9._-]+", "-", src.stem.lower())).strip("-")
    quant = facts.file_type or "?"
    if ":" not in model_id:
        model_id = f"{model_id}:{quant}"
    path = src
    if args.copy:
        folder = ensure_private_dir(paths().data_dir / "models")
        path = folder / src.name
        tmp = path.with_name(f".{path.name}.partial")
        try:
            shutil.copyfile(src, tmp)
            tmp.replace(path)
        except OSError as e:
            tmp.unlink(missing_ok=True)
            from edgechat.errors import EdgechatError

            raise EdgechatError(
                f"cannot copy {src.name} into {folder}: {e.strerror or e}; free some space, "
                "or import without --copy"
            ) from None
    store.register(
        model_id,
        {
            "path": str(path),
            "files": [str(path)],
            "quant": quant,
            "size": path.stat().st_size,
            "source": "copy" if args.copy else "import",
            "sha256": [],
        },
    )
    if args.json:
        print(json.dumps({"id": model_id, "path": str(path), "quant": quant}))
    else:
        print(f"imported {model_id}: {path}")
    return 0


def cmd_models_verify(args) -> int:
    from edgechat import hub, store

    ids = (
        [args.model] if args.model else [k for k, r in store.registry().items() if r.get("sha256")]
    )
    results = {}
    for model_id in ids:
        ok, problems = hub.verify(model_id)
        results[model_id] = {"ok": ok, "problems": problems}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        for model_id, r in results.items():
            print(f"{model_id}: {'ok' if r['ok'] else '; '.join(r['problems'])}")
        if not results:
            print("no pulled models to verify")
    return 0 if all(r["ok"] for r in results.values()) else 1


def cmd_models_info(args) -> int:
    from edgechat import catalog, config, store
    from edgechat.device import detect
    from edgechat.fit import plan_for
    from edgechat.plan import RunPlan

    settings = config.load()
    target = store.locate(args.model, settings.default_model)
    est, fit = plan_for(
        RunPlan(target.path, n_ctx=args.ctx or settings.ctx), target.shape, detect(), auto_gpu=True
    )
    cat_id = args.model.partition(":")[0].lower()
    record = store.registry().get(args.model)
    if record is None and target.source == "file":
        record = next(
            (r for r in store.registry().values() if r.get("path") == str(target.path)), None
        )
    models = catalog.load()
    entry = models.get(cat_id) or next(
        (m for m in models.values() if record and m.repo == record.get("repo")), None
    )
    facts = target.facts.as_dict() if target.facts else None
    out = {
        "model": target.label,
        "installed": record is not None or target.source == "file",
        "catalog": entry.as_dict() if entry else None,
        "header": facts,
        "estimate": {**est.as_dict(), "fit": fit.label, "fit_reason": fit.why or None},
    }
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    print(f"model      {target.label}" + ("" if out["installed"] else " (not pulled)"))
    if entry:
        print(
            f"catalog    {entry.name}; {entry.repo}; licence {entry.license}"
            + ("; gated" if entry.gated else "")
        )
        print(
            f"           {entry.params_b} B params, {entry.context} context, "
            f"tasks {', '.join(entry.tasks)}, quants {', '.join(entry.quants)}"
        )
    if facts:
        print(
            f"header     {facts['architecture']}, {facts['file_type']}, "
            f"{facts['bits_per_weight']} bits per weight, {facts['n_layers']} layers"
        )
    print(
        f"estimate   RAM {_size(est.ram_needed)}"
        + (f", VRAM {_size(est.vram)}" if est.vram else "")
        + f" at {est.n_ctx} tokens: {fit.label}"
        + (f" ({fit.why})" if fit.why else "")
    )
    return 0


def cmd_login(args) -> int:
    import getpass

    from edgechat import credentials

    value = args.token
    if value is None:
        if not sys.stdin.isatty():
            value = sys.stdin.readline()
        else:
            sys.stderr.write("Paste a token from https://huggingface.co/settings/tokens\n")
            value = getpass.getpass("token (not shown): ")
    where = credentials.store(value)
    print(f"token saved in {where}")
    return 0


def cmd_logout(args) -> int:
    from edgechat import credentials

    removed = credentials.forget()
    print(f"token removed from {', '.join(removed)}" if removed else "no stored token")
    if os.environ.get("HF_TOKEN"):
        print("HF_TOKEN is still set in this shell's environment")
    return 0


def _counter(what: str):
    """Progress ``what i/n`` on stderr: redrawn on a terminal, every tenth otherwise."""
    tty = sys.stderr.isatty()
    shown = {-1}

    def show(i: int, n: int) -> None:
        tenth = 10 * i // max(n, 1)
        if tty:
            sys.stderr.write(f"\r\033[K{what} {i}/{n}")
        elif tenth not in shown:
            shown.add(tenth)
            sys.stderr.write(f"{what} {i}/{n}\n")
        sys.stderr.flush()

    return show


def cmd_bench(args) -> int:
    from edgechat import config, store
    from edgechat.bench import bars, bench

    settings = config.load()
    wanted = args.models or [None]
    models = []
    for m in wanted:
        path = store.resolve(m, settings.default_model)
        label = path.name if m is None or Path(m).expanduser().is_file() else m
        models.append((label, path))
    results = bench(
        models,
        args.ctx,
        max(1, args.repeat),
        args.tokens,
        progress=lambda label, i, n: _counter(f"{label}: run")(i, n),
    )
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    if args.json:
        print(json.dumps([r.as_dict() for r in results], indent=2))
        return 0
    print(f"medians of {args.repeat} runs, context {args.ctx}, greedy")
    print(
        f"{'model':<36} {'load s':>7} {'prompt t/s':>10} {'gen t/s':>8} {'TTFT s':>7} "
        f"{'peak RSS':>9}"
    )
    for r in results:
        print(
            f"{r.model[:36]:<36} {r.load_s:>7.2f} {r.prompt_tokens_per_s:>10.1f} "
            f"{r.gen_tokens_per_s:>8.1f} {r.ttft_s:>7.3f} {_size(r.rss_peak):>9}"
        )
    print()
    for line in bars(results):
        print(line)
    return 0


def cmd_quality(args) -> int:
    from edgechat import config, documents, store
    from edgechat.engine import Engine
    from edgechat.plan import RunPlan
    from edgechat.quality import compare

    settings = config.load()
    _, text = documents.read_text(args.text, exact=True)
    paths_ = [store.resolve(m, settings.default_model) for m in (args.model, args.ref)]
    model, ref = (Engine(RunPlan(p, n_ctx=args.ctx)) for p in paths_)
    try:
        q = compare(model, ref, text, args.ctx, progress=_counter("chunk"))
    finally:
        model.close()
        ref.close()
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    if args.json:
        print(json.dumps(q.as_dict(), indent=2))
        return 0
    print(f"text      {args.text}: {q.chunks} chunks of {q.n_ctx}, {q.tokens_scored} tokens scored")
    print(f"{'':<10}{'perplexity':>12}")
    print(f"{'model':<10}{q.ppl:>12.4f}  {paths_[0].name}")
    print(f"{'ref':<10}{q.ppl_ref:>12.4f}  {paths_[1].name}")
    print(f"delta     {q.ppl_delta_pct:+.2f} %")
    print(f"KL        {q.kl_mean:.5f} (mean, model from ref)")
    print(f"top-1     {100 * q.top1_agreement:.2f} % same next token")
    return 0


def cmd_quantize(args) -> int:
    from edgechat.quantize import quantize

    result = quantize(
        args.src,
        args.dst,
        args.type,
        args.recipe,
        args.allow_requantize,
        progress=_counter("tensor"),
        warn=lambda text: sys.stderr.write(f"edgechat: warning: {text}\n"),
    )
    if sys.stderr.isatty():
        sys.stderr.write("\r\033[K")
    out = {
        "path": str(result.path),
        "type": result.type,
        "recipe": result.recipe,
        "size_in": result.size_in,
        "size_out": result.size_out,
        "bits_per_weight": round(result.bits_per_weight, 3),
    }
    if args.json:
        print(json.dumps(out, indent=2))
    else:
        print(
            f"wrote {result.path}: {result.type} ({result.recipe}), {_size(result.size_in)} -> "
            f"{_size(result.size_out)}, {result.bits_per_weight:.2f} bits per weight"
        )
    return 0


def cmd_doctor(args) -> int:
    from edgechat.doctor import FAIL, run_all

    checks = run_all()
    if args.json:
        print(json.dumps([c.as_dict() for c in checks], indent=2))
    else:
        mark = {"ok": "✔", "warn": "!", "fail": "✘"}
        for c in checks:
            print(f"{mark[c.status]} {c.name:<14} {c.detail}")
            if c.fix and c.status != "ok":
                print(f"  {'fix:':<14} {c.fix}")
    return 1 if any(c.status == FAIL for c in checks) else 0


def cmd_config(args) -> int:
    from edgechat import config
    from edgechat.errors import EdgechatError
    from edgechat.paths import paths

    if args.action in ("set", "unset"):
        if not args.key or (args.action == "set" and args.value is None):
            raise EdgechatError(
                f"usage: edgechat config {args.action} KEY"
                + (" VALUE" if args.action == "set" else "")
            )
        if args.action == "set":
            config.set_value(args.key, args.value)
        else:
            config.unset_value(args.key)
    p = paths()
    settings = config.load(p)
    data = {"version": __version__, "paths": p.as_dict(), "settings": settings.as_dict()}
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    print(f"edgechat {__version__}")
    print("paths:")
    for key, value in data["paths"].items():
        print(f"  {key:<14} {value}")
    print("settings:")
    for key, value in data["settings"].items():
        print(f"  {key:<14} {value!r}")
    return 0


# -- entry point -----------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        # No command: the app (or, on a pipe, the line chat), with the model picker first.
        args = parser.parse_args(["chat", *(argv if argv is not None else sys.argv[1:])])
        args.no_command = True
    from edgechat.errors import EdgechatError

    try:
        return args.func(args)
    except EdgechatError as exc:
        sys.stderr.write(f"edgechat: {exc}\n")
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`edgechat ... | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
