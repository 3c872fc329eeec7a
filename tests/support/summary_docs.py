"""Documents for the summariser's tests on FakeEngine: numbered items, and a reply that
names the items it read, so a summary shows which parts of the document reached it."""

from __future__ import annotations

import re

ITEMS = re.compile(r"\bItems? (\d+)(?:-(\d+))?")


def items_covered(request) -> str:
    """FakeEngine's summary of a request: one sentence naming the range of numbered items
    its text holds ("Items 12-19 were reported."), so a summary shows which parts of the
    document reached it. A request to go on adds nothing."""
    text = request if isinstance(request, str) else request[-1]["content"]
    numbers = [int(n) for m in ITEMS.finditer(text) for n in m.groups() if n]
    return f"Items {min(numbers)}-{max(numbers)} were reported." if numbers else ""


def numbered_report(n_items: int) -> list[str]:
    towns = ["Arden", "Belmont", "Carrow", "Dunmore", "Elston", "Fairholm", "Glenrock"]
    return [
        f"Item {i}. The council of {towns[i % 7]} approved a budget of {(i * 37) % 90 + 10} "
        f"million euros for roads and schools; residents asked for safer crossings."
        for i in range(n_items)
    ]
