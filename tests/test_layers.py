"""The house rules of DESIGN.md's layers, checked on the source: a lower layer never imports a higher one."""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
# each package may import only itself and the packages listed (plus the standard library and third parties)
ALLOWED = {
    "lab.ops": set(),
    "lab.tokenizer": {"lab.errors"},
    "lab.model": {"lab.ops", "lab.config", "lab.errors"},
    "lab.data": {"lab.config", "lab.errors", "lab.fileio", "lab.tokenizer"},
    "lab.train": {
        "lab.ops",
        "lab.model",
        "lab.data",
        "lab.config",
        "lab.errors",
        "lab.fileio",
        "lab.provenance",
    },
    "lab.infer": {
        "lab.ops",
        "lab.model",
        "lab.tokenizer",
        "lab.data",
        "lab.train",
        "lab.config",
        "lab.errors",
        "lab.fileio",
    },
    "lab.analysis": {"lab.train", "lab.errors", "lab.fileio"},
    "lab.viz": {"lab.analysis", "lab.fileio", "lab.tokenizer"},
}


def imports(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            out |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "lab":  # from lab import ops, config as config_lib
                out |= {f"lab.{a.name}" for a in node.names}
            else:
                out.add(node.module)
    return out


@pytest.mark.parametrize("package", sorted(ALLOWED))
def test_layer_imports(package):
    folder = ROOT / package.replace(".", "/")
    for path in sorted(folder.glob("*.py")):
        for name in imports(path):
            if not name.startswith(("lab", "experiments")):
                continue
            top = ".".join(name.split(".")[:2])
            assert name.startswith(package) or top in ALLOWED[package], (
                f"{path.relative_to(ROOT)} imports {name}"
            )


def test_lab_never_imports_an_experiment_by_name():
    for path in (ROOT / "lab").rglob("*.py"):
        named = {n for n in imports(path) if n.startswith("experiments.")}
        assert not named, f"{path.relative_to(ROOT)} imports {named}"


def test_corpora_and_tokenizers_import_no_jax():
    paths = [ROOT / "lab" / "data" / n for n in ("corpora.py", "tokenize.py", "pipeline.py")]
    for path in paths + sorted((ROOT / "lab" / "tokenizer").glob("*.py")):
        mods = imports(path)
        assert not any(m == "jax" or m.startswith(("jax.", "flax", "optax")) for m in mods), path.name
