"""Background compression jobs: the queue (rows of ``knowledge.tables.CompressionRun``), the runner
interface the web app talks to, and the worker process that executes them.

The app never compresses inside a Streamlit script: it calls :class:`JobRunner` (``submit``, ``cancel``,
``status``, ``list``) and a separate worker process (``python -m compressors.jobs.worker``) claims the
queued rows and runs each job in a child process of its own. A page reload, a second tab or a rerun only
reads the database, so nothing is lost or duplicated. See docs/jobs.md.
"""

from compressors.jobs.runner import JobInfo, JobRunner, JobSpec, LocalJobRunner, get_runner

__all__ = ["JobInfo", "JobRunner", "JobSpec", "LocalJobRunner", "get_runner"]
