"""Shrinkwise web app: the entry script. It only configures the page, routes and holds shared state.

Run with ``streamlit run app/main.py`` (or ``scripts/run-app.sh``). Pages live in ``app/views`` (not ``pages/``: that folder name switches Streamlit to its older file-based routing, which ignores st.navigation for direct links), the
figures in ``app/figures``, cached resources in ``app/state.py``.
"""

from __future__ import annotations

import sys
from pathlib import Path

# `streamlit run app/main.py` puts app/ (not the repository root) on sys.path; the pages import the
# packages app, engine and knowledge by their full names.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

import streamlit as st  # noqa: E402

from app import auth, state  # noqa: E402

st.set_page_config(page_title="Shrinkwise", page_icon=":material/compress:", layout="wide")
auth.require_viewer()  # team mode (an [auth] secret): the sign-in page until someone signs in

pages = {
    "Decide": [
        st.Page(
            state.PAGE_RECOMMEND,
            title="Recommend",
            icon=":material/explore:",
            default=True,
            url_path="recommend",
        ),
        st.Page(state.PAGE_MAP, title="Map", icon=":material/map:", url_path="map"),
    ],
    "Knowledge": [
        st.Page(state.PAGE_CATALOGUE, title="Catalogue", icon=":material/table_view:", url_path="catalogue"),
        st.Page(state.PAGE_METHOD, title="Method", icon=":material/article:", url_path="method"),
        st.Page(state.PAGE_ABOUT, title="About", icon=":material/info:", url_path="about"),
    ],
    "Run it": [  # jobs/ui.py: compress a model in a background job, its result, all runs
        st.Page("views/compress.py", title="Compress", icon=":material/play_circle:", url_path="compress"),
        st.Page(
            "views/run_result.py", title="Run result", icon=":material/analytics:", url_path="run_result"
        ),
        st.Page("views/history.py", title="History", icon=":material/history:", url_path="history"),
        st.Page("views/sweep.py", title="Sweep", icon=":material/stacked_line_chart:", url_path="sweep"),
    ],
}
try:
    st.navigation(pages, position="top").run()
except Exception as exc:  # a damaged database: a clear page instead of SQLAlchemy's traceback
    from app.dbfault import show_database_fault

    if not show_database_fault(exc):
        raise
