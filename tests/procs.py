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


def own_processes(markers: Iterable[str | Path] = (), sessions: Iterable[int] = ()) -> list[str]:
    """Live processes that this test started: members of `sessions` (the sessions it created), processes
    whose command line contains one of `markers` (directories it created), and their descendants."""
    table = _table()
    marks = [str(m) for m in markers]
    sids = set(sessions)
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    todo = [pid for pid, (_, sid, cmd) in table.items() if sid in sids or any(m in cmd for m in marks)]
    mine: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid not in mine:
            mine.add(pid)
            todo.extend(children.get(pid, []))
    mine.discard(os.getpid())
    # a zombie has an empty command line and is already gone in every sense that matters here
    return sorted(f"{pid} {table[pid][2]}" for pid in mine if table[pid][2])


def sessions_under(pids: Iterable[int]) -> set[int]:
    """The session ids of `pids` and of all their live descendants (children that called setsid)."""
    table = _table()
    children: dict[int, list[int]] = {}
    for pid, (ppid, _, _) in table.items():
        children.setdefault(ppid, []).append(pid)
    out: set[int] = set()
    todo = [p for p in pids if p in table]
    seen: set[int] = set()
    while todo:
        pid = todo.pop()
        if pid in seen:
            continue
        seen.add(pid)
        out.add(table[pid][1])
        todo.extend(children.get(pid, []))
    return out
