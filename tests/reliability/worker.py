"""Run input checks in a separate, memory-capped process, so that a crash (segfault), a hang
or a runaway allocation in a decoder is recorded as a failed case instead of taking the test
run (or the machine) down.

Protocol: one JSON request per line on stdin (``{"check": ..., "seed": ..., ...}``), one JSON
answer per line on stdout (``{"outcome": ...}`` or ``{"violation": ...}``).
"""

from __future__ import annotations

import json
import os
import resource
import select
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

TESTS = Path(__file__).resolve().parents[1]
MEMORY_CAP = 6 * 2**30  # address space of the worker: far above a tiny decode, far below the machine


def _serve() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_CAP, MEMORY_CAP))
    from reliability.checks import Violation, check_audio, check_manifest, check_recipe
    from reliability.corrupt import audio_case

    folder = Path(tempfile.mkdtemp(prefix="nestkit-fuzz-"))
    out = sys.stdout
    sys.stdout = sys.stderr  # anything printed by the code under test must not corrupt the protocol
    for line in sys.stdin:
        req = json.loads(line)
        try:
            if req["check"] == "audio":
                outcome = check_audio(audio_case(req["seed"]), folder, req["mode"], req["seed"])
            elif req["check"] == "manifest":
                outcome = check_manifest(req["seed"], folder, req.get("huge_ints", True))
            else:
                outcome = check_recipe(req["base"], req["seed"], folder)
            answer: dict[str, Any] = {"outcome": outcome}
        except Violation as v:
            answer = {"violation": str(v)}
        out.write(json.dumps(answer) + "\n")
        out.flush()


class IsolatedChecker:
    """A worker process answering check requests; restarted after a crash or a hang."""

    def __init__(self, timeout_s: float = 60.0) -> None:
        self.timeout_s = timeout_s
        self.proc: Any = None  # a subprocess.Popen, or a tests/_zygote.py Child with the same parts

    def _start(self) -> Any:
        """``python -m reliability.worker``, forked from the test zygote (tests/_zygote.py) with pipes
        for its stdin and stdout, or a new interpreter under NESTKIT_TEST_FRESH=1."""
        from conftest import FRESH_PROCESSES, ZYGOTE

        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]),
               "OMP_NUM_THREADS": "1"}
        if FRESH_PROCESSES:
            return subprocess.Popen(
                [sys.executable, "-m", "reliability.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL, text=True, env=env, cwd=TESTS,
            )
        return ZYGOTE.popen(["python", "-m", "reliability.worker"], env, TESTS, stdin=True, stdout=True)

    def check(self, request: dict[str, Any]) -> dict[str, Any]:
        """``{"outcome": ...}`` or ``{"violation": ...}`` (a crash or a hang is a violation)."""
        if self.proc is None or self.proc.poll() is not None:
            self.proc = self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps(request) + "\n")
        self.proc.stdin.flush()
        ready, _, _ = select.select([self.proc.stdout], [], [], self.timeout_s)
        line = self.proc.stdout.readline() if ready else ""
        if line:
            return json.loads(line)
        self.close()
        what = {k: v for k, v in request.items() if k != "base"}
        return {"violation": f"worker {'hung' if not ready else 'crashed'} on {what}"}

    def close(self) -> None:
        if self.proc is not None:
            if self.proc.poll() is None:
                self.proc.kill()
            self.proc.wait(timeout=30)
            for stream in (self.proc.stdin, self.proc.stdout):
                try:
                    stream.close()
                except OSError:  # a request still buffered for a worker that died
                    pass
            self.proc = None

    def __enter__(self) -> IsolatedChecker:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


if __name__ == "__main__":
    _serve()
