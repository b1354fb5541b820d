"""What a run records about the code that made it: the commit, and whether tracked code had changes."""

import subprocess

from lab.provenance import changed_files, git_commit


def test_a_tree_is_dirty_only_for_changes_to_tracked_code_not_to_what_runs_write(tmp_path):
    git = [
        "git",
        "-c",
        "user.name=t",
        "-c",
        "user.email=t@t",
        "-c",
        "commit.gpgsign=false",
        "-C",
        str(tmp_path),
    ]
    for rel in ("lab/a.py", "results/e01/findings.json", "scratch/x.txt", "README.md"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("v1\n")
    subprocess.run([*git, "init", "-q"], check=True)
    subprocess.run([*git, "add", "-A"], check=True)
    subprocess.run([*git, "commit", "-qm", "one"], check=True)
    head = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    (tmp_path / "results/e01/findings.json").write_text("v2\n")  # a run rewrote the published results
    (tmp_path / "scratch/x.txt").write_text("v2\n")
    (tmp_path / "untracked.py").write_text("new\n")  # untracked files are not the committed code's changes
    assert changed_files(tmp_path) == () and git_commit(tmp_path) == head
    changed_files.cache_clear(), git_commit.cache_clear()
    (tmp_path / "lab/a.py").write_text("v2\n")
    assert changed_files(tmp_path) == ("lab/a.py",) and git_commit(tmp_path) == head + "+dirty"
    changed_files.cache_clear(), git_commit.cache_clear()
    assert changed_files(tmp_path / "no-repo-here") is None and git_commit(tmp_path / "no-repo-here") is None
