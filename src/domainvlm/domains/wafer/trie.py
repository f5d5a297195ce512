"""The token trie of a taxonomy's valid diagnosis lines, which the wafer head walks greedily (head.py) and
scores as a token tree (confidence.py): one path per answer set, single-child runs fed without a decision."""

from __future__ import annotations

from . import knowledge as wk
from .knowledge import line_end
from .taxonomy import for_model_dir


class Node:
    __slots__ = ("children", "leaf", "id", "next")

    def __init__(self):
        self.children: dict[int, Node] = {}
        self.leaf: tuple | None = None
        self.id = -1
        self.next: dict[int, tuple[list[int], Node]] = {}  # token -> (forced tokens after it, node reached)


def line_tokens(tok, defects, lang, tax=None) -> list[int]:
    """Token ids of the diagnosis line and the newline after it, cut from the full training answer so the
    tokenisation is exactly the one the model was trained on."""
    ids = tok(wk.answer(defects, lang, True, tax), add_special_tokens=False)["input_ids"]
    e = line_end(tok, ids)
    if e is None:
        raise ValueError(f"no newline after the diagnosis line for {defects} ({lang})")
    return ids[:e]


def plus_token(tok, lang: str, tax) -> int | None:
    """The decision token that names one more pattern: where "A + B" leaves the line "A" (None: no mixture)."""
    pair = next((s for s in tax.answer_sets() if len(s) == 2), None)
    if pair is None:
        return None
    a, ab = line_tokens(tok, pair[:1], lang, tax), line_tokens(tok, pair, lang, tax)
    return ab[next(i for i, (x, y) in enumerate(zip(a, ab)) if x != y)]


def forced(node: Node) -> tuple[list[int], Node]:
    """Follow single-child links from ``node``; returns the tokens passed and the node reached."""
    out = []
    while len(node.children) == 1 and node.leaf is None:
        t, node = next(iter(node.children.items()))
        out.append(t)
    return out, node


def build_trie(tok, lang: str, tax=None) -> Node:
    """Token trie of the diagnosis lines of every answer set of ``tax`` (default: the wafer taxonomy)."""
    tax = tax or for_model_dir(None)
    root = Node()
    for d in tax.answer_sets():
        node = root
        for t in line_tokens(tok, d, lang, tax):
            node = node.children.setdefault(t, Node())
        if node.children or node.leaf is not None:
            raise ValueError(f"diagnosis line for {'+'.join(d) or 'none'} ({lang}) is a prefix of another")
        node.leaf = d
    return root


def branch_nodes(root: Node) -> list[Node]:
    """Nodes where a decision is taken (more than one child), with their forced continuations cached."""
    out, stack = [], [forced(root)[1]]
    while stack:
        node = stack.pop()
        if node.leaf is not None or node.id >= 0:
            continue
        node.id = len(out)
        out.append(node)
        for t, child in node.children.items():
            node.next[t] = forced(child)
            stack.append(node.next[t][1])
    return out
