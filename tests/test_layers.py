"""Layers run one way: config/math/model/data < evaluate/inference < train < tune (< pipelines).

Every `import` in `ssd_ray/`, at module level or inside a function, is read from the source and
checked against the layer table, so a lazy import cannot hide a cycle.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ssd_ray"

# Layer of each top-level part of the package; a module may import its own layer or lower ones.
LAYERS = {
    "config": 0, "priors": 0, "boxes": 0, "loss": 0, "postprocess": 0, "model": 0, "data": 0,
    "checkpoint": 0, "runtime": 0, "cli": 0, "provenance": 0, "spot": 0, "storage": 0,
    "errors": 0, "ray_console": 0,
    "evaluate": 1, "inference": 1, "predict": 1, "export": 1, "export_detect": 1, "convert": 1, "mlflow_model": 1, "mlflow_model_code": 1,
    "train": 2,
    "tune": 3,
}


def _part(module: str) -> str | None:
    """`ssd_ray.train.loop` -> "train"; None outside the package or for the package root."""
    parts = module.split(".")
    return parts[1] if parts[0] == "ssd_ray" and len(parts) > 1 else None


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in the file, relative ones resolved."""
    module = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    out = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            names = [f"{base}.{a.name}" for a in node.names] if base in ("ssd_ray",) else [base]
            out += [(node.lineno, n) for n in names]
    return out


def test_every_part_of_the_package_has_a_layer():
    parts = {p.stem if p.is_file() else p.name for p in PACKAGE.iterdir()
             if (p.suffix == ".py" and p.stem != "__init__") or (p.is_dir() and (p / "__init__.py").exists())}
    assert parts == set(LAYERS), f"add new parts to LAYERS: {sorted(parts ^ set(LAYERS))}"


def test_no_module_imports_a_higher_layer():
    violations = []
    for path in sorted(PACKAGE.rglob("*.py")):
        own = _part(".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts))
        if own not in LAYERS:
            continue  # ssd_ray/__init__.py re-exports lazily; unknown parts fail the test above
        for line, target in _imports(path):
            other = _part(target)
            if other is not None and other in LAYERS and LAYERS[other] > LAYERS[own]:
                violations.append(f"{path.relative_to(PACKAGE.parent)}:{line} ({own}) imports {target} ({other})")
    assert not violations, "\n".join(violations)


def test_the_checker_sees_imports_inside_functions(tmp_path):
    # A stand-in module under ssd_ray/evaluate with a lazy import of the train layer is caught.
    fake = PACKAGE / "evaluate" / "_layer_probe_tmp.py"
    fake.write_text("def f():\n    from ..train.launch import run_training\n")
    try:
        assert (2, "ssd_ray.train.launch") in _imports(fake)
    finally:
        fake.unlink()
