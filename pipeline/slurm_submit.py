"""Submitting SLURM jobs for ``--scheduler slurm:``: a failed ``sbatch`` stops the run at once.

dask-jobqueue submits each job from a background task; when ``sbatch`` fails (a wrong account or
partition, no ``sbatch`` on ``PATH``, a controller that does not answer) it logs a traceback and
nothing joins, so a client waiting for its first worker waited for ever, burning the batch job's
walltime. Here each submission is watched (:func:`submission_watch`): ``sbatch`` must answer
within ``submit_timeout`` seconds (:data:`SUBMIT_SECONDS` unless the spec sets
``submit_timeout=S``), and its failure is recorded in one line carrying its own message
(stderr, else stdout). :func:`wait_for_first_job` raises that line as soon as it is recorded
(within :data:`_POLL_SECONDS` of ``sbatch`` exiting). A job that was accepted and waits in the
queue is waited for without a limit: queueing for hours is normal on a busy cluster.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
from typing import Any, Iterator

from pipeline.errors import PipelineError

SUBMIT_SECONDS = 120.0  # sbatch must answer within this (it normally takes well under a second)
_POLL_SECONDS = 0.5  # how often the client looks for a worker or a failed submission
# Loggers that print a failed submission's traceback (dask-jobqueue starts jobs in tasks).
_NOISY = ("distributed.deploy.spec", "distributed.deploy.cluster", "asyncio", "tornado.application")


def _one_line(text: str, limit: int = 300) -> str:
    return " ".join(text.split())[:limit]


def submission_watch(timeout: float = SUBMIT_SECONDS) -> tuple[list[str], type]:
    """(the failures list, a ``SLURMJob`` class that appends a line to it when sbatch fails)."""
    from dask_jobqueue.slurm import SLURMJob
    from distributed.core import Status

    failures: list[str] = []

    class WatchedSLURMJob(SLURMJob):
        async def _submit_job(self, script_filename: str) -> str:
            try:
                return await self._submit(script_filename)
            except BaseException:
                # Marked failed, the job is skipped when the cluster closes (a job left
                # "created" makes distributed's close wait 60 s, then fail an assertion).
                self.status = Status.failed
                raise

        async def _submit(self, script_filename: str) -> str:
            command = shlex.split(self.submit_command) + [script_filename]
            try:
                proc = await asyncio.create_subprocess_exec(
                    *command, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
                    start_new_session=True)  # its own process group: a timeout kills it all
            except OSError as e:
                failures.append(f"cannot run {command[0]} ({e.strerror}): submit from a SLURM "
                                "login node, or put sbatch on PATH")
                raise RuntimeError(failures[-1]) from None
            try:
                out, err = await asyncio.wait_for(proc.communicate(), timeout)
            except asyncio.TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                await proc.communicate()  # reap it (else its transport complains at exit)
                failures.append(f"{command[0]} did not answer within {timeout:g} s (is the SLURM "
                                "controller reachable? raise it with submit_timeout=S)")
                raise RuntimeError(failures[-1]) from None
            text_out, text_err = out.decode(errors="replace"), err.decode(errors="replace")
            if proc.returncode != 0:
                message = _one_line(text_err) or _one_line(text_out) or "no message"
                failures.append(f"{command[0]} failed (exit code {proc.returncode}): {message}")
                raise RuntimeError(failures[-1])
            return text_out

    return failures, WatchedSLURMJob


@contextlib.contextmanager
def submission_logs_quiet() -> Iterator[None]:
    """Hold back the tracebacks dask logs for a failed submission (its line is raised instead)."""
    loggers = [logging.getLogger(name) for name in _NOISY]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def wait_for_first_job(client: Any, failures: list[str], spec: str) -> None:
    """Wait until a worker joined; raise the first failed submission's line as soon as there is one."""
    while True:
        if failures:
            raise PipelineError(f"scheduler {spec}: {failures[0]}")
        try:
            client.wait_for_workers(1, timeout=_POLL_SECONDS)
            return
        except TimeoutError:
            continue
