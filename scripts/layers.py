#!/usr/bin/env python3
"""Fails on a circle between the top-level modules of a crate, and on an import the layer map forbids.

A crate's top-level modules are the `mod` items of its `src/lib.rs` (a file or a folder directly
under `src/`). An edge A -> B is a code path in A's files that names B: `use crate::B…`,
`crate::B::…` inline, a `crate::{B, …}` group, or `super::…` reaching B from inside A. Comments,
doc comments, string literals and `#[cfg(test)]` code (inline `mod tests { … }`, `#[cfg(test)]`
items and files declared by `#[cfg(test)] mod name;`) are not read. `$crate` paths in macros are
not followed.

Layers: for the crates that ARCHITECTURE.md gives a folder map (a table under a heading
"## Folder map of `CRATE/src`" whose first column names the module in backticks, `proxy/` or
`server.rs`, and whose last column lists what it may import, in backticks, or says "anything" or
"nothing"), every edge must be allowed by the map and every top-level module must be in it.

    scripts/layers.py [--root DIR] [--crates a,b] [--graph]

--root checks another checkout (default: this one); --crates other crates than the workspace's
six; --graph prints every crate's edges. `scripts/layers_test.py` tests the check itself.
Exit 0 when clean, 1 with one line per circle or forbidden edge, each naming file:line.
"""

import argparse
import os
import re
import sys

CRATES = ["gateway", "health", "config", "loadtest", "testbed", "tests"]


def strip_code(text):
    """Blanks comments, string and char literals (newlines kept, so offsets and lines stay)."""
    out = list(text)
    i, n = 0, len(text)

    def blank(a, b):
        for k in range(a, b):
            if out[k] != "\n":
                out[k] = " "

    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            blank(i, j)
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            blank(i, j)
            i = j
        elif c in "rb" and re.match(r"(?:br|r)(#*)\"", text[i:i + 40]) and not _ident_char(text, i - 1):
            m = re.match(r"(?:br|r)(#*)\"", text[i:])
            close = '"' + m.group(1)
            j = text.find(close, i + m.end())
            j = n if j < 0 else j + len(close)
            blank(i, j)
            i = j
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            blank(i, j + 1)
            i = j + 1
        elif c == "'":
            # A char literal ('a', '\n', '\u{..}', b'x'); a lifetime ('a) has no closing quote.
            m = re.match(r"'(?:\\u\{[0-9a-fA-F]+\}|\\.|[^\\'])'", text[i:])
            if m:
                blank(i, i + m.end())
                i += m.end()
            else:
                i += 1
        else:
            i += 1
    return "".join(out)


def _ident_char(text, k):
    return k >= 0 and (text[k].isalnum() or text[k] == "_")


def matching_brace(text, open_at):
    depth = 0
    for k in range(open_at, len(text)):
        if text[k] == "{":
            depth += 1
        elif text[k] == "}":
            depth -= 1
            if depth == 0:
                return k + 1
    return len(text)


CFG_TEST = re.compile(r"#\s*\[\s*cfg\s*\(\s*test\s*\)\s*\]")
ATTR = re.compile(r"\s*#\s*\[")
MOD_DECL = re.compile(r"\b(?:pub(?:\s*\([^)]*\))?\s+)?mod\s+(\w+)\s*([;{])")


def remove_test_code(code):
    """Blanks `#[cfg(test)]` items; returns (code, names of test-only child module files)."""
    out = list(code)
    test_children = set()
    for m in CFG_TEST.finditer(code):
        j = m.end()
        # Further attributes on the same item.
        while True:
            a = ATTR.match(code, j)
            if not a:
                break
            depth, k = 0, a.end() - 1
            while k < len(code):
                if code[k] == "[":
                    depth += 1
                elif code[k] == "]":
                    depth -= 1
                    if depth == 0:
                        break
                k += 1
            j = k + 1
        decl = MOD_DECL.match(code, j) or MOD_DECL.match(code, j + len(code[j:]) - len(code[j:].lstrip()))
        semi = code.find(";", j)
        brace = code.find("{", j)
        if semi >= 0 and (brace < 0 or semi < brace):
            end = semi + 1
            if decl and decl.group(2) == ";":
                test_children.add(decl.group(1))
        elif brace >= 0:
            end = matching_brace(code, brace)
        else:
            end = len(code)
        for k in range(m.start(), end):
            if out[k] != "\n":
                out[k] = " "
    return "".join(out), test_children


def line_of(text, pos):
    return text.count("\n", 0, pos) + 1


PATH = re.compile(r"(?<![\w$])(crate|super)((?:\s*::\s*(?:super|\w+))*)(\s*::\s*\{)?")


def group_heads(code, open_at):
    """The first segment of each element of a `{a, b::c, d::{e}}` use group."""
    close = matching_brace(code, open_at)
    inner = code[open_at + 1:close - 1]
    heads, depth, cur = [], 0, ""
    for ch in inner + ",":
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            seg = cur.strip().split("::")[0].strip()
            if seg:
                heads.append(seg)
            cur = ""
        else:
            cur += ch
    return heads


