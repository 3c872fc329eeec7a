"""`models list|pull|rm|import|verify|info`, `login`, `logout`: the model store and the hub
token.
"""

from __future__ import annotations

import json
import os
import sys

from edgechat.cli.common import _size, _warn


def cmd_models_list(args) -> int:
    from edgechat.models import registry

    rows = registry.listing()
    found = []
    if getattr(args, "all", False):
        from edgechat.models import stores

        found = stores.discover()
    if args.json:
        if found:
            rows += [{"id": None, **f.as_dict(), "suggested_id": f.suggested_id} for f in found]
        print(json.dumps(rows, indent=2))
        return 0
    if not rows and not found:
        print("no models yet: `edgechat recommend` suggests one, `edgechat models pull ID` gets it")
        if not getattr(args, "all", False):
            print("`edgechat models list --all` also looks in Ollama, LM Studio and llama.cpp")
        return 0
    if rows:
        print("\n".join(models_table(rows)))
    if rows and found:
        print()
    _print_found(found)
    return 0


def models_table(rows: list[dict]) -> list[str]:
    """`models list` in 80 columns: the id whole (to copy), the source cut to what is left."""
    import time

    from edgechat.cli.table import WIDTH, cells, cut, labelled, size
    from edgechat.text import clean

    if not rows:
        return []
    id_w = min(36, max(cells(clean(r["id"])) for r in rows))
    source_w = WIDTH - id_w - 29  # size 9, last used 16, the spaces between
    lines = [f"{'id':<{id_w}} {'size':>9}  {'last used':<16} source"]
    for r in rows:
        used = (
            time.strftime("%Y-%m-%d %H:%M", time.localtime(r["last_used"]))
            if r["last_used"]
            else "-"
        )
        source = r["source"] + (f": {r['store_name']}" if r.get("store_name") else "")
        rest = f"{size(r['size'], 9)}  {used:<16} {cut(clean(source), source_w)}"
        lines += labelled(clean(r["id"]), id_w, rest)
    return lines


def _print_found(found) -> None:
    """Models other tools keep here: where each lives, and how to use one."""
    from edgechat.cli.table import labelled, size
    from edgechat.text import clean

    usable = [f for f in found if f.usable]
    if usable:
        print("on this machine, kept by other tools (`edgechat models import --from STORE NAME`")
        print("uses one where it lies, without copying):")
        print(f"{'store':<9} {'name':<58} {'size':>9}")
        for f in usable:
            print("\n".join(labelled(f"{f.store:<9} {clean(f.name)}", 68, size(f.size, 9))))
            extra = " (+ a vision projector, unused)" if f.projector else ""
            print(f"{'':<9} {clean(str(f.path))}{extra}")
    for f in found:
        if not f.usable:
            print(f"not usable: {f.store} {clean(f.name)}: {clean(f.problem)}")


def _transfer_bars():
    """Byte transfers drawn on stderr with speed and ETA (tqdm), one bar per file; silent
    when stderr is not a terminal."""
    from tqdm.auto import tqdm

    bars: dict[str, tqdm] = {}
    quiet = not sys.stderr.isatty()

    def progress(name: str, done: int, total: int) -> None:
        bar = bars.get(name)
        if bar is None:
            bar = bars[name] = tqdm(
                total=total, initial=done, unit="B", unit_scale=True, unit_divisor=1024,
                desc=name, file=sys.stderr, disable=quiet,
            )  # fmt: skip
        bar.update(done - bar.n)
        if done >= total:
            bar.close()

    return progress


def cmd_models_pull(args) -> int:
    from edgechat import config
    from edgechat.models import hub
    from edgechat.planning.recommend import default_quant

    say = (lambda line: None) if args.json else (lambda line: sys.stderr.write(line + "\n"))
    n_ctx = config.load().ctx
    try:
        pulled = hub.pull(
            args.model, lambda model: default_quant(model, n_ctx=n_ctx), _transfer_bars(), say
        )
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
        print(f"{pulled.model_id}{already}: {pulled.path}")  # a checked repo id
        print(f"chat with it: edgechat chat --model {pulled.model_id}")
    return 0


def cmd_models_rm(args) -> int:
    from edgechat.models import hub
    from edgechat.text import clean

    record, freed = hub.remove(args.model)
    record = {**record, "id": clean(record["id"]), "path": clean(record.get("path", ""))}
    if args.json:
        print(json.dumps({"id": record["id"], "freed": freed, "path": record.get("path")}))
    elif record.get("source") == "import":
        print(f"forgot {record['id']}; the file stays at {record['path']}")
    elif record.get("store_name"):  # another tool's model: its files are that tool's
        from edgechat.models.stores import STORES

        store = STORES.get(str(record.get("source")), str(record.get("source")))
        print(
            f"forgot {record['id']}; nothing was deleted: {clean(record['store_name'])} stays "
            f"in {store} at {record['path']}"
        )
    else:
        print(f"removed {record['id']}, freed {_size(freed)}")
    return 0


