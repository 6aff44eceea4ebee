"""Regenerate the prometheus-operator schemas in this folder (run by hand, not by the tests).

The Kubernetes schemas come from the `kubernetes-validate` package; prometheus-operator's
kinds are CRDs with no such package, so their JSON schemas are generated from the models
`cloudcoil-models-prometheus-operator` builds from the operator's CRDs, made strict (unknown
fields rejected, as the API server's structural schema pruning would drop them), and committed.
That package is not a test dependency because it installs a pytest plugin that needs more
packages. Usage, in a throwaway virtualenv:

    pip install cloudcoil-models-prometheus-operator && python generate.py
"""

from __future__ import annotations

import json
import pathlib
from importlib import metadata
from typing import Any

from cloudcoil.models.prometheus_operator import v1  # type: ignore[import-not-found]

KINDS = ("ServiceMonitor", "PodMonitor", "PrometheusRule")


def forbid_unknown(schema: Any) -> None:
    if isinstance(schema, dict):
        if schema.get("type") == "object" and "properties" in schema:
            schema.setdefault("additionalProperties", False)
        pattern = schema.get("pattern")
        if isinstance(pattern, str) and pattern.startswith("^(?i)"):
            schema["pattern"] = "(?i)^" + pattern[5:]  # Go allows inline flags; Python: first
        for value in schema.values():
            forbid_unknown(value)
    elif isinstance(schema, list):
        for value in schema:
            forbid_unknown(value)


def main() -> None:
    version = metadata.version("cloudcoil.models.prometheus_operator")
    for kind in KINDS:
        schema: dict[str, Any] = getattr(v1, kind).model_json_schema(by_alias=True)
        forbid_unknown(schema)
        # metadata is the generic ObjectMeta, checked with the Kubernetes schemas.
        schema["properties"]["metadata"] = {"type": "object"}
        schema["$comment"] = f"cloudcoil-models-prometheus-operator {version}, made strict"
        path = pathlib.Path(__file__).with_name(f"{kind.lower()}.json")
        path.write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")


if __name__ == "__main__":
    main()
