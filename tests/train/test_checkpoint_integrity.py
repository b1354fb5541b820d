"""Checkpoint integrity: a damaged newest checkpoint is passed over for the newest intact one (with the
metrics cut back to it, said in one line), none intact is a one-line error, and a save that fails (a full
disk) leaves no temporary directory behind."""

import errno
import os
import shutil

import jax
import jax.numpy as jnp
import pytest

from lab.errors import CheckpointError
from lab.train import SweepSpec, members_grid, train_sweep
from lab.train import checkpoint as ckpt
from lab.train.loop import latest_state


def _truncate_data(step_dir):
    """Cut every array data file of a checkpoint in half. Not just the largest: Orbax's OCDBT store may
    leave a data file no longer referenced (its contents rewritten elsewhere), and a checkpoint whose only
    damage is in such a file still restores correctly, so damaging one file alone does not always damage
    the checkpoint."""
    files = [p for p in step_dir.rglob("*") if p.is_file() and p.parent.name == "d"]
    assert files, f"no data files under {step_dir}"
    for p in files:
        os.truncate(p, p.stat().st_size // 2)


def _lines(err):
    return [line for line in err.splitlines() if line.strip()]


# A failed restore's late reads used to print dozens of "Event loop is closed" tracebacks (unraisable).
@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_a_damaged_newest_checkpoint_falls_back_to_the_newest_intact_one(tmp_path, tiny, capsys):
    cfg, tcfg, task = tiny
    members = members_grid([0, 1], [3e-3])
    spec = SweepSpec(cfg, tcfg, task, members)
    run, ckdir = tmp_path / "run", tmp_path / "run" / "checkpoints"
    train_sweep(run, spec, progress=False)
    assert all((ckdir / s / ckpt.MANIFEST).is_file() for s in ("10", "20"))  # sealed after each save
    full = (run / "metrics.jsonl").read_bytes()

    # Without its manifest (a kill right after the save), damage is found by trying to restore it.
    (ckdir / "20" / ckpt.MANIFEST).unlink()
    _truncate_data(ckdir / "20")
    capsys.readouterr()
    step, _ = latest_state(run, cfg, tcfg, members)  # what the dashboard and `run`'s measurements read
    (line,) = _lines(capsys.readouterr().err)
    assert step == 10 and "damaged (step 20: does not restore" in line and "using step 10 instead" in line
    why = line.split("does not restore: ")[1].split("); using step")[0]  # TensorStore's chain, shortened
    assert "tensorstore_spec" not in why and len(why) <= 240 and " ... " in why, why

    # Resuming: restored from step 10, metrics cut back to it, retrained to the same bytes.
    r = train_sweep(run, spec, progress=False)
    (line,) = _lines(capsys.readouterr().err)
    assert "using step 10 instead, metrics.jsonl cut back to step 10" in line
    assert r.resumed_from == 10 and (run / "metrics.jsonl").read_bytes() == full
    assert sorted(os.listdir(ckdir)) == ["10", "20"] and (ckdir / "20" / ckpt.MANIFEST).is_file()

    # With manifests, damage is found from the files' sha256; none intact is a one-line error.
    _truncate_data(ckdir / "20")
    _truncate_data(ckdir / "10")
    with pytest.raises(CheckpointError) as e:
        train_sweep(run, spec, progress=False)
    msg = str(e.value)
    assert "\n" not in msg and "no checkpoint in" in msg and "can be restored" in msg
    assert "step 20: default/" in msg and "step 10: default/" in msg and "sha256 differs" in msg
    assert (run / "metrics.jsonl").read_bytes() == full  # nothing written or lost
    with pytest.raises(CheckpointError, match="no checkpoint in .* can be restored"):
        latest_state(run, cfg, tcfg, members)


def test_a_long_chained_message_keeps_its_start_and_its_cause_without_spec_dumps():
    chain = "OUT_OF_RANGE: " + "".join(f'Error opening "layer{i}" driver: ' for i in range(12))
    e = ValueError(
        chain + "Requested byte range [0, 6761) is not valid [tensorstore_spec='{\"a\": 1}']. See full"
    )
    short = ckpt._first_line(e)
    assert len(short) <= 240 and short.startswith("OUT_OF_RANGE: Error opening") and " ... " in short
    assert short.endswith("Requested byte range [0, 6761) is not valid")  # the cause, spec dump dropped
    head, tail = short.split(" ... ")
    assert chain.startswith(head + " ") and (" " + tail) in e.args[0]  # each side cut at a space
    assert ckpt._first_line(ValueError("short\nsecond line")) == "short"
    assert (
        ckpt._first_line(ValueError("x" * 300), width=21) == "xxxxxxxx ... xxxxxxxx"
    )  # no space: cut anyway
    assert ckpt._first_line(ValueError("aaa bbb ccc ddd eee fff"), width=19) == "aaa bbb ... eee fff"
    assert ckpt._first_line(ValueError("")) == "ValueError"


def test_a_failed_save_removes_orbax_temporary_directory_and_says_so_in_one_line(tmp_path, monkeypatch):
    mngr = ckpt.manager(tmp_path / "ck")
    state = {"w": jnp.arange(4.0)}
    mngr.save(10, state)
    mngr.finish()

    def full_disk(step, args=None):  # what Orbax does when the disk fills: a temporary dir, then OSError
        (mngr.directory / f"{step}{ckpt.TMP_MARK}-1700000000").mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(mngr._mngr, "save", full_disk)
    with pytest.raises(CheckpointError) as e:
        mngr.save(20, state)
    msg = str(e.value)
    assert "\n" not in msg and "saving checkpoint step 20" in msg and "No space left on device" in msg
    assert "temporary files were removed" in msg and "resume from step 10" in msg
    assert sorted(os.listdir(mngr.directory)) == ["10"]
    monkeypatch.undo()

    # The same failure surfacing from the background write (Orbax wraps it), while waiting for it.
    def failed_wait():
        (mngr.directory / f"30{ckpt.TMP_MARK}-1700000001").mkdir()
        try:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError as inner:
            raise RuntimeError("async save failed") from inner

    monkeypatch.setattr(mngr._mngr, "wait_until_finished", failed_wait)
    with pytest.raises(CheckpointError, match="No space left on device"):
        mngr.finish()
    assert sorted(os.listdir(mngr.directory)) == ["10"]
    monkeypatch.undo()
    mngr.close()
    shutil.rmtree(tmp_path / "ck")
    (tmp_path / "ck").write_text("a file where the checkpoint directory goes")  # refused before any save
    with pytest.raises(CheckpointError, match=r"ck is not a directory, and checkpoints are written there"):
        ckpt.manager(tmp_path / "ck")


def test_a_damaged_metadata_file_is_said_in_one_line_without_orbax_echoes(tmp_path, capsys, caplog):
    mngr, state = ckpt.manager(tmp_path / "ck"), {"w": jnp.arange(4.0)}
    mngr.save(10, state)
    mngr.save(20, state)
    mngr.close()
    meta = tmp_path / "ck" / "20" / "_CHECKPOINT_METADATA"
    meta.write_text(meta.read_text()[:10])  # cut short, as a full disk or a bad copy leaves it
    capsys.readouterr()
    with caplog.at_level("ERROR"):
        step, _ = ckpt.restore_latest(tmp_path / "ck", jax.eval_shape(lambda: state))
    (line,) = _lines(capsys.readouterr().err)
    assert step == 10 and "step 20: _CHECKPOINT_METADATA has changed since it was saved" in line
    assert not [r for r in caplog.records if "Metadata file" in r.getMessage()]  # Orbax's own echo, dropped
