"""podseg-testbed: the tooling that exercises podseg without a cluster, kept out of the agent.

`testbed.emulator` is a Kubernetes API server stand-in, `testbed.sandbox` a node made of
network namespaces (pods, probes, a service proxy) and `testbed.demo` is `podseg demo`. The
tests, the benchmarks and the demo use them; the runtime package `agent` and its image never
do, so they ship as this separate distribution (testbed/pyproject.toml).
"""
