"""Operator commands beside the agent: `podseg explain` (why a connection is allowed or
blocked) and `podseg status` (every node agent's standing). They read the API (and, when
asked, the agents' local endpoints); they never write."""
