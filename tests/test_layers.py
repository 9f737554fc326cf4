"""The package tree is the architecture: imports point from higher layers to lower ones only.

core < training, evaluation < paper, perf, publish, integrations < commands < cli. training and evaluation are independent
of each other. Function-level (lazy) imports count too.
"""

import ast
from pathlib import Path

import harness

ROOT = Path(harness.__file__).parent
LAYER = {"core": 0, "training": 1, "evaluation": 1, "paper": 2, "perf": 2, "publish": 2, "integrations": 2, "view": 3,
         "commands": 4, "cli": 5, "__main__": 6}


def _package(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[0] == "harness" else None


def _imports(path: Path):
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.lineno, node.module
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield node.lineno, alias.name


def test_imports_point_down_the_layers():
    wrong = []
    for path in sorted(ROOT.rglob("*.py")):
        rel = path.relative_to(ROOT)
        own = rel.parts[0].removesuffix(".py")
        if own == "__init__":
            continue
        assert own in LAYER, f"{rel}: a module outside the layers; add its package to LAYER"
        for line, module in _imports(path):
            other = _package(module)
            if other is None or other == own or other == "__init__":
                continue
            if LAYER[other] > LAYER[own] or (LAYER[other] == LAYER[own] and other != own):
                wrong.append(f"{rel}:{line} imports {module}")
    assert not wrong, "imports against the layers:\n" + "\n".join(wrong)
