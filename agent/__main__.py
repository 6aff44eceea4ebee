"""`python -m agent`: the `podseg` command line (agent.cli)."""

import sys

from agent import cli

sys.exit(cli.main())
