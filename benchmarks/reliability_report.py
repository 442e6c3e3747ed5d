"""Reliability report: the fault-injection and fuzzing scenarios of tests/test_reliability_*.py,
run many more times than CI does, summarised as one table.

    python benchmarks/reliability_report.py                      # quick: 4 kills, 300 fuzz cases per kind
    python benchmarks/reliability_report.py --kills 50 --fuzz 2000

Columns: runs; survived (the run recovered exactly / the input ended in a skip or a one-line
error); data lost (a checkpoint damaged by the fault, or a resumed run whose weights differ from
an uninterrupted one: must be 0); failures (first example). Scenario code is shared with the
tests (tests/reliability/), not duplicated.
"""

from __future__ import annotations

import argparse
import random
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

from reliability import training as tr  # noqa: E402
from reliability.corrupt import AUDIO_KINDS  # noqa: E402
from reliability.worker import IsolatedChecker  # noqa: E402


@dataclass
class Row:
    scenario: str
    runs: int = 0
    survived: int = 0
    data_lost: int = 0
    failures: list[str] = field(default_factory=list)
    notes: Counter[str] = field(default_factory=Counter)

    def add(self, survived: bool, lost: bool = False, failure: str = "", note: str = "") -> None:
        self.runs += 1
        self.survived += survived
        self.data_lost += lost
        if failure:
            self.failures.append(failure)
        if note:
            self.notes[note] += 1


def kills(rows: list[Row], work: Path, n: int, seed: int, keep: Path | None = None) -> None:
    recipe = tr.write_recipe(work, work / "exp")
    rc, _, err = tr.run_to_end(recipe, "baseline")
    if rc != 0:
        raise SystemExit(f"baseline run failed: {err.strip().splitlines()[-1:]}")
    base = tr.model_of(tr.checkpoints(work / "exp", "baseline") / "last.ckpt")
    by_mode = {"step": Row("SIGKILL at a random step, resume"), "write": Row("SIGKILL mid checkpoint write, resume")}
    for i in range(n):
        mode = "step" if i % 2 == 0 else "write"
        r = tr.kill_and_resume(recipe, work / "exp", base, seed + i, mode)
        note = ""
        if r.resumed_from is not None and r.resumed_from < r.newest_intact:
            note = "resumed from an older checkpoint than the newest intact one"
        if not r.killed:
            note = "run finished before the kill"
        by_mode[mode].add(r.survived, r.data_lost, "" if r.survived else f"{r.kill_point}: {r.detail or r.differing[:3]}", note)
        if keep is not None and not r.survived:  # the evidence: checkpoints, logs, resolved recipe
            shutil.copytree(work / "exp" / f"kill{seed + i}-{mode}", keep / f"kill{seed + i}-{mode}", dirs_exist_ok=True)
        print(f"  kill {i + 1}/{n}: {r.kill_point}: {'ok' if r.survived else 'FAILED'}", file=sys.stderr, flush=True)
    rows += by_mode.values()


def signals(rows: list[Row], work: Path, n: int) -> None:
    recipe = tr.write_recipe(work, work / "exp")
    row = Row("SIGTERM / SIGINT: save and exit")
    for i in range(n):
        sig = signal.SIGTERM if i % 2 == 0 else signal.SIGINT
        name = f"sig{i}"
        rc, out, err = tr.stop_with_signal(recipe, name, sig, after_step=1 + i % 5)
        expected = 143 if sig == signal.SIGTERM else 130
        readable, unreadable, _ = tr.survey(tr.checkpoints(work / "exp", name))
        ok = rc == expected and "Traceback" not in err and "last.ckpt" in readable
        row.add(ok, bool(unreadable), "" if ok else f"{sig.name}: exit {rc}: {err.strip()[-200:]}")
    rows.append(row)


def crashes(rows: list[Row], work: Path, n: int) -> None:
    recipe = tr.write_recipe(work, work / "exp")
    for label, run in (("data worker SIGKILLed", tr.kill_data_worker), ("DDP rank 1 SIGKILLed (2 x gloo)", tr.kill_ddp_rank)):
        row = Row(label)
        for i in range(n):
            name = f"{label.split()[0]}{i}"
            r = run(recipe, name)
            _, unreadable, _ = tr.survey(tr.checkpoints(work / "exp", name))
            ok = not r.hung and r.rc not in (0, None) and not r.survivors
            one_line = r.rc == 2 and len(r.stderr_lines) == 1 and "Traceback" not in r.stderr
            row.add(ok, bool(unreadable), "" if ok else f"rc {r.rc}, hung {r.hung}, survivors {r.survivors}",
                    "one-line error" if one_line else "traceback / multi-line report")
        rows.append(row)


