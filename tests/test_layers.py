"""The house rules of DESIGN.md's layers, checked on the source: a lower layer never imports a higher one.

LAYERS is DESIGN.md's picture, nothing more: each unit of `lab` (a package or a top-level module) may import
itself, the units listed, the standard library and third parties. Every unit of `lab` must be listed, so a
new one cannot slip past the rules.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BASE = {"lab.errors", "lab.config", "lab.fileio"}  # the foundations every layer may use
LAYERS = {
    "lab.errors": set(),
    "lab.fileio": set(),
    "lab.config": {"lab.errors"},
    "lab.provenance": set(),
    "lab.progress": set(),
    "lab.runtime": {"lab.errors", "lab.fileio"},
    "lab.ops": set(),
    "lab.tokenizer": {"lab.errors"},
    "lab.model": {"lab.ops", "lab.config", "lab.errors"},
    "lab.data": BASE | {"lab.tokenizer"},
    "lab.runs": BASE | {"lab.provenance"},
    "lab.train": BASE
    | {"lab.ops", "lab.model", "lab.data", "lab.runs", "lab.provenance", "lab.progress", "lab.runtime"},
    "lab.infer": BASE | {"lab.ops", "lab.model", "lab.tokenizer", "lab.data", "lab.runs", "lab.train"},
    # alignment (finetuning, reward models, PPO, DPO) sits beside inference, above training
    "lab.align": BASE | {"lab.ops", "lab.model", "lab.data", "lab.train", "lab.infer"},
    # quantization: PTQ, GPTQ, QAT (a forward hook of the training driver), export; beside lab.infer
    "lab.quant": BASE | {"lab.ops", "lab.model"},
    # the model in other stacks (NumPy float64, PyTorch, ONNX Runtime, StableHLO through lab.quant.export);
    # torch / onnx / onnxruntime are imported only inside lab.port's own modules (the optional [stacks] extra)
    "lab.port": BASE | {"lab.ops", "lab.model", "lab.quant"},
    "lab.analysis": BASE | {"lab.runs"},
    "lab.viz": BASE | {"lab.tokenizer"},
    "lab.report": BASE | {"lab.analysis", "lab.runs"},  # refuses findings of unfinished runs
    "lab.experiment": BASE | {"lab.analysis", "lab.runs", "lab.runtime"},  # runtime: multi-process sync
    "lab.compare": BASE | {"lab.analysis", "lab.report", "lab.runs"},  # two trees' findings side by side
    "lab.cli": {"lab"},  # the top: may use every unit of lab (and hands `experiments` to the registry)
}
NO_JAX = (
    "lab.tokenizer",
    "lab.progress",
    "lab.runs",
    "lab.analysis",
    "lab.viz",
    "lab.report",
    "lab.experiment",
    "lab.compare",
)
NO_JAX_FILES = ("lab/data/corpora.py", "lab/data/tokenize.py", "lab/data/pipeline.py")


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


def unit_of(path: Path) -> str:
    rel = path.relative_to(ROOT / "lab")
    return "lab." + (rel.parts[0] if len(rel.parts) > 1 else rel.stem)


def lab_files():
    return [
        p for p in sorted((ROOT / "lab").rglob("*.py")) if p.name != "__init__.py" or p.parent != ROOT / "lab"
    ]


def test_every_unit_of_lab_has_a_layer():
    units = {unit_of(p) for p in lab_files()}
    assert units <= set(LAYERS), f"not in DESIGN's layers: {sorted(units - set(LAYERS))}"


@pytest.mark.parametrize("unit", sorted(LAYERS))
def test_layer_imports(unit):
    allowed = LAYERS[unit]
    for path in lab_files():
        if unit_of(path) != unit:
            continue
        for name in imports(path):
            if name == "experiments" and unit == "lab.cli":
                continue  # the CLI hands the package to the registry
            if not name.startswith(("lab", "experiments")):
                continue
            target = ".".join(name.split(".")[:2])
            ok = target == unit or "lab" in allowed or target in allowed
            assert ok, f"{path.relative_to(ROOT)} ({unit}) imports {name}"


def test_lab_never_imports_an_experiment_and_experiments_never_import_each_other():
    for path in (ROOT / "lab").rglob("*.py"):
        named = {n for n in imports(path) if n.startswith("experiments.")}
        assert not named, f"{path.relative_to(ROOT)} imports {named}"
    for path in (ROOT / "experiments").glob("e*.py"):
        named = {n for n in imports(path) if n.startswith("experiments")}
        assert not named, f"{path.relative_to(ROOT)} imports {named}"


@pytest.mark.parametrize("unit", NO_JAX)
def test_analysis_side_imports_no_jax(unit):
    paths = [p for p in lab_files() if unit_of(p) == unit]
    paths += [ROOT / f for f in NO_JAX_FILES]
    for path in paths:
        mods = imports(path)
        assert not any(m == "jax" or m.startswith(("jax.", "flax", "optax", "orbax")) for m in mods), (
            path.name
        )


def test_inference_never_trains():
    trainers = {"train_sweep", "train_step", "train_steps", "SweepRunner", "make_optimizer"}
    for path in (ROOT / "lab" / "infer").glob("*.py"):
        tree = ast.parse(path.read_text())
        used = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
        used |= {a.name for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) for a in n.names}
        assert not used & trainers, f"{path.relative_to(ROOT)} uses {used & trainers}"
