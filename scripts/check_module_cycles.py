#!/usr/bin/env python3
"""Fail when a Rust crate's modules import each other in a circle.

Reads every .rs file under SRC (default: crates/leasehold/src), takes each file as one
module (a.rs and a/mod.rs are `a`, a/b.rs is `a::b`), collects the `crate::…` and
`super::…` paths it names (in `use` lines, grouped `use crate::{…}` included, and inline),
resolves each to the longest module prefix (names re-exported by lib.rs resolve to the
module they come from), and reports every strongly connected group of two or more
modules. Edges to the crate root (lib.rs) are ignored: it only declares and re-exports.

    scripts/check_module_cycles.py [SRC]     exit 1 and list the circles if there are any
    scripts/check_module_cycles.py --self-test
"""

import os
import re
import sys
import tempfile

IDENT = r"[A-Za-z_][A-Za-z0-9_]*"


def module_of(src, path):
    rel = os.path.relpath(path, src)[:-3].split(os.sep)
    if rel[-1] == "mod":
        rel = rel[:-1]
    if rel == ["lib"]:
        return ""
    return "::".join(rel)


def strip_comments(text):
    text = re.sub(r"/\*.*?\*/", "", text, flags=re.S)
    return "\n".join(line.split("//", 1)[0] for line in text.splitlines())


def expand_group(prefix, body):
    """`a::{b, c::{d, e}}` -> a::b, a::c::d, a::c::e"""
    items, depth, cur = [], 0, ""
    for ch in body:
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
        if ch == "," and depth == 0:
            items.append(cur)
            cur = ""
        else:
            cur += ch
    items.append(cur)
    out = []
    for item in items:
        item = item.strip()
        if not item:
            continue
        m = re.match(r"^(.*?)::\{(.*)\}$", item, flags=re.S)
        if m:
            out += expand_group(prefix + "::" + m.group(1).strip(), m.group(2))
        else:
            out.append(prefix + "::" + item.split(" as ")[0].strip())
    return out


def paths_in(text, module):
    """Absolute module paths (root-relative, '::'-joined) that `text` names."""
    found = []
    for m in re.finditer(r"\b(crate|super)::\{", text):
        depth, i = 1, m.end()
        while i < len(text) and depth:
            depth += {"{": 1, "}": -1}.get(text[i], 0)
            i += 1
        found += expand_group(m.group(1), text[m.end():i - 1])
    for m in re.finditer(r"\b(crate|super)((?:::" + IDENT + r")+)", text):
        found.append(m.group(1) + m.group(2))
    parent = module.split("::")[:-1] if module else []
    out = []
    for p in found:
        segs = p.split("::")
        if segs[0] == "super":
            segs = parent + segs[1:]
        else:
            segs = segs[1:]
        segs = [s for s in segs if s and s != "self" and s != "*"]
        if segs:
            out.append(segs)
    return out


def graph(src):
    files = {}
    for root, _, names in os.walk(src):
        for n in names:
            if n.endswith(".rs"):
                p = os.path.join(root, n)
                files[module_of(src, p)] = strip_comments(open(p, encoding="utf-8").read())
    modules = set(files)
    reexports = {}
    for m in re.finditer(r"\bpub use (" + IDENT + r")::(\{[^}]*\}|" + IDENT + r")", files.get("", "")):
        names = m.group(2).strip("{}").split(",")
        for n in names:
            n = n.strip()
            if n:
                alias = n.split(" as ")[-1].strip()
                reexports[alias] = m.group(1)
    edges = {m: set() for m in modules if m}
    for mod, text in files.items():
        if not mod:
            continue
        for segs in paths_in(text, mod):
            target = None
            for k in range(len(segs), 0, -1):
                cand = "::".join(segs[:k])
                if cand in modules:
                    target = cand
                    break
            if target is None and segs[0] in reexports:
                target = reexports[segs[0]]
            if target and target != mod and target != "" and not mod.startswith(target + "::"):
                edges[mod].add(target)
    return edges


def cycles(edges):
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in edges.get(v, ()):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(sorted(group))

    sys.setrecursionlimit(10000)
    for v in sorted(edges):
        if v not in index:
            strong(v)
    return out


def report(src):
    edges = graph(src)
    found = cycles(edges)
    if not found:
        print(f"   no import circle among the {len(edges)} modules of {src}")
        return 0
    for group in found:
        members = set(group)
        ties = [f"{a} -> {b}" for a in group for b in sorted(edges[a]) if b in members]
        print(f"import circle in {src}: {', '.join(group)}\n  " + "\n  ".join(ties), file=sys.stderr)
    return 1


def self_test():
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "lease"))
        files = {
            "lib.rs": "mod a; mod b; mod lease;\npub use a::Thing;\n",
            "a.rs": "use crate::lease::State;\n",
            "lease/mod.rs": "mod state;\npub use state::State;\n",
            "lease/state.rs": "use super::drift; // crate::a::Thing in a comment\n",
            "b.rs": "use crate::{lease::{State, drift}, Thing};\n",
        }
        for name, text in files.items():
            with open(os.path.join(d, name), "w", encoding="utf-8") as f:
                f.write(text)
        assert cycles(graph(d)) == [], graph(d)
        # Add a circle a -> lease -> a, through a grouped import and a re-exported name.
        with open(os.path.join(d, "lease/mod.rs"), "a", encoding="utf-8") as f:
            f.write("use crate::{Thing};\n")
        found = cycles(graph(d))
        assert found == [["a", "lease"]], found
    print("   module-cycle check: self-test passed")
    return 0


if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        sys.exit(self_test())
    sys.exit(report(sys.argv[1] if len(sys.argv) > 1 else "crates/leasehold/src"))
