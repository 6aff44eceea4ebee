"""podseg: a node agent enforcing Kubernetes NetworkPolicy inside each pod network namespace."""

__version__ = "0.1.0"
