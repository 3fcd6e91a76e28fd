"""Background compression jobs, in one place: the queue, the backends that run jobs, and the worker.

* :mod:`jobs.queue`: jobs as ``knowledge.tables.CompressionRun`` rows, moved through their states by
  compare-and-set (create, claim, progress, finish, cancel, recover).
* :mod:`jobs.backend`: the :class:`JobBackend` interface the pages talk to (submit, cancel, status,
  list, recover) and its first implementation, the local worker pool; a cluster backend (Ray) is a second.
* :mod:`jobs.worker`: the local pool (``python -m jobs.worker``) that claims queued rows and runs each job
  in a child process of its own; :mod:`jobs.execute` is what one job does.
* :mod:`jobs.preflight` and :mod:`jobs.uploads`: checks and uploads the Compress page runs before queueing.
* :mod:`jobs.ui`: the Streamlit pieces of the "Run it" pages. It imports Streamlit, so only the app
  imports it; nothing else in this package does, and a worker machine never needs Streamlit.

The app never compresses inside a Streamlit script: a page reload, a second tab or a rerun only reads
the database, so nothing is lost or duplicated. See docs/jobs.md.
"""

from jobs.backend import JobBackend, JobInfo, JobSpec, LocalBackend, get_backend

__all__ = ["JobBackend", "JobInfo", "JobSpec", "LocalBackend", "get_backend"]