class Crate:
    def __init__(self, root, name):
        self.name = name
        self.src = os.path.join(root, name, "src")
        self.modules = {}  # top-level module -> list of (file, module path)
        self.edges = {}  # (a, b) -> first evidence "file:line"

    def load(self):
        lib = os.path.join(self.src, "lib.rs")
        code, test_children = remove_test_code(strip_code(open(lib).read()))
        for m in MOD_DECL.finditer(code):
            name = m.group(1)
            if name in test_children or m.group(2) == "{":
                continue
            self.modules[name] = []
            self._collect(name, [name])
        for top, files in self.modules.items():
            for path, modpath in files:
                self._scan(top, path, modpath)

    def _collect(self, top, modpath):
        base = os.path.join(self.src, *modpath)
        for candidate in (base + ".rs", os.path.join(base, "mod.rs")):
            if os.path.exists(candidate):
                path = candidate
                break
        else:
            sys.exit(f"layers: no file for module {'::'.join(modpath)} in {self.src}")
        self.modules[top].append((path, modpath))
        code, test_children = remove_test_code(strip_code(open(path).read()))
        for m in MOD_DECL.finditer(code):
            if m.group(2) == ";" and m.group(1) not in test_children:
                self._collect(top, modpath + [m.group(1)])

    def _scan(self, top, path, modpath):
        text = open(path).read()
        code, _ = remove_test_code(strip_code(text))
        inline = [(m.group(1), m.end() - 1, matching_brace(code, m.end() - 1))
                  for m in MOD_DECL.finditer(code) if m.group(2) == "{"]
        for m in PATH.finditer(code):
            segs = [s.strip() for s in m.group(2).split("::") if s.strip()]
            if m.group(1) == "crate":
                absolute = []
            else:
                here = modpath + [name for name, a, b in inline if a < m.start() < b]
                absolute = here[:-1]
                while segs and segs[0] == "super":
                    absolute = absolute[:-1]
                    segs = segs[1:]
            absolute = absolute + segs
            heads = [absolute[0]] if absolute else []
            if not absolute and m.group(3):
                heads = group_heads(code, m.end() - 1)
            for head in heads:
                if head in self.modules and head != top:
                    where = f"{os.path.relpath(path, os.path.dirname(os.path.dirname(self.src)))}:{line_of(code, m.start())}"
                    self.edges.setdefault((top, head), where)


def circles(nodes, edges):
    """Strongly connected components with more than one module (Tarjan)."""
    graph = {n: sorted(b for (a, b) in edges if a == n) for n in nodes}
    index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

    def visit(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                comps.append(sorted(comp))

    sys.setrecursionlimit(10000)
    for n in sorted(nodes):
        if n not in index:
            visit(n)
    return comps


def one_cycle(comp, edges):
    """A shortest cycle through the component's first module, as a list of modules."""
    start = comp[0]
    members = set(comp)
    frontier, parent = [start], {start: None}
    while frontier:
        nxt = []
        for v in frontier:
            for (a, b) in sorted(edges):
                if a != v or b not in members:
                    continue
                if b == start:
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return list(reversed(path)) + [start]
                if b not in parent:
                    parent[b] = v
                    nxt.append(b)
        frontier = nxt
    return comp


def layer_map(root, crate):
    """The folder map for a crate from ARCHITECTURE.md: module -> allowed imports (None: anything)."""
    path = os.path.join(root, "ARCHITECTURE.md")
    if not os.path.exists(path):
        return None
    text = open(path).read()
    head = re.search(r"^##+ Folder map of `" + re.escape(crate) + r"/src`.*$", text, re.M)
    if not head:
        return None
    table = {}
    for line in text[head.end():].splitlines()[1:]:
        if line.startswith("#"):
            break
        if not line.startswith("|") or set(line) <= set("|-: "):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        names = re.findall(r"`([\w.]+)/?`", cells[0])
        if not names:
            continue
        allowed_cell = cells[-1]
        if "anything" in allowed_cell:
            allowed = None
        else:
            allowed = {re.sub(r"(\.rs|/)$", "", a) for a in re.findall(r"`([\w./]+)`", allowed_cell)}
        for name in names:
            table[re.sub(r"\.rs$", "", name)] = allowed
    return table


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--root", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    ap.add_argument("--crates", default=",".join(CRATES), help="comma-separated crate folders")
    ap.add_argument("--graph", action="store_true", help="print every crate's edges")
    args = ap.parse_args()
    root = os.path.abspath(args.root)
    problems = []
    for name in args.crates.split(","):
        crate = Crate(root, name)
        crate.load()
        if args.graph:
            for (a, b), where in sorted(crate.edges.items()):
                print(f"{name}: {a} -> {b}  ({where})")
        for comp in circles(crate.modules, crate.edges):
            cycle = one_cycle(comp, crate.edges)
            steps = ", ".join(f"{a} -> {b} ({crate.edges[(a, b)]})" for a, b in zip(cycle, cycle[1:]))
            problems.append(f"{name}: module circle {' -> '.join(cycle)}: {steps}")
        table = layer_map(root, name)
        if table is None:
            continue
        for top in sorted(crate.modules):
            if top not in table:
                problems.append(f"{name}: module `{top}` is not in ARCHITECTURE.md's folder map of {name}/src")
        for (a, b), where in sorted(crate.edges.items()):
            allowed = table.get(a, set())
            if allowed is not None and b not in allowed:
                problems.append(f"{name}: `{a}` may not import `{b}` (ARCHITECTURE.md's folder map): {where}")
    for p in problems:
        print(p)
    if problems:
        print(f"layers: {len(problems)} problem(s)", file=sys.stderr)
        return 1
    print("layers: no module circle; every import follows the folder map")
    return 0


if __name__ == "__main__":
    sys.exit(main())
