"""Who may see what: run ownership, admins, and which server paths a user may compress (issue 15).

Every run (and every upload) has an owner: the signed-in user's e-mail in team mode, :data:`LOCAL_USER`
when no sign-in is configured. A :class:`Viewer` sees and opens only the runs it owns; an admin (an
e-mail listed in ``SHRINKWISE_ADMINS``, comma-separated) sees all. In local mode the one user is an admin,
so runs made before owners existed (owner ``None``) stay visible, as before.

Runs are linked by :attr:`CompressionRun.public_id`, a random token, never by the sequential id.

Server paths: ``SHRINKWISE_MODELS_DIR`` is the models root, the folder the app reads model folders from
(the Compress page lists the folders under it; :mod:`jobs.model_sources`). ``SHRINKWISE_MODEL_ROOTS``
(folders separated by ``os.pathsep``, the older name) adds more roots to the same list: one mechanism,
:func:`model_roots`. When a root is set, a path outside every root (after resolving links and ``..``)
is refused with one message, the same whether the path exists or not, so the answer reveals nothing.
When none is set, a local user may give any path (as before) and a team user none (uploads, the local
Hugging Face cache and the demo only). The data folder (uploads, run outputs) is never a server-path
source in team mode: it holds other users' files.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from compressors.base import CompressionError

#: The owner of everything when no sign-in is configured.
LOCAL_USER = "local"
ENV_ADMINS = "SHRINKWISE_ADMINS"
ENV_MODELS_DIR = "SHRINKWISE_MODELS_DIR"
ENV_MODEL_ROOTS = "SHRINKWISE_MODEL_ROOTS"


class AccessDenied(CompressionError):
    """A path or run this user may not use; the message never says whether it exists."""


def admins() -> frozenset[str]:
    raw = os.environ.get(ENV_ADMINS, "")
    return frozenset(e.strip().lower() for e in raw.split(",") if e.strip())


@dataclass(frozen=True)
class Viewer:
    """The user a page is drawn for."""

    user: str
    is_admin: bool = False
    team: bool = False  # signed in through OIDC (False: the local, single-user mode)

    @classmethod
    def local(cls) -> Viewer:
        return cls(LOCAL_USER, is_admin=True, team=False)

    @classmethod
    def signed_in(cls, email: str) -> Viewer:
        user = email.strip().lower()
        if not user:
            raise AccessDenied("the sign-in gave no e-mail address; ask an admin to check the provider")
        return cls(user, is_admin=user in admins(), team=True)

    def can_see(self, owner: str | None) -> bool:
        """Whether a run or upload owned by ``owner`` may be shown (and downloaded) to this viewer."""
        return self.is_admin or (owner is not None and owner == self.user)

    @property
    def owner_filter(self) -> str | None:
        """The ``owner`` to filter run lists by; None (all runs) for an admin."""
        return None if self.is_admin else self.user


def models_dir() -> Path | None:
    """The models root (``SHRINKWISE_MODELS_DIR``), resolved; None when it is not set."""
    raw = os.environ.get(ENV_MODELS_DIR, "").strip()
    return Path(raw).expanduser().resolve() if raw else None


def model_roots() -> list[Path] | None:
    """Every folder server paths may be read from: the models root first, then the folders of
    ``SHRINKWISE_MODEL_ROOTS``, resolved; None when neither is set."""
    roots: list[Path] = []
    first = models_dir()
    if first is not None:
        roots.append(first)
    raw = os.environ.get(ENV_MODEL_ROOTS, "")
    for p in raw.split(os.pathsep):
        if p.strip() and (r := Path(p.strip()).expanduser().resolve()) not in roots:
            roots.append(r)
    return roots or None


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def outside_roots_message(roots: list[Path] | None) -> str:
    if not roots:
        return (
            "server paths are not enabled on this server; upload the model, pick it from the Hugging Face "
            f"cache or give its hub id instead, or ask the admin to set {ENV_MODELS_DIR} (the models folder)"
        )
    where = (
        f"the models folder {roots[0]}"
        if len(roots) == 1
        else "the models folders " + ", ".join(str(r) for r in roots)
    )
    return (
        f"this path is not available: it is outside {where}; put the model under it or set "
        f"{ENV_MODELS_DIR} (or upload a small model, or give its hub id)"
    )


def check_server_path(raw: str, viewer: Viewer) -> Path:
    """The path a user typed, if this user may read a model from it; :class:`AccessDenied` otherwise.

    The refusal is decided before anything is read, from the resolved path alone, and its message is the
    same for a file, a folder and a path that does not exist.
    """
    roots = model_roots()
    path = Path(raw).expanduser()
    if roots is None and not viewer.team:
        return path  # the local user: any path, as before
    resolved = path.resolve()  # follows links, so a link inside a root cannot point outside it
    allowed = roots or []
    if viewer.team:
        from knowledge.paths import data_home

        home = data_home().resolve()
        if _under(resolved, home):
            allowed = []
    if not path.is_absolute() or not any(_under(resolved, r) for r in allowed):
        raise AccessDenied(outside_roots_message(roots))
    return resolved
