#!/usr/bin/env bash
# Sets up (idempotent) and starts the Shrinkwise web app on the embedded defaults:
# a SQLite database in the per-user data folder and the bundled demo model.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/shrinkwise kb load
if [ -z "${SHRINKWISE_RAY_ADDRESS:-}" ] && [ "${SHRINKWISE_JOB_BACKEND:-local}" = local ]; then
    .venv/bin/python -c "from jobs.worker import ensure_worker; ensure_worker()"  # job worker pool (docs/jobs.md)
fi  # else jobs run on the Ray cluster (docs/deploy.md)
PORT=${PORT:-8501}
echo "Shrinkwise is starting at http://localhost:${PORT}"
exec .venv/bin/streamlit run app/main.py --server.port "$PORT"
