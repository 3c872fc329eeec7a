"""`edgechat history`: the conversations kept by the app, and search across them."""

from __future__ import annotations

import json


def cmd_history_search(args) -> int:
    from edgechat.errors import EdgechatError
    from edgechat.tasks.conversations import Store
    from edgechat.tasks.search import fts_query

    text = " ".join(args.text)
    if not fts_query(text):
        raise EdgechatError("give some words to search for, like: edgechat history search paris")
    store = Store()
    try:
        hits = store.search(text, limit=args.limit)
    finally:
        store.close()
    if args.json:
        print(json.dumps([h.as_dict() for h in hits], indent=2, ensure_ascii=False))
        return 0
    if not hits:
        print(f"no message holds “{text}”")
        return 0
    from edgechat.cli.table import wrap
    from edgechat.text import clean

    for h in hits:
        line = clean(f"#{h.conversation} {h.title} · {h.role}: {h.snippet}")
        print("\n".join(wrap(line, 4, first=0)))
    return 0


def cmd_history_list(args) -> int:
    from edgechat.tasks.conversations import Store

    store = Store()
    try:
        rows = [
            {
                "id": c.id,
                "title": c.title,
                "updated": c.updated,
                "messages": len(store.messages(c.id)),
            }
            for c in store.list()
        ]
    finally:
        store.close()
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    if not rows:
        print("no conversations yet: `edgechat` opens the app")
    for line in history_table(rows):
        print(line)
    return 0


def history_table(rows: list[dict]) -> list[str]:
    """One line a conversation, in 80 columns: the title cut to what is left."""
    import time

    from edgechat.cli.table import WIDTH, cut, num
    from edgechat.text import clean

    id_w = max([6, *(len(str(r["id"])) + 1 for r in rows)])
    lines = []
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"]))
        head = f"{'#' + str(r['id']):<{id_w}} {when}  {num(r['messages'], 4, 0)} msg  "
        lines.append(head + cut(clean(r["title"]), WIDTH - len(head)))
    return lines


def register(sub) -> None:
    from argparse import SUPPRESS

    from edgechat.cli.options import add_json
    from edgechat.limits import flag

    his = sub.add_parser("history", help="the app's conversations: list them, search them")
    # `history` alone lists them, so it takes list's options: `history --json` too.
    add_json(his, "print them as JSON (as `history list --json`)")
    hsub = his.add_subparsers(dest="action", metavar="ACTION")
    his.set_defaults(func=cmd_history_list)
    h_list = hsub.add_parser("list", help="every conversation, newest first")
    # SUPPRESS: not given here, `history --json list` keeps the --json given before it
    h_list.add_argument("--json", action="store_true", default=SUPPRESS, help="print as JSON")
    h_list.set_defaults(func=cmd_history_list)
    h_find = hsub.add_parser("search", help="find words in every conversation (full text)")
    h_find.add_argument("text", nargs="+", metavar="TEXT")
    h_find.add_argument(
        "-n", "--limit", type=flag("limit"), default=20, metavar="N", help="at most N"
    )
    add_json(h_find, "print the matches as JSON")
    h_find.set_defaults(func=cmd_history_search)
