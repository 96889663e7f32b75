"""The processes a test started: members of the sessions it created, processes whose command line names
one of its own directories, and their descendants. Never every process on the machine."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path


def _table() -> dict[int, tuple[int, int, str]]:
    """pid -> (parent pid, session id, command line) for every process this user can read."""
    out: dict[int, tuple[int, int, str]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
        except OSError:  # it ended while we looked
            continue
        # the command name in parentheses may hold spaces: the fields after the last ')' are fixed
        fields = stat[stat.rindex(")") + 2 :].split()
        out[int(entry.name)] = (int(fields[1]), int(fields[3]), cmdline)
    return out


def _with_descendants(table: dict[int, tuple[int, int, str]], roots: Iterable[int]) -> set[int]:
    """`roots` and every process below them in `table`."""
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    todo = list(roots)
    while todo:
        pid = todo.pop()
        if pid not in out:
            out.add(pid)
            todo.extend(children.get(pid, []))
    return out


def own_processes(markers: Iterable[str | Path] = (), sessions: Iterable[int] = ()) -> list[str]:
    """Live processes that this test started: members of `sessions` (the sessions it created), processes
    whose command line contains one of `markers` (directories it created), and their descendants."""
    table = _table()
    marks = [str(m) for m in markers]
    sids = set(sessions)
    roots = [pid for pid, (_, sid, cmd) in table.items() if sid in sids or any(m in cmd for m in marks)]
    mine = _with_descendants(table, roots)
    mine.discard(os.getpid())
    # a zombie has an empty command line and is already gone in every sense that matters here
    return sorted(f"{pid} {table[pid][2]}" for pid in mine if table[pid][2])


def sessions_under(pids: Iterable[int]) -> set[int]:
    """The session ids of `pids` and of all their live descendants (children that called setsid)."""
    table = _table()
    return {table[pid][1] for pid in _with_descendants(table, [p for p in pids if p in table])}
