"""The shape of src/kdkit (issue 21): no import cycle among its modules, read from the code's own
imports (nothing is executed). An import inside a function counts too: a cycle hidden in a
function body still ties two rooms together."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "kdkit"


def modules(root: Path = SRC) -> dict[str, Path]:
    """'kdkit.data.loader' -> its file; a package is its __init__.py."""
    found = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root.parent).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def imports(path: Path, known: dict) -> set[str]:
    """The kdkit modules `path` imports: `from kdkit.a import b` is kdkit.a.b when that is a module,
    else kdkit.a; `import kdkit.a` is kdkit.a."""
    targets = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "kdkit":
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                targets.add(name if name in known else node.module)
        elif isinstance(node, ast.Import):
            targets.update(a.name for a in node.names if a.name.split(".")[0] == "kdkit")
    return {t for t in targets if t in known}


def graph(root: Path = SRC) -> dict[str, set[str]]:
    """Module -> the modules it imports. A package's __init__ that only hands names on stands for
    the modules it imports (importing `kdkit.data` for BatchLoader is importing kdkit.data.loader)."""
    known = modules(root)
    edges = {name: imports(path, known) - {name} for name, path in known.items()}
    faces = {name for name, path in known.items() if path.name == "__init__.py" and only_hands_names_on(path)}

    def through(target, seen=()):
        if target not in faces:
            return {target}
        return set().union(*[through(t, seen + (target,)) for t in edges[target] if t not in seen])

    return {name: set().union(*[through(t) for t in targets]) - {name}
            for name, targets in edges.items() if name not in faces}


def only_hands_names_on(init: Path) -> bool:
    """An __init__.py whose code is imports, __all__ and a docstring (it defines nothing itself)."""
    body = ast.parse(init.read_text()).body
    return all(isinstance(node, (ast.Import, ast.ImportFrom, ast.Expr))
               or (isinstance(node, ast.Assign) and [t.id for t in node.targets if isinstance(t, ast.Name)] == ["__all__"])
               for node in body)


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Every cycle found by a depth-first walk (each reported once, from where it was entered)."""
    found, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        stack.append(node)
        for target in sorted(edges.get(node, ())):
            if state.get(target) == "open":
                found.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target, stack)
        stack.pop()
        state[node] = "done"

    for node in sorted(edges):
        if node not in state:
            visit(node, [])
    return found


def test_no_import_cycle():
    assert cycles(graph()) == []


def test_the_check_finds_a_cycle(tmp_path):
    """A check that cannot fail is no check: two modules importing each other (one inside a function)."""
    package = tmp_path / "kdkit"
    (package / "sub").mkdir(parents=True)
    (package / "__init__.py").write_text("from kdkit.a import thing\n")
    (package / "a.py").write_text("from kdkit.sub import helper\n\nthing = 1\n")
    (package / "sub" / "__init__.py").write_text("from kdkit.sub.b import helper\n")
    (package / "sub" / "b.py").write_text("def helper():\n    from kdkit.a import thing\n    return thing\n")
    assert cycles(graph(package)) == [["kdkit.a", "kdkit.sub.b", "kdkit.a"]]
