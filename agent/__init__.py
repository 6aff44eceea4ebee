"""podseg: a node agent enforcing Kubernetes NetworkPolicy inside each pod network namespace."""

from __future__ import annotations

import importlib.metadata

__version__ = "0.1.0"  # the one place the version is stated (pyproject.toml reads it)


def version() -> str:
    """The installed distribution's version, or this source tree's."""
    try:
        return importlib.metadata.version("podseg")
    except importlib.metadata.PackageNotFoundError:
        return __version__
