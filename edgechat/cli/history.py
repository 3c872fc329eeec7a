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
    for h in hits:
        print(f"#{h.conversation} {h.title} · {h.role}: {h.snippet}")
    return 0


def cmd_history_list(args) -> int:
    import time

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
    for r in rows:
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["updated"]))
        print(f"#{r['id']:<5} {when}  {r['messages']:>4} msg  {r['title']}")
    return 0
