"""Sample webhook bodies in payloads/, shaped on the public Falco/falcosidekick and Wiz formats."""

from __future__ import annotations

import json
import pathlib
from typing import Any

DIR = pathlib.Path(__file__).with_name("payloads")


def load(name: str) -> Any:
    return json.loads((DIR / f"{name}.json").read_text())