def disk_full(rows: list[Row], work: Path) -> None:
    row = Row("disk full while checkpointing (tmpfs)")
    mount = work / "small"
    why = tr.try_mount_tmpfs(mount, "1600k")
    if why is not None:
        row.notes[f"not run: {why}"] += 1
    else:
        try:
            recipe = tr.write_recipe(work, mount)
            rc, _, err = tr.run_to_end(recipe, "full")
            readable, unreadable, temporary = tr.survey(tr.checkpoints(mount, "full"))
            lines = [line for line in err.splitlines() if line.strip()]
            ok = rc == 2 and len(lines) == 1 and "No space left" in lines[0] and "last.ckpt" in readable and not temporary
            row.add(ok, bool(unreadable) or "last.ckpt" not in readable, "" if ok else err.strip()[-200:])
        finally:
            tr.unmount(mount)
    rows.append(row)


def nonfinite(rows: list[Row], work: Path) -> None:
    recipe = tr.write_recipe(work, work / "exp")
    row = Row("non-finite loss: skip, count, stop")
    rc, out, err = tr.run_to_end(recipe, "nan", "trainer.max_nonfinite_steps=3",
                                 env={"NESTKIT_FAULT_NONFINITE_STEPS": "3,4,6,7,8"})
    readable, unreadable, _ = tr.survey(tr.checkpoints(work / "exp", "nan"))
    ok = rc == 2 and "training diverged" in err and "Traceback" not in err and readable.get("last.ckpt") == 8
    row.add(ok, bool(unreadable), "" if ok else err.strip()[-200:])
    rows.append(row)


def fuzz(rows: list[Row], n: int, seed: int) -> None:
    rng = random.Random(seed)
    from _train_recipe import tiny_recipe

    base = tiny_recipe(Path(tempfile.gettempdir()) / "nestkit-fuzz-exp")
    plans = [(f"corrupt audio, {mode} read", {"check": "audio", "mode": mode}) for mode in ("window", "stream", "whole")]
    plans += [("random manifest lines", {"check": "manifest"}), ("mutated recipes (nestkit validate)", {"check": "recipe", "base": base})]
    with IsolatedChecker() as checker:
        for label, request in plans:
            row = Row(label)
            kinds: Counter[str] = Counter()
            for _ in range(n):
                s = rng.getrandbits(32)
                answer = checker.check({**request, "seed": s})
                ok = "violation" not in answer
                if request["check"] == "audio":
                    kinds[AUDIO_KINDS[s % len(AUDIO_KINDS)] + (" ok" if ok else " FAIL")] += 1
                row.add(ok, False, "" if ok else f"seed {s}: {answer['violation'][:160]}",
                        "" if not ok else answer["outcome"])
            rows.append(row)


def print_table(rows: list[Row]) -> None:
    print("| scenario | runs | survived | data lost | failures (first) | outcomes |")
    print("|---|---:|---:|---:|---|---|")
    for r in rows:
        first = r.failures[0].replace("|", "/") if r.failures else ""
        notes = ", ".join(f"{k}: {v}" for k, v in r.notes.most_common(4))
        print(f"| {r.scenario} | {r.runs} | {r.survived} | {r.data_lost} | {first} | {notes} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=4, help="SIGKILL-and-resume runs (half mid checkpoint write)")
    parser.add_argument("--signals", type=int, default=2, help="SIGTERM/SIGINT runs")
    parser.add_argument("--crashes", type=int, default=1, help="runs of each process-crash scenario (worker, DDP rank)")
    parser.add_argument("--fuzz", type=int, default=300, help="fuzz cases per input kind")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", choices=["faults", "fuzz"], default=None)
    parser.add_argument("--keep-failures", type=Path, default=None,
                        help="copy the experiment folder of every failed kill/resume here")
    args = parser.parse_args()
    rows: list[Row] = []
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="nestkit-reliability-") as tmp:
        work = Path(tmp)
        if args.only != "fuzz":
            (work / "kills").mkdir()
            kills(rows, work / "kills", args.kills, args.seed, args.keep_failures)
            signals(rows, work, args.signals)
            crashes(rows, work, args.crashes)
            disk_full(rows, work)
            nonfinite(rows, work)
        if args.only != "faults":
            fuzz(rows, args.fuzz, args.seed)
    print_table(rows)
    print(f"\n{time.time() - t0:.0f} s; data lost in total: {sum(r.data_lost for r in rows)}")


if __name__ == "__main__":
    main()
