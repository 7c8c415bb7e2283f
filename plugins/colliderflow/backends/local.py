"""The embedded default: each stage is a subprocess ``python -m jobs.<module>`` on this machine,
Spark stages with a local master. Its output streams into the task log; killing the task kills the
whole process group (Spark's JVM included)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import deque
from collections.abc import Sequence
from typing import Any

from airflow.sdk import BaseOperator
from airflow.sdk.exceptions import AirflowException, AirflowFailException

from colliderflow.stages import Stage, command_args
from jobs.core.cli import EXIT_BAD_INPUT  # the job said what was wrong with its input or arguments


class LocalStageOperator(BaseOperator):
    """Run ``python -m jobs.<module> *args`` with this interpreter."""

    template_fields: Sequence[str] = ("args", "env")
    ui_color = "#e8f4ea"

    def __init__(
        self, *, module: str, args: Sequence[str] = (), env: dict[str, str] | None = None, **kwargs: Any
    ):
        super().__init__(**kwargs)
        self.module = module
        self.args = list(args)
        self.env = dict(env or {})
        self._proc: subprocess.Popen | None = None

    def render_template_fields(self, context, jinja_env=None) -> None:
        """The rendered arguments without the OMIT marker of off flags (what Rendered Templates shows
        is the command line that runs)."""
        super().render_template_fields(context, jinja_env)
        self.args = command_args(self.args)

    def command(self) -> list[str]:
        return [sys.executable, "-m", f"jobs.{self.module}", *command_args(self.args)]

    def execute(self, context: Any) -> None:
        cmd = self.command()
        self.log.info("running: %s", " ".join(cmd))
        env = {**os.environ, **{k: str(v) for k, v in self.env.items()}}
        tail: deque[str] = deque(maxlen=20)
        self._proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, start_new_session=True
        )
        assert self._proc.stdout is not None
        for line in self._proc.stdout:
            line = line.rstrip("\n")
            tail.append(line)
            self.log.info("%s", line)
        rc = self._proc.wait()
        if rc == EXIT_BAD_INPUT:  # bad input or usage: a retry would fail the same way
            raise AirflowFailException(f"jobs.{self.module}: " + " | ".join(tail))
        if rc != 0:
            raise AirflowException(f"jobs.{self.module} exited with {rc}: " + " | ".join(tail))

    def on_kill(self) -> None:
        if self._proc and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGTERM)
            try:
                self._proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self._proc.pid, signal.SIGKILL)


def local_task(stage: Stage, **kwargs: Any) -> LocalStageOperator:
    env = {}
    args = list(stage.args)
    if stage.kind == "spark":
        env["COLLIDERFLOW_SPARK_MASTER"] = os.environ.get("COLLIDERFLOW_SPARK_MASTER", "local[*]")
    if stage.kind == "tf-multiworker" and "--workers" not in args:
        # jobs.train's local launcher starts the N worker processes (with TF_CONFIG) itself.
        args += ["--workers", str(stage.resources.workers)]
    return LocalStageOperator(
        task_id=stage.task_id,
        module=stage.module,
        args=args,
        env=env,
        outlets=list(stage.outlets),
        **({"pool": stage.pool} if stage.pool else {}),
        **kwargs,
    )
