"""The rules of the source tree, checked on the source itself (AST), so CI keeps them:

    device/             never imports host/
    kernels/            imports neither host/ nor device/
    kernels/workloads/  imports only the kernels API (kernels.*, never host or device)
    no module imports a private name (``_x``) of another module of the project
    no code but device/ordering.py stores to a shared word another process reads: a global
        (G_*), a mailbox head, a worker's line (W_*) or a report's length word
    nothing cites a note outside the repository: facts are cited to their public source or kept
        in docs/
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("host", "device", "kernels")


def _modules() -> list[tuple[str, Path, ast.Module]]:
    """(dotted name, path, tree) of every module of the project."""
    out = []
    for pkg in PACKAGES:
        for p in sorted((ROOT / pkg).rglob("*.py")):
            rel = p.relative_to(ROOT).with_suffix("")
            name = ".".join(rel.parts[:-1] if rel.name == "__init__" else rel.parts)
            out.append((name, p, ast.parse(p.read_text(), str(p))))
    return out


MODULES = _modules()


def _imports(name: str, tree: ast.Module) -> list[tuple[int, str, list[str]]]:
    """(line, imported module, names taken from it) of every import, wherever it is (function
    bodies and TYPE_CHECKING blocks too); relative imports resolved against ``name``."""
    out = []
    pkg = name.split(".")
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name, []) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level:
                base = pkg[:len(pkg) - node.level + (1 if _is_package(name) else 0)]
                mod = ".".join(base + ([mod] if mod else []))
            out.append((node.lineno, mod, [a.name for a in node.names]))
    return out


def _is_package(name: str) -> bool:
    return any(m == name and p.name == "__init__.py" for m, p, _ in MODULES)


def _top(mod: str) -> str:
    return mod.split(".")[0]


def test_the_tree_is_found():
    names = {m for m, _, _ in MODULES}
    assert {"device.scheduler", "device.ordering", "host.device", "kernels.registry",
            "kernels.workloads.catalogue"} <= names


@pytest.mark.parametrize("layer,forbidden", [("device", {"host"}), ("kernels", {"host", "device"})])
def test_a_layer_never_imports_the_one_above_it(layer, forbidden):
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for name, p, tree in MODULES if _top(name) == layer
           for line, mod, _ in _imports(name, tree) if _top(mod) in forbidden]
    assert not bad, "\n".join(bad)


def test_workloads_use_only_the_kernels_api():
    bad = [f"{p.relative_to(ROOT)}:{line} imports {mod}"
           for name, p, tree in MODULES if name.startswith("kernels.workloads")
           for line, mod, _ in _imports(name, tree)
           if _top(mod) in PACKAGES and _top(mod) != "kernels"]
    assert not bad, "\n".join(bad)


def test_no_module_takes_a_private_name_of_another():
    project = {m for m, _, _ in MODULES}
    bad = []
    for name, p, tree in MODULES:
        aliases = {}                                   # local name -> project module
        for line, mod, names in _imports(name, tree):
            if mod not in project:
                continue
            for n in names:
                if n.startswith("_") and not n.startswith("__"):
                    bad.append(f"{p.relative_to(ROOT)}:{line} imports {n} from {mod}")
                if f"{mod}.{n}" in project:
                    aliases[n] = f"{mod}.{n}"
        for node in ast.walk(tree):
            if isinstance(node, ast.alias) and node.name in project:
                aliases[node.asname or node.name] = node.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
                bad.append(f"{p.relative_to(ROOT)}:{node.lineno} uses {aliases[node.value.id]}.{node.attr}")
    assert not bad, "\n".join(bad)


# Index expressions that name a shared word: the globals (G_* codes, the g_* offsets and
# g[...] tables made from them), the mailbox heads (mb, mailbox(...)), the worker lines (W_*,
# w_* offsets, wline(...), asleep) and the report areas (err_area, sched_area) whose first word
# is the report's length. Data words (records, time rows, mailbox slots, the FREED queue, the
# dep pool) are written plainly: a counter published after them makes them visible.
SHARED_WORD = re.compile(r"\b(G_\w+|g_\w+|W_\w+|w_\w+|MB_HEAD|mb|asleep|sched_area|err_area)\b|"
                         r"\.(g|mailbox|wline|err_area)\(|\bg\[")


def _stores(tree: ast.Module):
    for node in ast.walk(tree):
        targets = (node.targets if isinstance(node, ast.Assign) else
                   [node.target] if isinstance(node, (ast.AugAssign, ast.AnnAssign)) else [])
        while targets:
            t = targets.pop()
            if isinstance(t, (ast.Tuple, ast.List)):
                targets += t.elts
            elif isinstance(t, ast.Subscript):
                yield t


def test_only_the_ordering_module_stores_a_shared_word():
    bad = [f"{p.relative_to(ROOT)}:{sub.lineno}: {ast.unparse(sub)} = ... (use device.ordering.publish)"
           for name, p, tree in MODULES if _top(name) in ("host", "device") and name != "device.ordering"
           for sub in _stores(tree) if SHARED_WORD.search(ast.unparse(sub.slice))]
    assert not bad, "\n".join(bad)


def test_the_shared_word_check_catches_a_direct_store():
    # The check above must be able to fail: these are the forms a direct store would take.
    for src in ("q[self.g_head] = tid + 1", "q[lay.g(L.G_STOP)] = 1", "q[g[L.G_REQ]] = req",
                "q[mb] = h + 1", "q[wl + L.W_DONE] = tail", "q[self.lay.sched_area] = 0",
                "self.q[self.lay.wline(c) + 3] += 1"):
        (sub,) = _stores(ast.parse(src))
        assert SHARED_WORD.search(ast.unparse(sub.slice)), src
    for src in ("q[t + C.T_STATUS] = C.STATUS_OK", "q[slots_at[c] + h % D] = e", "raw[tb + j] = C.TAG_INT"):
        (sub,) = _stores(ast.parse(src))
        assert not SHARED_WORD.search(ast.unparse(sub.slice)), src


# Notes that lived beside the repository while it was built; citing them leaves a reader nowhere.
OUTSIDE = re.compile(r"A2A3_MODEL|REFERENCE_HEAD|REFERENCE\.md|PERF_NOTES|QWEN3_DECODE|/work/shared|\.\./shared/")


def test_nothing_cites_a_note_outside_the_repository():
    files = [p for pkg in (*PACKAGES, "docs", "tests") for p in sorted((ROOT / pkg).rglob("*.py"))]
    files += sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
    bad = [f"{p.relative_to(ROOT)}:{i}: {line.strip()}"
           for p in files if p != Path(__file__).resolve()
           for i, line in enumerate(p.read_text().splitlines(), 1) if OUTSIDE.search(line)]
    assert not bad, "cite the public source (a simpler PR, a pto-isa file) or docs/ instead:\n" + "\n".join(bad)
