"""The ``edgechat`` command line: parse arguments, call the services, render.

Start-up must stay instant (a Raspberry Pi runs this): only the standard library is
imported here; each command imports what it needs when it runs.

Exit codes: 0 ok, 1 a problem the message explains, 2 usage error, 130 interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys

from edgechat import __version__
from edgechat.cli.admin import cmd_config, cmd_doctor
from edgechat.cli.chat import cmd_chat
from edgechat.cli.completion import cmd_completion
from edgechat.cli.facts import cmd_device, cmd_estimate, cmd_inspect, cmd_recommend
from edgechat.cli.history import cmd_history_list, cmd_history_search
from edgechat.cli.lab import cmd_bench, cmd_quality, cmd_quantize
from edgechat.cli.models import (
    cmd_login,
    cmd_logout,
    cmd_models_import,
    cmd_models_info,
    cmd_models_list,
    cmd_models_pull,
    cmd_models_rm,
    cmd_models_verify,
)
from edgechat.cli.serve import cmd_serve
from edgechat.cli.summarise import cmd_summarise
from edgechat.limits import flag


def _add_model_options(
    p: argparse.ArgumentParser,
    model_flag: bool = True,
    ctx_default: int | None = None,
    ctx_flag: str = "ctx",
) -> None:
    """The options of every command that loads a model: one ModelRequest, one fit check."""
    if model_flag:
        p.add_argument("-m", "--model", help="a GGUF file path or an installed model id")
    p.add_argument(
        "--ctx",
        type=flag(ctx_flag),
        default=ctx_default,
        metavar="N",
        help=f"context size in tokens (default {ctx_default or 'the ctx setting, 4096'})",
    )
    p.add_argument(
        "--threads", type=flag("threads"), metavar="N", help="CPU threads (default: physical cores)"
    )
    p.add_argument(
        "--gpu-layers",
        type=flag("gpu_layers"),
        metavar="N",
        help="layers to offload to the GPU (default: all that fit)",
    )
    p.add_argument(
        "--kv-cache",
        choices=["f16", "q8_0", "q4_0"],
        help="KV cache type: q8_0 halves its memory, q4_0 quarters it (default f16)",
    )
    p.add_argument("--verbose", action="store_true", help="show llama.cpp's own log")
    p.add_argument(
        "--force", action="store_true", help="load even when the memory estimate says it won't fit"
    )
    _add_device_options(p)


def _add_remote_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--remote",
        metavar="URL",
        help="run on an OpenAI-compatible server instead (like http://HOST:8080/v1); "
        "the text is sent there",
    )
    p.add_argument("--remote-model", metavar="NAME", help="the server's model (default: its first)")
    p.add_argument(
        "--api-key", metavar="KEY", help="the server's API key (default: EDGECHAT_API_KEY, keyring)"
    )


def _add_device_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--memory", metavar="SIZE", help="assume this much RAM (like 8G)")
    p.add_argument("--vram", metavar="SIZE", help="assume this much GPU memory (like 6G)")


def _add_gpu_option(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--gpu",
        metavar="BACKEND:SIZE",
        help="plan for this GPU: cuda, rocm, vulkan or metal and its memory (like cuda:24G)",
    )


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
    chat.add_argument(
        "--temperature", type=flag("temperature"), metavar="T", help="sampling temperature"
    )
    chat.add_argument("--seed", type=flag("seed"), help="sampling seed, for repeatable replies")
    chat.add_argument(
        "--max-tokens", type=flag("max_tokens"), metavar="N", help="longest reply in tokens"
    )
    chat.add_argument("--json", action="store_true", help="print each reply as a JSON line")
    _add_remote_options(chat)
    chat.set_defaults(func=cmd_chat)

    summ = sub.add_parser(
        "summarise",
        aliases=["summarize"],
        help="summarise documents of any length, offline (text, Markdown, HTML, PDF, DOCX)",
    )
    summ.add_argument("files", nargs="+", metavar="FILE", help="files, or - for standard input")
    _add_model_options(summ)
    summ.add_argument(
        "--length",
        choices=["short", "medium", "long"],
        default="medium",
        help="short: 40-90 words, medium: 90-180, long: 180-350 (fewer for a short document)",
    )
    summ.add_argument("--style", choices=["paragraph", "bullets"], default="paragraph")
    summ.add_argument("--focus", metavar="TEXT", help="what the reader cares about")
    summ.add_argument(
        "--combine", action="store_true", help="with several files: also one summary of them all"
    )
    summ.add_argument("--temperature", type=float, metavar="T", help="sampling temperature (0.3)")
    summ.add_argument("--seed", type=int, help="sampling seed, for a repeatable summary")
    summ.add_argument("--out", metavar="FILE", help="write the summary to FILE (atomically)")
    summ.add_argument("--json", action="store_true", help="print the summary and its stats as JSON")
    _add_remote_options(summ)
    summ.set_defaults(func=cmd_summarise)

    srv = sub.add_parser(
        "serve", help="serve the model over an OpenAI-compatible HTTP API (loopback by default)"
    )
    _add_model_options(srv)
    srv.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    srv.add_argument("--port", type=int, default=8080, help="port (8080; 0 picks a free one)")
    srv.add_argument(
        "--api-key",
        metavar="KEY",
        help="require this key (needed beyond loopback; EDGECHAT_API_KEY or the keyring "
        "keep it out of the process list)",
    )
    srv.add_argument(
        "--parallel", type=int, default=1, metavar="N", help="requests generated at once (1)"
    )
    srv.add_argument(
        "--queue", type=int, default=32, metavar="N", help="requests that may wait (32)"
    )
    srv.add_argument(
        "--temperature", type=flag("temperature"), metavar="T", help="default temperature"
    )
    srv.add_argument(
        "--max-tokens", type=flag("max_tokens"), metavar="N", help="default longest reply"
    )
    srv.add_argument("--quiet", action="store_true", help="no line per request")
    srv.add_argument(
        "--store-key", action="store_true", help="keep the API key in the keyring and exit"
    )
    srv.set_defaults(func=cmd_serve)

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
    est.add_argument(
        "--ctx", type=flag("ctx"), metavar="N", help="context size in tokens (default 4096)"
    )
    est.add_argument(
        "--gpu-layers",
        type=flag("gpu_layers"),
        metavar="N",
        help="layers to offload (default: all that fit)",
    )
    _add_device_options(est)
    _add_gpu_option(est)
    est.add_argument("--json", action="store_true", help="print the estimate as JSON")
    est.set_defaults(func=cmd_estimate)

    rec = sub.add_parser("recommend", help="the models and quants that suit this device, ranked")
    rec.add_argument(
        "--task", choices=["chat", "code", "math", "summarise"], default="chat", help="what for"
    )
    rec.add_argument(
        "--ctx", type=flag("ctx"), metavar="N", help="context size in tokens (default 4096)"
    )
    rec.add_argument(
        "-n", "--limit", type=flag("limit"), default=8, metavar="N", help="show the best N"
    )
    rec.add_argument("--all", action="store_true", help="show every catalog model for the task")
    _add_device_options(rec)
    _add_gpu_option(rec)
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
    m_info.add_argument("--ctx", type=flag("ctx"), metavar="N", help="context for the estimate")
    m_info.add_argument("--json", action="store_true", help="print it as JSON")
    m_info.set_defaults(func=cmd_models_info)

    login = sub.add_parser("login", help="store a Hugging Face token for gated models")
    login.add_argument("--token", help=argparse.SUPPRESS)  # refused: see cmd_login
    login.set_defaults(func=cmd_login)
    logout = sub.add_parser("logout", help="remove the stored Hugging Face token")
    logout.set_defaults(func=cmd_logout)

    ben = sub.add_parser("bench", help="measure load, prompt and generation speed, TTFT, memory")
    ben.add_argument(
        "models", nargs="*", metavar="MODEL", help="paths or ids (default: the default)"
    )
    _add_model_options(ben, model_flag=False, ctx_default=2048)
    ben.add_argument(
        "--repeat", type=flag("repeat"), default=3, metavar="N", help="runs per model (3)"
    )
    ben.add_argument(
        "--tokens", type=flag("tokens"), default=128, metavar="N", help="tokens to generate"
    )
    ben.add_argument("--json", action="store_true", help="print the table as JSON")
    ben.set_defaults(func=cmd_bench)

    qual = sub.add_parser(
        "quality", help="perplexity, KL divergence and top-1 agreement against a reference"
    )
    qual.add_argument("model", help="the model to judge (path or id)")
    qual.add_argument("--ref", required=True, help="the reference (e.g. the F16 or Q8_0 file)")
    qual.add_argument("--text", required=True, metavar="FILE", help="your own text")
    _add_model_options(qual, model_flag=False, ctx_default=512, ctx_flag="chunk")  # chunk size
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

    his = sub.add_parser("history", help="the app's conversations: list them, search them")
    hsub = his.add_subparsers(dest="action", metavar="ACTION")
    his.set_defaults(func=cmd_history_list, json=False)
    h_list = hsub.add_parser("list", help="every conversation, newest first")
    h_list.add_argument("--json", action="store_true", help="print them as JSON")
    h_list.set_defaults(func=cmd_history_list)
    h_find = hsub.add_parser("search", help="find words in every conversation (full text)")
    h_find.add_argument("text", nargs="+", metavar="TEXT")
    h_find.add_argument("-n", "--limit", type=int, default=20, metavar="N", help="at most N")
    h_find.add_argument("--json", action="store_true", help="print the matches as JSON")
    h_find.set_defaults(func=cmd_history_search)

    doc = sub.add_parser("doctor", help="check this install and print the fix for each problem")
    doc.add_argument("--json", action="store_true", help="print the checks as JSON")
    doc.set_defaults(func=cmd_doctor)

    cfg = sub.add_parser("config", help="show paths and settings; set or unset a setting")
    cfg.add_argument("action", nargs="?", choices=["show", "set", "unset"], default="show")
    cfg.add_argument("key", nargs="?")
    cfg.add_argument("value", nargs="?")
    cfg.add_argument("--json", action="store_true", help="print as JSON")
    cfg.set_defaults(func=cmd_config)

    comp = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Bash: `source <(edgechat completion bash)` in ~/.bashrc. Zsh: "
        "`edgechat completion zsh > ~/.zfunc/_edgechat` with ~/.zfunc on fpath. Fish: "
        "`edgechat completion fish > ~/.config/fish/completions/edgechat.fish`.",
    )
    comp.add_argument("shell", choices=["bash", "zsh", "fish"])
    comp.set_defaults(func=cmd_completion)
    return parser


# -- helpers ---------------------------------------------------------------------------


# -- commands --------------------------------------------------------------------------


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
        from edgechat.text import clean

        sys.stderr.write(f"edgechat: {clean(exc)}\n")  # names from files and the hub inside
        return 1
    except KeyboardInterrupt:
        sys.stderr.write("\ninterrupted\n")
        return 130
    except BrokenPipeError:
        # The reader went away (`edgechat ... | head`): not an error worth a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 0
