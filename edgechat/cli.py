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

    chat = sub.add_parser("chat", help="chat with a model, offline")
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
        "summarise", aliases=["summarize"], help="summarise a text or Markdown file, offline"
    )
    summ.add_argument("file", help="the file, or - for standard input")
    _add_model_options(summ)
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
    """Resolve the model and load it, with a progress line on a terminal."""
    from edgechat import store
    from edgechat.device import detect
    from edgechat.engine import Engine
    from edgechat.plan import RunPlan

    path = store.resolve(args.model, settings.default_model)
    gpu_layers = args.gpu_layers if args.gpu_layers is not None else settings.gpu_layers
    plan = RunPlan(
        model_path=path,
        n_ctx=args.ctx or settings.ctx,
        n_threads=args.threads if args.threads is not None else settings.threads,
        n_gpu_layers=max(0, gpu_layers),
    )
    if plan.n_ctx < 64:
        from edgechat.errors import EdgechatError

        raise EdgechatError(f"--ctx {plan.n_ctx} is too small; use 512 or more")
    plan = _checked_plan(plan, detect(args.memory, args.vram), gpu_layers < 0, args.force)
    show = sys.stderr.isatty()
    if show:
        sys.stderr.write(f"loading {path.name} ...")
        sys.stderr.flush()
    engine = Engine(plan, verbose=args.verbose)
    if show:
        sys.stderr.write(
            f"\rloaded {path.name} in {engine.load_s:.1f} s · context {engine.n_ctx} tokens\n"
        )
    return engine


def _checked_plan(plan, device, auto_gpu: bool, force: bool):
    """The plan the memory estimate says fits here; refuse one that does not, unless forced."""
    from edgechat.errors import EdgechatError
    from edgechat.fit import plan_for, refusal
    from edgechat.gguf import inspect_file
    from edgechat.memory import Shape

    shape = Shape.from_facts(inspect_file(plan.model_path))
    est, fit = plan_for(plan, shape, device, auto_gpu)
    if not fit.fits:
        if not force:
            raise EdgechatError(refusal(fit, est))
        sys.stderr.write(f"edgechat: loading anyway (--force): {fit.why}\n")
    return est.plan


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


def cmd_chat(args) -> int:
    from edgechat import config, privacy
    from edgechat.plain import PlainChat

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


def cmd_summarise(args) -> int:
    from edgechat import config, documents, privacy
    from edgechat.summarise import summarise

    privacy.go_offline()
    settings = config.load()
    name, text = documents.read_text(args.file)
    engine = _load_engine(args, settings)
    reply = summarise(engine, text, _sampling(args, settings, temperature=0.3, max_tokens=400))
    for piece in reply:
        if not args.json:
            sys.stdout.write(piece)
            sys.stdout.flush()
    if args.json:
        out = {
            "source": name,
            "summary": reply.text.strip(),
            "model": engine.info()["name"],
            "model_path": str(engine.plan.model_path),
            "stats": reply.stats.as_dict() if reply.stats else None,
        }
        print(json.dumps(out, ensure_ascii=False, indent=2))
    else:
        sys.stdout.write("\n")
    if not reply.text.strip():
        sys.stderr.write("edgechat: the model returned an empty summary; try a larger model\n")
        return 1
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
        # No command: chat (the full-screen app arrives with the TUI).
        args = parser.parse_args(["chat", *(argv if argv is not None else sys.argv[1:])])
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
