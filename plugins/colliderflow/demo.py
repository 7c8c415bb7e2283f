"""`make demo`: generate small samples where the DAGs' default inputs point, and run both pipelines end
to end through Airflow on the embedded default (SQLite metadata DB, local backend, Spark local[*],
TensorFlow in one process). The terminal gets one line per task as it finishes; Airflow's, Spark's
and TensorFlow's own output goes to <output>/demo.log. Ends with where the outputs, plots and run
reports are."""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from typing import IO

from colliderflow import environment, progress
from colliderflow.dagkit import run_dir

DIMUON_EVENTS = 2_000_000
# per class: ~6 % of QCD events pass the isolated-lepton cut, which sets the balanced size (~570 per
# class, ~1,200 training events); the form's defaults (batch and rate `auto`) learn on it
TRIGGER_EVENTS = 10_000
# a demo takes everything, each file once: run it twice and both runs work (nightly takes new files only)
TRIGGER_CONF: dict = {"take": "all"}
LOG_NAME = "demo.log"


class DemoFailed(Exception):
    pass


def say(text: str) -> None:
    print(text, flush=True)


def generate_samples(env: dict[str, str], out: str, dimuon_events: int, trigger_events: int, log: IO) -> None:
    """The samples the DAGs' default inputs name (<out>/samples/nanoaod/*.root and
    <out>/samples/delphes/<sample>/), so that the defaults, and a scheduled run, find them."""
    for kind, events, files, what in (
        ("nanoaod", dimuon_events, 4, "NanoAOD-style di-muon events"),
        ("delphes", trigger_events, 2, "Delphes-style events per class (QCD, ttbar, W+jets)"),
    ):
        if events <= 0:
            continue
        t0 = time.perf_counter()
        sample = os.path.join(out, "samples", kind)
        cmd = [sys.executable, "-m", "jobs.generate", kind, "--events", str(events), "--files", str(files),
               "--output", sample]  # fmt: skip
        if same_sample(sample, cmd):
            say(f"[demo] kept the {events:,} {what} of an earlier demo (the same sample)")
            continue
        if subprocess.run(cmd, env=env, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
            raise DemoFailed(f"generating the {kind} sample failed: see {log.name}")
        with open(f"{sample}.command.json", "w") as f:
            json.dump(cmd[1:], f)
        say(f"[demo] generated {events:,} {what} in {time.perf_counter() - t0:.0f} s")


def same_sample(sample: str, cmd: list[str]) -> bool:
    """Whether a complete sample made by the same command is there: regenerating it would only give
    its files new modification times, which the partitions rightly report as changed files."""
    try:
        with open(f"{sample}.command.json") as f:
            return json.load(f) == cmd[1:] and os.path.exists(os.path.join(sample, "_SUCCESS"))
    except (OSError, ValueError):
        return False


def dags_test(env: dict[str, str], dag_id: str, conf: dict, log: IO) -> str:
    """`airflow dags test`: a real DAG run against the metadata DB, its tasks executed in that process,
    its output into `log`; a line per task as it finishes. Returns the run's output directory."""
    t0 = time.perf_counter()
    watcher = progress.RunWatcher(env, dag_id)
    cmd = [environment.airflow_exe(), "dags", "test", dag_id, "-c", json.dumps(conf)]
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    failed = []
    try:
        while True:
            rc = proc.poll()
            for task in watcher.finished():
                say(progress.line(dag_id, task, conf["output_root"], watcher.run_id or ""))
                if task.state == "failed":
                    failed.append(task.task_id)
            if rc is not None:
                break
            time.sleep(0.2)  # the end of the run, and each task, shows within 0.2 s
    finally:
        watcher.close()
        if proc.poll() is None:
            proc.terminate()
            proc.wait()
    if rc != 0 or failed or watcher.run_id is None:
        where = f" at {', '.join(failed)}" if failed else ""
        raise DemoFailed(f"{dag_id} failed{where}: see {log.name}")
    say(f"[demo] {dag_id} finished in {time.perf_counter() - t0:.0f} s")
    return run_dir(conf["output_root"], dag_id, watcher.run_id)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m colliderflow.demo", description=__doc__.splitlines()[0])
    parser.add_argument("--output", default=os.path.abspath("out/demo"), help="samples, run outputs, log")
    parser.add_argument("--dimuon-events", type=int, default=DIMUON_EVENTS)
    parser.add_argument("--trigger-events", type=int, default=TRIGGER_EVENTS, help="per class")
    parser.add_argument("--epochs", type=int, default=None, help="default: the DAG's own")
    parser.add_argument("--only", choices=["cms_dimuon", "dl_trigger"], default=None)
    args = parser.parse_args(argv)
    out = os.path.abspath(args.output)
    os.makedirs(out, exist_ok=True)
    # the demo is the embedded default: a deployment's storage root in the caller's env must not win
    env = {**environment.airflow_env(), "COLLIDERFLOW_DATA": out, "COLLIDERFLOW_STORAGE_ROOT": ""}
    runs = os.path.join(out, "runs")
    lines = []
    with open(os.path.join(out, LOG_NAME), "w") as log:
        say(f"[demo] Airflow home {env['AIRFLOW_HOME']} (SQLite); full logs in {log.name}")
        try:
            environment.prepare(env, log)
            generate_samples(
                env,
                out,
                args.dimuon_events if args.only in (None, "cms_dimuon") else 0,
                args.trigger_events if args.only in (None, "dl_trigger") else 0,
                log,
            )
            if args.only in (None, "cms_dimuon"):
                run = dags_test(env, "cms_dimuon", {**TRIGGER_CONF, "output_root": runs}, log)
                lines += [
                    f"  di-muon spectrum   : {run}/dimuon/dimuon_mass.png",
                    f"  di-muon cut-flow   : {run}/dimuon/cutflow.json",
                    f"  di-muon report     : {run}/report/report.html",
                ]
            if args.only in (None, "dl_trigger"):
                epochs = {"epochs": args.epochs} if args.epochs else {}
                conf = {**TRIGGER_CONF, **epochs, "output_root": runs}
                run = dags_test(env, "dl_trigger", conf, log)
                lines += [
                    f"  classifier AUC     : {progress.auc_line(run)}",
                    f"  ROC curves         : {run}/evaluation/",
                    f"  dl_trigger report  : {run}/report/report.html",
                ]
        except (DemoFailed, environment.PrepareFailed) as exc:
            say(f"[demo] {exc}")
            return 1
    say("\n[demo] outputs:\n" + "\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