def cmd_models_import(args) -> int:
    from edgechat.models import registry

    if getattr(args, "store", None):
        from edgechat.errors import InputError
        from edgechat.models import stores

        if args.copy:
            raise InputError(
                "--from registers the model where it lies; to copy it instead, import its "
                "file by path with --copy (`edgechat models list --all` shows where it is)"
            )
        record = stores.adopt(args.store, args.path, args.id)
    else:
        record = registry.import_file(args.path, args.id, args.copy)
    model_id, path, quant = record["id"], record["path"], record["quant"]
    if args.json:
        out = {"id": model_id, "path": str(path), "quant": quant}
        if record.get("store_name"):
            out |= {"store": record["source"], "store_name": record["store_name"]}
        print(json.dumps(out))
    else:
        from edgechat.text import clean

        if record.get("store_name"):
            from edgechat.models.stores import STORES

            print(
                f"imported {clean(model_id)}: {clean(record['store_name'])} from "
                f"{STORES[record['source']]}, used where it lies (nothing copied): {clean(path)}"
            )
        else:
            print(f"imported {clean(model_id)}: {clean(path)}")
    return 0


def cmd_models_verify(args) -> int:
    from edgechat.models import hub, registry

    ids = (
        [args.model]
        if args.model
        else [k for k, r in registry.records().items() if r.get("sha256")]
    )
    results = {}
    for model_id in ids:
        ok, problems = hub.verify(model_id)
        results[model_id] = {"ok": ok, "problems": problems}
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        from edgechat.text import clean

        for model_id, r in results.items():
            print(clean(f"{model_id}: {'ok' if r['ok'] else '; '.join(r['problems'])}"))
        if not results:
            print("no pulled models to verify")
    return 0 if all(r["ok"] for r in results.values()) else 1


def cmd_models_info(args) -> int:
    from edgechat import config
    from edgechat.models.info import describe

    settings = config.load()
    info = describe(args.model, args.ctx or settings.ctx, settings.default_model, warn=_warn)
    target, entry, est, fit = info.target, info.entry, info.estimate, info.fit
    out = info.as_dict()
    facts = out["header"]
    if args.json:
        print(json.dumps(out, indent=2))
        return 0
    from edgechat.text import clean

    print(f"model      {clean(target.label)}" + ("" if out["installed"] else " (not pulled)"))
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
            f"header     {clean(facts['architecture'])}, {clean(facts['file_type'])}, "
            f"{facts['bits_per_weight']} bits per weight, {facts['n_layers']} layers"
        )
    print(
        f"estimate   RAM {_size(est.ram_needed)}"
        + (f", VRAM {_size(est.vram)}" if est.vram else "")
        + f" at {est.n_ctx} tokens: {fit.label}"
        + (f" ({fit.why})" if fit.why else "")
    )
    if info.receipts:
        _print_quality(info)
    return 0


def _print_quality(info) -> None:
    """The newest receipt, and which tasks' default budgets it meets."""
    import textwrap

    from edgechat.text import clean

    lines = [info.receipts[0].detail()]
    grouped: dict[tuple[str, ...], list[str]] = {}
    for task, miss in info.budgets().items():
        grouped.setdefault(tuple(miss), []).append(task)
    for miss, tasks in grouped.items():
        names = f"the {' and '.join(tasks)} budget{'s' * (len(tasks) > 1)}"
        lines.append(f"misses {names}: {'; '.join(miss)}" if miss else f"meets {names}")
    if len(info.receipts) > 1:
        lines.append(f"{len(info.receipts) - 1} older measurement(s): --json lists them")
    for i, line in enumerate(lines):
        head = "quality    " if i == 0 else "           "
        for part in textwrap.wrap(clean(line), 80 - 11, break_on_hyphens=False):
            print(head + part)
            head = "           "


