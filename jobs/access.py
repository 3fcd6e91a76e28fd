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


def models_dir() -> Path:
    """The models root (``SHRINKWISE_MODELS_DIR``), resolved; ``<data folder>/models`` when it is not set.

    There is always a root, so a path typed on a page is never read from just anywhere on the server:
    security by default, also for the local single-user app (whose browser port another local user or a
    forwarded tunnel may reach). The default folder is created, so a user can copy a model into it.
    """
    raw = os.environ.get(ENV_MODELS_DIR, "").strip()
    if raw:
        return Path(raw).expanduser().resolve()
    from knowledge.paths import data_home

    folder = data_home() / "models"
    folder.mkdir(parents=True, exist_ok=True)
    return folder.resolve()


def model_roots() -> list[Path]:
    """Every folder server paths may be read from: the models root first, then the folders of
    ``SHRINKWISE_MODEL_ROOTS``, resolved."""
    roots: list[Path] = [models_dir()]
    raw = os.environ.get(ENV_MODEL_ROOTS, "")
    for p in raw.split(os.pathsep):
        if p.strip() and (r := Path(p.strip()).expanduser().resolve()) not in roots:
            roots.append(r)
    return roots


def _under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def outside_roots_message(roots: list[Path]) -> str:
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
    resolved = path.resolve()  # follows links, so a link inside a root cannot point outside it
    allowed = roots
    if viewer.team:
        from knowledge.paths import data_home

        home = data_home().resolve()
        # other users' uploads and runs live in the data folder; only its models folder is shared
        if _under(resolved, home) and not _under(resolved, roots[0]):
            allowed = []
    if not path.is_absolute() or not any(_under(resolved, r) for r in allowed):
        raise AccessDenied(outside_roots_message(roots))
    return resolved
