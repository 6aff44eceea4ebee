"""PATCH bodies: JSON merge patch (RFC 7386), strategic merge patch and JSON patch (RFC 6902).

Strategic merge is approximated by merge semantics (maps merge, ``null`` deletes, lists are
replaced) plus the ``$patch: replace|delete`` map directives; list merge keys are not
honoured.  That covers label/annotation/status edits, which is what the agent and tests use.
"""

from __future__ import annotations

import copy
from typing import Any

import jsonpatch

from testbed.emulator import apistatus

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
SUPPORTED = (MERGE, STRATEGIC, JSON_PATCH)


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 MergePatch."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def strategic_merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    directive = patch.get("$patch")
    if directive == "delete":
        return None
    body = {k: v for k, v in patch.items() if not k.startswith("$")}
    if directive == "replace":
        return copy.deepcopy(body)
    if directive is not None:
        raise apistatus.bad_request(f"Unknown patch type: {directive}")
    result: dict[str, Any] = dict(target) if isinstance(target, dict) else {}
    for key, value in body.items():
        if value is None:
            result.pop(key, None)
            continue
        merged = strategic_merge_patch(result.get(key), value)
        if merged is None:
            result.pop(key, None)
        else:
            result[key] = merged
    return result


def apply(content_type: str, original: dict[str, Any], patch: Any) -> dict[str, Any]:
    """Apply ``patch`` (already JSON-decoded) to a copy of ``original``."""
    if content_type == JSON_PATCH:
        if not isinstance(patch, list):
            raise apistatus.bad_request(
                "json: cannot unmarshal object into Go value of type jsonpatch.Patch"
            )
        try:
            result = jsonpatch.apply_patch(copy.deepcopy(original), patch)
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as exc:
            raise apistatus.ApiError(422, "Invalid", str(exc), {}) from exc
        except (KeyError, TypeError, ValueError) as exc:
            raise apistatus.bad_request(f"invalid JSON patch: {exc}") from exc
    elif content_type in (MERGE, STRATEGIC):
        if not isinstance(patch, dict):
            raise apistatus.bad_request(
                "json: cannot unmarshal array into Go value of type map[string]interface {}"
            )
        fn = merge_patch if content_type == MERGE else strategic_merge_patch
        result = fn(copy.deepcopy(original), patch)
    else:
        raise apistatus.unsupported_media_type(content_type)
    if not isinstance(result, dict):
        raise apistatus.bad_request("patched object is not a JSON object")
    return result
