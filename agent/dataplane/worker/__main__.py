"""`python -m agent.dataplane.worker`: the worker process the agent starts (agent.child)."""

from agent.dataplane import worker

worker.main()
