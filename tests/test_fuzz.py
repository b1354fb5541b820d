"""scripts/fuzz.py --quick: a few hostile inputs of each kind (CLI, tokenizer files, dashboard API) and the
cheap fault tests; every one must be a clean error (no traceback, hang, partial files or wrong result)."""

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "fuzz.py"


def test_quick_fuzz_is_all_clean(capsys):
    spec = importlib.util.spec_from_file_location("lab_fuzz", SCRIPT)
    fuzz = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = fuzz  # its dataclass looks its module up there
    spec.loader.exec_module(fuzz)
    rc = fuzz.main(["--quick"])
    out = capsys.readouterr().out
    bad = [r for r in fuzz.RESULTS if r.outcome != "clean"]
    assert not bad, out
    assert rc == 0 and len(fuzz.RESULTS) >= 40
    assert {r.area for r in fuzz.RESULTS} == set(fuzz.AREAS)
