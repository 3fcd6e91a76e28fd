"""Who is using the app: the local user, or a team member signed in with OpenID Connect (issue 15).

Team mode is on when ``.streamlit/secrets.toml`` has an ``[auth]`` section (Streamlit's native
``st.login``/``st.user``; see docs/deploy.md). Then every page asks for sign-in first, and the viewer is
the signed-in e-mail. Without ``[auth]`` the app is single-user: the viewer is
:data:`jobs.access.LOCAL_USER`, an admin, and nothing asks for sign-in (the app listens on 127.0.0.1).
Ownership rules themselves are in :mod:`jobs.access`, which has no Streamlit in it.
"""

from __future__ import annotations

from typing import Any

import streamlit as st

from jobs.access import AccessDenied, Viewer


def auth_configured() -> bool:
    """Whether sign-in is configured (an ``[auth]`` section in the secrets)."""
    try:  # load_if_toml_exists: no "No secrets found" error when there is no secrets file at all
        return bool(st.secrets.load_if_toml_exists() and "auth" in st.secrets)
    except Exception:  # no secrets file, or one that does not parse: no sign-in configured
        return False


def _providers() -> list[str | None]:
    """The named providers of ``[auth.<name>]``, or ``[None]`` for a single unnamed one."""
    try:
        section: Any = st.secrets["auth"]
        named = [k for k, v in section.items() if hasattr(v, "keys")]
    except Exception:  # no secrets file (sign-in configured another way, e.g. in tests): one provider
        named = []
    return list(named) if named else [None]


def _user_info() -> dict[str, Any]:
    """``st.user`` as a plain dict (tests replace this function to sign a user in)."""
    return dict(st.user.to_dict()) if hasattr(st.user, "to_dict") else dict(st.user)


def viewer() -> Viewer:
    """The viewer of this page: the local user, or the signed-in team member.

    Raises :class:`AccessDenied` in team mode when nobody is signed in (``require_viewer`` shows the
    sign-in page before any page runs, so pages can call this freely).
    """
    if not auth_configured():
        return Viewer.local()
    info = _user_info()
    if not info.get("is_logged_in"):
        raise AccessDenied("sign in first")
    return Viewer.signed_in(str(info.get("email") or ""))


def require_viewer() -> Viewer:
    """Called by app/main.py before any page: in team mode, the sign-in page until someone signs in."""
    if not auth_configured():
        return Viewer.local()
    try:
        v = viewer()
    except AccessDenied as exc:
        st.title("Shrinkwise")
        if str(exc) != "sign in first":  # signed in, but without an e-mail: say so, offer to sign out
            st.error(str(exc))
            if st.button("Sign out", key="auth_logout_noemail"):
                st.logout()
        st.write("This Shrinkwise server is shared by a team: sign in to see and run your compressions.")
        for provider in _providers():
            label = f"Sign in with {provider}" if provider else "Sign in"
            if st.button(label, type="primary", key=f"auth_login_{provider or 'default'}"):
                if provider:
                    st.login(provider)
                else:
                    st.login()
        st.stop()
        raise  # never reached: st.stop ends the script
    with st.sidebar:
        st.text(f"Signed in as {v.user}" + (" (admin)" if v.is_admin else ""))
        if st.button("Sign out", key="auth_logout"):
            st.logout()
    return v
