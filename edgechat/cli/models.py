"""`models list|pull|rm|import|verify|info`, `login`, `logout`: the model store and the hub
token.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

from edgechat.cli.common import _size


def cmd_models_list(args) -> int:
    import time

    from edgechat.models import registry

    records = registry.records()
    rows = []
    starter = registry.starter_model_path()
    if starter and registry.STARTER_ID not in records:
        rows.append(
            {
                "id": registry.STARTER_ID,
                "quant": "Q4_1",
                "size": starter.stat().st_size,
                "path": str(starter),
                "source": "starter package",
                "last_used": registry.starter_last_used(),
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
    from edgechat.text import clean

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
        print(f"{clean(r['id']):<44} {_size(r['size']):>9}  {used:<16} {clean(r['source'])}")
    return 0


def _recommended_quant(catalog_id: str) -> str:
    from edgechat import config
    from edgechat.facts.device import detect
    from edgechat.planning import catalog
    from edgechat.planning.recommend import choose
    from edgechat.planning.speed import cpu_bandwidth

    model = catalog.load()[catalog_id]
    device = detect()
    task = model.tasks[0]
    return choose(model, task, config.load().ctx, device, cpu_bandwidth(device)).quant


def cmd_models_pull(args) -> int:
    from edgechat.models import hub

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
    else:
        print(f"removed {record['id']}, freed {_size(freed)}")
    return 0


def cmd_models_import(args) -> int:
    import re
    import shutil

    from edgechat.facts.gguf import inspect_file
    from edgechat.llama.probe import check_loads
    from edgechat.models import registry
    from edgechat.paths import ensure_private_dir, paths

    src = Path(args.path).expanduser().resolve()
    facts = inspect_file(src)  # refuses a truncated or non-GGUF file with one line
    check_loads(src)  # and what only llama.cpp knows it cannot load: what is listed loads
    quant = facts.file_type or "?"
    stem = src.stem.lower()
    if not args.id:  # `gemma-3-270m-q4_k_m.gguf` is gemma-3-270m:Q4_K_M, not ...-q4_k_m:Q4_K_M
        stem = re.sub(rf"[-._]{re.escape(quant.lower())}$", "", stem) or stem
    model_id = (args.id or re.sub(r"[^a-z0-9._-]+", "-", stem)).strip("-")
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
    registry.register(
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
        from edgechat.text import clean

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
    from edgechat.facts.device import detect
    from edgechat.models import registry
    from edgechat.planning import catalog
    from edgechat.planning.fit import plan_for
    from edgechat.planning.plan import RunPlan

    settings = config.load()
    target = registry.locate(args.model, settings.default_model)
    est, fit = plan_for(
        RunPlan(target.path, n_ctx=args.ctx or settings.ctx), target.shape, detect(), auto_gpu=True
    )
    cat_id = args.model.partition(":")[0].lower()
    record = registry.records().get(args.model)
    if record is None and target.source == "file":
        record = next(
            (r for r in registry.records().values() if r.get("path") == str(target.path)), None
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
    return 0


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

    removed = credentials.forget()
    print(f"token removed from {', '.join(removed)}" if removed else "no stored token")
    if os.environ.get("HF_TOKEN"):
        print("HF_TOKEN is still set in this shell's environment")
    return 0
