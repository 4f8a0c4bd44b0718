"""Every shell command in README.md and docs/ runs as written, against a served model, or says why it cannot here.

The commands are read from the fenced `bash`/`sh` blocks. Those that run without Docker run in bash (with
`pipefail`) against `modellens serve` on a free port, the README's `localhost:8000` rewritten to it and the
runbooks' `URL` to a real Prometheus scraping that service. A command whose first word is neither runnable nor in
`NOT_RUN` fails the test, so a new kind of command in the docs needs a decision here. This is what catches a
Quickstart that crashes (`loadgen --schedule default` once did, on a missing argument).
"""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.ports import free_port
from tests.support.prometheus import PrometheusServer
from tests.test_serving import serve

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").rglob("*.md"))]
_FENCE = re.compile(r"^```(bash|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)

RUNNABLE = ("curl", "modellens", ".venv/bin/modellens")
NOT_RUN = {  # first word → why a test does not run it here
    "make": "`make run` is what the served model stands for; `make test`/`test-fast`/`lint` are this suite; "
    "`make up`/`smoke`/`down` need a Docker engine",
    "cp": "it would edit the user's .env.local (the compose stack's secrets)",
    "echo": "it would edit the user's .env.local (the compose stack's secrets)",
    "openssl": "it writes the user's own tokens file under secrets/ (and chgrp needs root); "
    "tests/test_stack_config.py checks what the stack does with one",
    "open": "it opens a browser on Grafana, part of the compose stack",
    "docker": "needs a Docker engine",
    "kubectl": "needs a Kubernetes cluster; tests/test_kubernetes.py renders and validates the manifests offline",
    "wrk": "a benchmark client; `make bench` runs it (tests/test_bench.py runs the harness)",
}
# A schedule or a benchmark runs for minutes: these run for this long and must still be running, without a
# traceback, when stopped (a crash shows in the first second).
_LONG_RUNNING = ("--schedule",)
_LONG_RUN_SECONDS = 8.0


@dataclass(frozen=True)
class Command:
    path: Path
    line: int
    text: str

    @property
    def first_word(self) -> str:
        return shlex.split(self.text, comments=True)[0]

    def __str__(self) -> str:
        return f"{self.path.relative_to(REPO)}:{self.line}"


def commands() -> list[Command]:
    """The commands of every fenced shell block, continuation lines and multi-line quotes joined."""
    found: list[Command] = []
    for path in DOCS:
        text = path.read_text(encoding="utf-8")
        for block in _FENCE.finditer(text):
            first_line = text.count("\n", 0, block.start(2)) + 1
            pending: list[str] = []
            for offset, line in enumerate(block.group(2).splitlines()):
                if not pending and (not line.strip() or line.lstrip().startswith("#")):
                    continue
                pending.append(line)
                joined = "\n".join(pending)
                if joined.rstrip().endswith("\\") or not _balanced(joined):
                    continue
                found.append(Command(path, first_line + offset - len(pending) + 1, joined))
                pending = []
            assert not pending, f"{path.name}: unterminated command {pending}"
    return found


def _balanced(text: str) -> bool:
    try:
        shlex.split(text, comments=True)
    except ValueError:  # an open quote: the command goes on on the next line
        return False
    return True


COMMANDS = commands()


def _distinct(found: list[Command]) -> list[Command]:
    """The runnable commands, each text once, under its first place (the runbooks share their triage line)."""
    seen: set[str] = set()
    distinct: list[Command] = []
    for command in found:
        if command.first_word in RUNNABLE and command.text not in seen:
            seen.add(command.text)
            distinct.append(command)
    return distinct


TO_RUN = _distinct(COMMANDS)


class TestTheList:
    def test_every_command_runs_or_says_why_not(self) -> None:
        undecided = [f"{c}: {c.first_word}" for c in COMMANDS if c.first_word not in (*RUNNABLE, *NOT_RUN)]
        assert not undecided, f"add these to RUNNABLE or NOT_RUN: {undecided}"

    def test_the_quickstart_is_in_the_list(self) -> None:
        texts = [command.text for command in TO_RUN]
        assert any("/predict" in text for text in texts)
        assert any("loadgen" in text and "--schedule default" in text for text in texts)
        assert any("triage --prometheus URL" in text for text in texts)


@dataclass(frozen=True)
class _Stack:
    port: int
    prometheus: str


@pytest.fixture(scope="module")
def stack(regression_model_dir: Path) -> Iterator[_Stack]:
    port = free_port()
    with (
        serve(regression_model_dir, port, None),
        PrometheusServer([("modellens", f"127.0.0.1:{port}", "/metrics")]) as prometheus,
    ):
        prometheus.wait_for_scrapes()
        yield _Stack(port, prometheus.url)


@pytest.mark.slow
@pytest.mark.parametrize("command", TO_RUN, ids=str)
def test_command_runs_as_written(command: Command, stack: _Stack) -> None:
    script = command.text.replace("localhost:8000", f"127.0.0.1:{stack.port}")
    script = script.replace("127.0.0.1:8000", f"127.0.0.1:{stack.port}")
    script = re.sub(r"(--prometheus )URL\b", rf"\g<1>{stack.prometheus}", script)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    argv = ["bash", "-o", "pipefail", "-c", script]
    if any(flag in script for flag in _LONG_RUNNING):
        process = subprocess.Popen(
            argv, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True
        )
        try:
            stdout, stderr = process.communicate(timeout=_LONG_RUN_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)  # bash and what it started
            stdout, stderr = process.communicate()
        else:
            pytest.fail(f"{command} ended early ({process.returncode}): {stdout[-500:]} {stderr[-2000:]}")
        assert "Traceback" not in stderr, stderr[-2000:]
        return
    done = subprocess.run(argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, f"{command}: {script}\n{done.stdout[-1000:]}\n{done.stderr[-2000:]}"
    assert "Traceback" not in done.stderr, done.stderr[-2000:]
    assert done.stdout.strip(), f"{command} printed nothing"
