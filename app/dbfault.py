"""The page shown instead of a traceback when the database is damaged (or too new for this version).

``app/main.py`` runs every page inside :func:`show_database_fault`'s check, so any page that touches the
database (Compress, Run result, History, and the measured evidence elsewhere) explains the fault the
same way: where the database is, the backup to restore, and that Shrinkwise does not replace it.
"""

from __future__ import annotations

import logging
import re

import streamlit as st

log = logging.getLogger(__name__)

_MD_SPECIALS = re.compile(r"([\\`*_{}\[\]<>()#+\-.!|~$:])")


def _plain(text: str) -> str:
    """``text`` with Markdown's special characters escaped, so a path shows as written."""
    return _MD_SPECIALS.sub(r"\\\1", text)


def show_database_fault(exc: BaseException) -> bool:
    """Show the clear page for ``exc`` if it means the database cannot be used; False (nothing shown)
    for any other error, which the caller re-raises."""
    from knowledge import db

    fault = db.database_fault(exc)
    if fault is None:
        return False
    log.error("%s", fault)
    st.error(_plain(str(fault)), icon=":material/database:")
    st.caption(
        "docs/database.md: where the database and its backups are, and how to restore one. "
        "Pages that only read the bundled knowledge base (Recommend, Map, Catalogue) still work."
    )
    return True
