"""Shrinkwise's user interfaces: the Streamlit web app (``app/main.py`` and ``app/pages``) and the CLI
(``app/cli``). Thin on purpose: they call ``knowledge``, ``engine`` and ``compressors`` and draw.
Importing this package must not import Streamlit, so the CLI starts fast."""
