"""complai.files, the one writer of user-named outputs: every combination of what is at the path, where
it points and --force either writes a private file or refuses and leaves the file system as it was."""

from __future__ import annotations

import errno
import itertools
import os
import stat
from pathlib import Path

import pytest

from complai.errors import InvalidInput
from complai.files import atomic_output, remove_stale_partials, staged_output_dir, write_private

STATES = ["missing", "file", "link-to-file", "dangling-link", "directory"]
PLACES = ["plain", "protected", "linked-parent-to-protected"]


def snapshot(root: Path) -> dict[str, tuple[str, bytes | str]]:
    out: dict[str, tuple[str, bytes | str]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            p = Path(dirpath) / name
            rel = str(p.relative_to(root))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir", b"")
            else:
                out[rel] = ("file", p.read_bytes())
    return out


@pytest.mark.parametrize(("state", "place", "force"), list(itertools.product(STATES, PLACES, [False, True])))
def test_every_case_writes_privately_or_refuses_and_changes_nothing(
    tmp_path: Path, state: str, place: str, force: bool
) -> None:
    keys = tmp_path / "ws" / "keys"
    keys.mkdir(parents=True)
    (keys / "kek.json").write_bytes(b"the key")
    victim = tmp_path / "victim"
    victim.write_bytes(b"keep me")
    parent = {"plain": tmp_path / "out", "protected": keys, "linked-parent-to-protected": tmp_path / "innocent"}[place]
    if place == "plain":
        parent.mkdir()
    elif place == "linked-parent-to-protected":
        parent.symlink_to(keys, target_is_directory=True)
    target = parent / "result"
    if state == "file":
        target.write_bytes(b"old")
    elif state == "link-to-file":
        target.symlink_to(victim)
    elif state == "dangling-link":
        target.symlink_to(tmp_path / "nowhere")
    elif state == "directory":
        target.mkdir()
    before = snapshot(tmp_path)
    allowed = place == "plain" and (state == "missing" or (state == "file" and force))
    if allowed:
        write_private(target, b"new", force=force, forbidden=[keys])
        assert target.read_bytes() == b"new" and not target.is_symlink()
        assert stat.S_IMODE(target.stat().st_mode) == 0o600
        assert victim.read_bytes() == b"keep me"
    else:
        with pytest.raises(InvalidInput):
            write_private(target, b"new", force=force, forbidden=[keys])
        assert snapshot(tmp_path) == before
    assert not [p for p in tmp_path.rglob("*") if "complai-partial" in p.name]


def test_missing_parent_is_refused(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="does not exist"):
        write_private(tmp_path / "no" / "such" / "file", b"x")
    assert list(tmp_path.iterdir()) == []


def test_a_failed_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_output(tmp_path / "out") as fh:
        fh.write(b"half")
        raise RuntimeError("the producer failed")
    assert list(tmp_path.iterdir()) == []

    def full(*_a: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with pytest.raises(InvalidInput, match="No space left"), atomic_output(tmp_path / "out") as fh:
        fh.write = full  # type: ignore[method-assign]
        fh.write(b"x")
    assert list(tmp_path.iterdir()) == []


def test_partials_of_dead_processes_are_removed_and_live_ones_kept(tmp_path: Path) -> None:
    dead = tmp_path / ".b.bak.complai-partial.999999999.abcd"  # no such pid
    mine = tmp_path / f".c.complai-partial.{os.getpid()}.abcd"
    other = tmp_path / ".d.complai-partial.notapid.abcd"
    for p in (dead, mine, other):
        p.write_bytes(b"x")
    (tmp_path / ".e.complai-partial.999999998.dir").mkdir()
    assert remove_stale_partials(tmp_path) == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([mine.name, other.name])


def test_staged_folder_appears_only_when_complete(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), staged_output_dir(tmp_path / "export") as d:
        (d / "a").write_text("x")
        raise RuntimeError("failed half way")
    assert list(tmp_path.iterdir()) == []
    with staged_output_dir(tmp_path / "export") as d:
        (d / "a").write_text("x")
    assert (tmp_path / "export" / "a").read_text() == "x"
    assert stat.S_IMODE((tmp_path / "export").stat().st_mode) == 0o700
    with pytest.raises(InvalidInput, match="not empty"), staged_output_dir(tmp_path / "export"):
        pass
    (tmp_path / "file").write_text("keep")
    with pytest.raises(InvalidInput, match="not a directory"), staged_output_dir(tmp_path / "file"):
        pass
    assert (tmp_path / "file").read_text() == "keep"


def test_a_folder_where_no_folder_can_be_made_is_a_refusal() -> None:
    from complai.errors import InvalidInput
    from complai.files import staged_output_dir

    with pytest.raises(InvalidInput, match="cannot create /proc/complai-x"), staged_output_dir("/proc/complai-x"):
        pass
