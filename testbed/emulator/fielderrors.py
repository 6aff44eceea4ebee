"""Field-level validation errors rendered exactly like the Kubernetes API server.

The real server reports 422 Invalid responses whose message and ``details.causes`` are built
from ``field.Error`` values (k8s.io/apimachinery/pkg/util/validation/field).  Clients and the
agent's own error handling parse these strings, so the wording is reproduced here once and
shared by every validator.
"""

from __future__ import annotations

import dataclasses
import enum
import json
from typing import Any


class ErrorType(enum.Enum):
    """The subset of field.ErrorType the emulator produces, with its cause reason."""

    REQUIRED = "FieldValueRequired"
    INVALID = "FieldValueInvalid"
    NOT_SUPPORTED = "FieldValueNotSupported"
    FORBIDDEN = "FieldValueForbidden"
    DUPLICATE = "FieldValueDuplicate"


def render_value(value: Any) -> str:
    """Render a bad value the way Go's ``%q``/``%d`` formatting in field.Error does."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return json.dumps(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclasses.dataclass(frozen=True)
class FieldError:
    """One validation failure at a JSON field path such as ``spec.ingress[0].ports[1].port``."""

    type: ErrorType
    field: str
    value: Any = None
    detail: str = ""
    supported: tuple[str, ...] = ()

    def body(self) -> str:
        """The message without the field path (what goes into ``causes[].message``)."""
        if self.type is ErrorType.REQUIRED:
            text = "Required value"
        elif self.type is ErrorType.FORBIDDEN:
            text = "Forbidden"
        elif self.type is ErrorType.DUPLICATE:
            text = f"Duplicate value: {render_value(self.value)}"
        elif self.type is ErrorType.NOT_SUPPORTED:
            text = f"Unsupported value: {render_value(self.value)}"
            if self.supported:
                quoted = ", ".join(json.dumps(s) for s in self.supported)
                text += f": supported values: {quoted}"
        else:
            text = f"Invalid value: {render_value(self.value)}"
        if self.detail:
            text += f": {self.detail}"
        return text

    def message(self) -> str:
        """The full message, ``field: body``, as used in the aggregate Status message."""
        return f"{self.field}: {self.body()}" if self.field else self.body()

    def cause(self) -> dict[str, str]:
        """The ``details.causes[]`` entry for this error."""
        return {"reason": self.type.value, "message": self.body(), "field": self.field}


def required(field: str, detail: str = "") -> FieldError:
    return FieldError(ErrorType.REQUIRED, field, None, detail)


def invalid(field: str, value: Any, detail: str) -> FieldError:
    return FieldError(ErrorType.INVALID, field, value, detail)


def forbidden(field: str, detail: str) -> FieldError:
    return FieldError(ErrorType.FORBIDDEN, field, None, detail)


def duplicate(field: str, value: Any) -> FieldError:
    return FieldError(ErrorType.DUPLICATE, field, value)


def not_supported(field: str, value: Any, supported: list[str] | tuple[str, ...]) -> FieldError:
    return FieldError(ErrorType.NOT_SUPPORTED, field, value, "", tuple(supported))


def aggregate(errors: list[FieldError]) -> str:
    """Join messages like utilerrors.NewAggregate: one error bare, several in brackets."""
    if len(errors) == 1:
        return errors[0].message()
    return "[" + ", ".join(e.message() for e in errors) + "]"
