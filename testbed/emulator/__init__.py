"""An in-process Kubernetes API server stand-in (real HTTP and JSON) for tests and the demo."""
