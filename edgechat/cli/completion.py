"""`edgechat completion bash|zsh|fish`: a completion script made from the argparse parser.

Bash and zsh scripts come from shtab, which turns an argparse parser into a static
script (no Python runs at each Tab, which matters on a Pi). shtab has no fish
writer; fish's `complete` lines are simple enough to write here from the same
parser, so all three shells always offer exactly the commands and options the
parser has.
"""

from __future__ import annotations

import argparse

# Arguments whose values are files on disk: the shells complete paths for them.
_PATH_ARGS = {"files", "target", "path", "src", "dst", "text", "out", "ref"}
_FILES = {"bash": "_shtab_compgen_files", "zsh": "_files", "tcsh": "f"}  # shtab.FILE


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    if shell == "fish":
        return "\n".join(_fish(parser, [])) + "\n"
    import shtab

    for action in _actions(parser):
        if action.dest in _PATH_ARGS:
            action.complete = shtab.FILE  # type: ignore[attr-defined]
    return shtab.complete(parser, shell=shell)


def _actions(parser: argparse.ArgumentParser):
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in set(action.choices.values()):
                yield from _actions(sub)


def _quote(text: str | None) -> str:
    return "'" + (text or "").replace("\\", "\\\\").replace("'", "\\'") + "'"


def _fish(parser: argparse.ArgumentParser, path: list[str]) -> list[str]:
    """``complete`` lines for ``parser``, reached by the subcommands in ``path``."""
    prog = "edgechat"
    lines = [f"complete -c {prog} -f"] if not path else []
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    names = [n for a in subs for n in a.choices]
    here = "; and ".join(f"__fish_seen_subcommand_from {p}" for p in path) or "true"
    if names:
        not_yet = f"not __fish_seen_subcommand_from {' '.join(names)}"
        helps = {c.dest: c.help for a in subs for c in a._choices_actions}
        for a in subs:
            for name, sub in a.choices.items():
                what = helps.get(name) or helps.get(_canonical(a, sub)) or ""
                cond = _quote(f"{here}; and {not_yet}" if path else not_yet)
                lines.append(f"complete -c {prog} -n {cond} -a {name} -d {_quote(what)}")
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction) or action.help == argparse.SUPPRESS:
            continue
        flags = [f"-l {o[2:]}" for o in action.option_strings if o.startswith("--")]
        flags += [f"-s {o[1:]}" for o in action.option_strings if len(o) == 2]
        takes = action.nargs != 0 and action.option_strings
        extra = ""
        if action.choices and not isinstance(action.choices, dict):
            extra = f" -x -a {_quote(' '.join(map(str, action.choices)))}"
        elif action.dest in _PATH_ARGS:
            extra = " -F" + (" -r" if takes else "")
        elif takes:
            extra = " -x"
        if not flags and not extra:
            continue
        spec = " ".join([*flags, extra.strip()]).strip()
        lines.append(f"complete -c {prog} -n {_quote(here)} {spec} -d {_quote(action.help)}")
    for a in subs:
        for name, sub in a.choices.items():  # an alias gets the same lines under its name
            lines.extend(_fish(sub, [*path, name]))
    return lines


def _canonical(action: argparse._SubParsersAction, sub: argparse.ArgumentParser) -> str:
    return next(name for name, p in action.choices.items() if p is sub)


def cmd_completion(args) -> int:
    from edgechat.cli import build_parser

    print(script(build_parser(), args.shell), end="")
    return 0


def register(sub) -> None:
    comp = sub.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh or fish)",
        description="Bash: `source <(edgechat completion bash)` in ~/.bashrc. Zsh: "
        "`edgechat completion zsh > ~/.zfunc/_edgechat` with ~/.zfunc on fpath. Fish: "
        "`edgechat completion fish > ~/.config/fish/completions/edgechat.fish`.",
    )
    comp.add_argument("shell", choices=["bash", "zsh", "fish"])
    comp.set_defaults(func=cmd_completion)
