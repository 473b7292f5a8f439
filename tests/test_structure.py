"""The package's import structure: no import cycle, no private name used across modules.

Every import counts, the ones inside functions too: a lazy import only hides a cycle
until the function runs.
"""

import ast
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGES = ("tfinfo", "trainers")


def project_modules(root, packages):
    """{dotted module name: file path} of every .py file under `packages`."""
    out = {}
    for package in packages:
        for folder, _, files in os.walk(os.path.join(root, package)):
            for name in files:
                if name.endswith(".py"):
                    path = os.path.join(folder, name)
                    module = os.path.relpath(path, root)[:-3].replace(os.sep, ".")
                    out[module.removesuffix(".__init__")] = path
    return out


def _absolute(module, path, node):
    if not node.level:
        return node.module
    parts = module.split(".")
    if not path.endswith("__init__.py"):
        parts = parts[:-1]
    parts = parts[: len(parts) - (node.level - 1)]
    return ".".join(parts + ([node.module] if node.module else []))


def import_graph(root, packages):
    """(edges {module: set of project modules it imports}, private uses [(module, name, line)])."""
    modules = project_modules(root, packages)
    edges = {m: set() for m in modules}
    private = []
    for module, path in modules.items():
        with open(path) as f:
            tree = ast.parse(f.read(), path)
        aliases = {}  # local name -> project module, for `import a.b as m; m._x`
        for node in ast.walk(tree):
            if isinstance(node, ast.ImportFrom):
                target = _absolute(module, path, node)
                if not target or target.split(".")[0] not in packages:
                    continue
                for alias in node.names:
                    child = f"{target}.{alias.name}"
                    edges[module].add(child if child in modules else target)
                    if child in modules:
                        aliases[alias.asname or alias.name] = child
                    elif alias.name.startswith("_"):
                        private.append((module, f"{target}.{alias.name}", node.lineno))
            elif isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] in packages:
                        edges[module].add(alias.name)
                        if alias.asname:
                            aliases[alias.asname] = alias.name
        for node in ast.walk(tree):
            if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                    and node.value.id in aliases and node.attr.startswith("_") and not node.attr.startswith("__")):
                private.append((module, f"{aliases[node.value.id]}.{node.attr}", node.lineno))
    for targets in edges.values():
        targets.intersection_update(modules)
    return edges, private


def find_cycle(edges):
    """One import cycle as a list of modules (first == last), or None."""
    state = {}

    def visit(module, stack):
        state[module] = "open"
        stack.append(module)
        for target in sorted(edges[module]):
            if state.get(target) == "open":
                return stack[stack.index(target):] + [target]
            if target not in state:
                found = visit(target, stack)
                if found:
                    return found
        stack.pop()
        state[module] = "done"
        return None

    for module in sorted(edges):
        if module not in state:
            found = visit(module, [])
            if found:
                return found
    return None


def test_the_package_has_no_import_cycle_and_no_private_import():
    edges, private = import_graph(ROOT, PACKAGES)
    assert len(edges) > 60 and "trainers.pipeline" in edges  # the whole package was read
    assert find_cycle(edges) is None, " -> ".join(find_cycle(edges))
    assert private == []


def test_the_checks_find_a_lazy_cycle_and_private_names(tmp_path):
    package = tmp_path / "pkg"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "sub" / "__init__.py").write_text("")
    (package / "a.py").write_text("from pkg.b import helper\n\ndef _hidden():\n    pass\n")
    (package / "b.py").write_text("def helper():\n    from pkg import c\n    return c\n")
    (package / "c.py").write_text("import pkg.a as a\n\nVALUE = a._hidden\n")
    (package / "sub" / "d.py").write_text("from ..a import _hidden\nfrom . import e\n")
    (package / "sub" / "e.py").write_text("X = 1\n")
    edges, private = import_graph(str(tmp_path), ("pkg",))
    assert edges["pkg.sub.d"] == {"pkg.a", "pkg.sub.e"}  # relative imports resolved
    cycle = find_cycle(edges)
    assert cycle is not None and cycle[0] == cycle[-1] and set(cycle) == {"pkg.a", "pkg.b", "pkg.c"}
    assert sorted((m, name) for m, name, _ in private) == [("pkg.c", "pkg.a._hidden"), ("pkg.sub.d", "pkg.a._hidden")]
    (package / "b.py").write_text("def helper():\n    return 1\n")
    assert find_cycle(import_graph(str(tmp_path), ("pkg",))[0]) is None