def cmd_login(args) -> int:
    """The token comes from a pipe, HF_TOKEN or the hidden prompt: never from the command
    line, where every user of the machine can read it in the process list."""
    import getpass

    from edgechat.errors import InputError
    from edgechat.models import credentials

    if args.token is not None:
        raise InputError(
            "--token puts the token in the process list, where others can read it; pipe it "
            "in (`edgechat login < token.txt`), set HF_TOKEN, or type it at the prompt"
        )
    value = ""
    if not sys.stdin.isatty():
        value = sys.stdin.readline()
    if not value.strip() and os.environ.get("HF_TOKEN"):
        value = os.environ["HF_TOKEN"]
    elif not value.strip() and sys.stdin.isatty():
        sys.stderr.write("Paste a token from https://huggingface.co/settings/tokens\n")
        value = getpass.getpass("token (not shown): ")
    value = value.strip()
    user = None
    if value and not any(c.isspace() for c in value):
        from edgechat.models import hub

        try:
            user = hub.whoami(value)  # a refused token (BadToken) stops here, unsaved
        except hub.BadToken:
            raise
        except hub.HubError:
            user = None  # offline: keep it, unchecked, and say so
    where = credentials.store(value)
    from edgechat.text import clean  # the name comes from the hub

    checked = (
        f"; the hub knows it as {clean(user)}" if user else " (not checked: the hub is unreachable)"
    )
    print(f"token saved in {where}{checked}")
    return 0


def cmd_logout(args) -> int:
    from edgechat.models import credentials

    removed, failed = credentials.forget()
    if removed:
        print(f"token removed from {', '.join(removed)}")
    for why in failed:
        sys.stderr.write(f"edgechat: the token could not be removed: {why}\n")
    if not removed and not failed:
        print("no stored token")
    if os.environ.get("HF_TOKEN"):
        print("HF_TOKEN is still set in this shell's environment")
    return 1 if failed else 0


def register(sub) -> None:
    import argparse

    from edgechat.cli.options import add_json
    from edgechat.limits import flag

    mod = sub.add_parser("models", help="list, pull, remove, import and verify models")
    msub = mod.add_subparsers(dest="action", metavar="ACTION")
    mod.set_defaults(func=cmd_models_list, json=False)
    m_list = msub.add_parser("list", help="the models on this machine")
    m_list.add_argument(
        "--all", action="store_true", help="also those Ollama, LM Studio, llama.cpp and HF keep"
    )
    add_json(m_list, "print them as JSON")
    m_list.set_defaults(func=cmd_models_list)
    m_pull = msub.add_parser("pull", help="download ID[:QUANT] or owner/repo[:QUANT], verified")
    m_pull.add_argument(
        "model", help="a catalog id like qwen2.5-1.5b-instruct[:Q4_K_M], or owner/repo:QUANT"
    )
    add_json(m_pull, "print the result as JSON")
    m_pull.set_defaults(func=cmd_models_pull)
    m_rm = msub.add_parser("rm", help="remove a pulled or imported model and free its space")
    m_rm.add_argument("model", help="the model id, as `edgechat models list` shows it")
    add_json(m_rm, "print the result as JSON")
    m_rm.set_defaults(func=cmd_models_rm)
    m_imp = msub.add_parser("import", help="register a local GGUF file (no copy unless --copy)")
    m_imp.add_argument("path", help="the GGUF file (with --from: the model's name there)")
    m_imp.add_argument(
        "--from", dest="store", choices=["ollama", "lmstudio", "llamacpp", "hf"],
        help="a model another tool keeps (`models list --all`), registered where it lies",
    )  # fmt: skip
    m_imp.add_argument("--id", help="the id to give it (default: from the file name)")
    m_imp.add_argument("--copy", action="store_true", help="copy it into edgechat's data dir")
    add_json(m_imp, "print the result as JSON")
    m_imp.set_defaults(func=cmd_models_import)
    m_ver = msub.add_parser("verify", help="re-check pulled files against the hub's SHA-256")
    m_ver.add_argument("model", nargs="?", help="one model id (default: all pulled models)")
    add_json(m_ver, "print the result as JSON")
    m_ver.set_defaults(func=cmd_models_verify)
    m_info = msub.add_parser("info", help="catalog facts, header facts and the memory estimate")
    m_info.add_argument("model", help="an installed id, a catalog ID[:QUANT] or a GGUF path")
    m_info.add_argument("--ctx", type=flag("ctx"), metavar="N", help="context for the estimate")
    add_json(m_info)
    m_info.set_defaults(func=cmd_models_info)

    login = sub.add_parser("login", help="store a Hugging Face token for gated models")
    login.add_argument("--token", help=argparse.SUPPRESS)  # refused: see cmd_login
    login.set_defaults(func=cmd_login)
    logout = sub.add_parser("logout", help="remove the stored Hugging Face token")
    logout.set_defaults(func=cmd_logout)
