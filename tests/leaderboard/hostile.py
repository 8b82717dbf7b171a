"""A result file full of hostile strings (source, assumptions, config), for the escaping tests, and hostile names.

Names (defense, model, dataset) must follow the registry grammar, so ``validate`` refuses a hostile one
(:data:`HOSTILE_NAMES`); the free-text fields a result may carry are where hostile strings can still arrive.
"""

from __future__ import annotations

import copy

MARK = "document.body.setAttribute('data-pwned','1');window.__pwned=1"
NAME = f"<img src=x onerror=\"{MARK}\">"
TEXT_PAYLOADS = [
    f"<script>{MARK};alert(1)</script>",
    f"<img src=x onerror=\"{MARK};alert(1)\">",
    f"javascript:{MARK}",
    f"\" onmouseover=\"{MARK}\" data-x=\"",
    f"'><script>{MARK}</script>",
    f"</textarea><script>{MARK}</script>",
    f"<svg onload=\"{MARK}\"></svg>",
    f"<iframe src=\"javascript:{MARK}\"></iframe>",
    f"</title><script>{MARK}</script>",
    f"<a href=\"javascript:{MARK}\">click me</a>",
    f"--><script>{MARK}</script><!--",
    f"<body onload=\"{MARK}\">",
    "{{ 7 * 7 }}{% raw %}",
    f"<style>body{{display:none}}</style><math><mtext></p><script>{MARK}</script>",
]


#: Names outside the registry grammar: markup, mathtext, a path, upper case, spaces, empty.
HOSTILE_NAMES = [NAME, "<img src=x onerror=alert(1)>", "$\\undefinedcmd{x}$", "../../etc/passwd", "NeoKD",
                 "neo kd", "", "-leading-dash", "a" * 65, "neokd|adv", "*neokd*"]


def hostile_result(doc: dict) -> dict:
    """Hostile strings in every free-text field; the names stay registry names (a hostile name is refused)."""
    d = copy.deepcopy(doc)
    d["defense"]["name"] = "evil"
    d["defense"]["source"] = NAME
    d["defense"]["assumptions"] = list(TEXT_PAYLOADS)
    d["defense"]["config"] = {**d["defense"]["config"], **{f"field{i}": p for i, p in enumerate(TEXT_PAYLOADS)}}
    return d
