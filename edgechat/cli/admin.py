"""`doctor` and `config`: the install's health and the settings."""

from __future__ import annotations

import json

from edgechat import __version__


def cmd_doctor(args) -> int:
    import sys

    from edgechat.doctor import FAIL, kernels_setting, recheck_kernels, run_all

    setting = kernels_setting()
    if args.check_kernels:
        sys.stderr.write("checking llama.cpp's CPU kernels in a child process ...\n")
        chosen = recheck_kernels(lambda line: sys.stderr.write(f"edgechat: {line}\n"))
        sys.stderr.write(f"auto uses {chosen.title}: {chosen.why}\n")
    checks = run_all(cpu_kernels=setting)
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
        print(f"  {key:<{max(map(len, data['paths']))}} {value}")
    print("settings:")
    width = max(map(len, data["settings"]))
    for key, value in data["settings"].items():
        shown = _unset_model() if key == "default_model" and not value else repr(value)
        print(f"  {key:<{width}} {shown}")
    return 0


def _unset_model() -> str:
    """What an unset default_model means, named as a set one is: the model chat opens."""
    from edgechat.models import registry

    if registry.starter_model_path() is None:
        return "(not set: no model to open yet; `edgechat models pull ID` gets one)"
    return f"{registry.STARTER_ID!r} (not set: the starter)"


def register(sub) -> None:
    from edgechat.cli.options import add_json

    doc = sub.add_parser("doctor", help="check this install and print the fix for each problem")
    add_json(doc, "print the checks as JSON")
    doc.add_argument(
        "--check-kernels",
        action="store_true",
        help="check llama.cpp's CPU kernels (AMX, repacked weights) again before the rest",
    )
    doc.set_defaults(func=cmd_doctor)

    cfg = sub.add_parser("config", help="show paths and settings; set or unset a setting")
    cfg.add_argument("action", nargs="?", choices=["show", "set", "unset"], default="show")
    cfg.add_argument("key", nargs="?")
    cfg.add_argument("value", nargs="?")
    add_json(cfg, "print as JSON")
    cfg.set_defaults(func=cmd_config)
