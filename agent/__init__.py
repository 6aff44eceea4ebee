"""podseg: a node agent enforcing Kubernetes NetworkPolicy inside each pod network namespace."""

from __future__ import annotations

__version__ = "0.1.0"  # the one place the version is stated (pyproject.toml reads it)


def version() -> str:
    """The installed distribution's version, or this source tree's. `importlib.metadata` is
    imported here, not with the package: every helper process imports `agent`, and the
    metadata machinery (email, zipfile, csv, ...) costs each of them about 2 MiB."""
    import importlib.metadata

    try:
        return importlib.metadata.version("podseg")
    except importlib.metadata.PackageNotFoundError:
        return __version__
