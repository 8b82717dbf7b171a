"""A result file full of hostile strings (names, assumptions, config), for the escaping tests."""

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


def hostile_result(doc: dict) -> dict:
    d = copy.deepcopy(doc)
    d["defense"]["name"] = NAME
    d["defense"]["source"] = TEXT_PAYLOADS[9]
    d["defense"]["assumptions"] = list(TEXT_PAYLOADS)
    d["defense"]["config"] = {**d["defense"]["config"], **{f"field{i}": p for i, p in enumerate(TEXT_PAYLOADS)}}
    d["model"]["name"] = TEXT_PAYLOADS[4]
    return d
