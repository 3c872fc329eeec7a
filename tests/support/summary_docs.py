"""Documents for the summariser's tests on FakeEngine: numbered items, and a reply that
names the items it read, so a summary shows which parts of the document reached it; a
council's minutes, and a reply that invents a number, a name and a quote beside a true
quote (the check against the source, issue 33)."""

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


TRUE_QUOTE = "a place for every reader in Arden"
COUNCIL = "\n\n".join(
    [
        "The town council of Arden met on Tuesday to discuss the new public library. The "
        "building will cost four million euros and open in 2027, on the old market square. "
        f'The mayor called it "{TRUE_QUOTE}" and thanked the residents who had written in.',
        "Residents asked for longer opening hours and a children's section. Several asked "
        "for a reading room where students could work in the evenings, and for a café. The "
        "librarians asked for a larger archive for the town's old newspapers and maps.",
        "The council agreed to hold a public consultation in the spring, before the plans "
        "are final. The plans will be shown in the town hall for six weeks, and anyone may "
        "send comments by post or by email to the council's planning office.",
        "Work on the site starts after the summer. The old market hall will be kept, and "
        "its roof repaired, so the weekly market can go on while the library is built. "
        "The council will report on the costs every three months until it opens.",
    ]
)
INVENTED = ["2031", "Zaha Mendel", "longer opening hours on weekends"]
FIRST = (
    f'The council of Arden met to discuss the new library, which the mayor called "{TRUE_QUOTE}". '
    "It will cost four million euros and open in 2031. "
    "The architect Zaha Mendel designed the building on the old market square. "
    'Residents asked for "longer opening hours on weekends" and a children\'s section. '
    "The librarians asked for a larger archive for old newspapers and maps."
)
MORE_TEXT = (
    "The council agreed to hold a public consultation in the spring. "
    "Work on the site starts after the summer, and the weekly market can go on."
)


def inventing(request) -> str:
    """A summariser's reply that invents a number, a name and a quote beside a true
    quote; told what the text does not contain, it mends the number only."""
    asked = request if isinstance(request, str) else request[-1]["content"]
    if asked.startswith("The text does not contain"):
        if '"2031"' in asked:
            return "It will cost four million euros and open in 2027."
        if "Zaha Mendel" in asked:
            return "The architect Zaha Mendel drew the plans."
        return 'Residents asked for "opening hours on weekends".'
    if asked.startswith("Continue the summary"):
        return MORE_TEXT
    return FIRST
