"""A sandbox node of network namespaces: pods, probes and a service proxy around real agents."""
