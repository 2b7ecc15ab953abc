"""Pipeline steps: what the workers do to every event, in order."""

from __future__ import annotations

import re
from typing import Annotated, Literal, Self

from pydantic import Field, JsonValue, field_validator, model_validator

from .types import ApiModel, Duration, FieldPath, cel, cel_rules

_PIPELINE_STEP_KINDS = (
    "parseJson",
    "filter",
    "setFields",
    "renameFields",
    "dropFields",
    "redact",
    "sample",
    "countByKey",
)


class ParseJsonStep(ApiModel):
    """Parse a string field holding JSON into an object."""

    field: FieldPath = Field(description="Field holding a JSON string.")
    target: FieldPath | None = Field(
        default=None, description="Where to put the result; in place if unset."
    )


FilterOperator = Literal[
    "eq", "ne", "in", "notIn", "exists", "notExists", "gt", "gte", "lt", "lte", "matches"
]


class FilterStep(ApiModel):
    """Keep only the events whose field satisfies the predicate."""

    model_config = cel_rules(
        cel(
            "self.op in ['exists', 'notExists'] || has(self.value) || has(self.values)",
            "value or values is required for this op",
            field_path=".value",
        ),
    )

    field: FieldPath = Field(description="Field to test.")
    op: FilterOperator = Field(description="Comparison.")
    value: str | None = Field(
        default=None,
        max_length=1024,
        description=(
            "Operand for eq, ne, gt, gte, lt, lte (numbers compare numerically when both sides "
            "are numbers) and matches (a regular expression)."
        ),
    )
    values: (
        Annotated[list[Annotated[str, Field(max_length=1024)]], Field(max_length=256)] | None
    ) = Field(default=None, description="Operands for in and notIn.")

    @model_validator(mode="after")
    def _operand_present(self) -> Self:
        if self.op in ("in", "notIn") and self.values is None:
            raise ValueError(f"values is required for op {self.op}")
        if self.op not in ("in", "notIn", "exists", "notExists") and self.value is None:
            raise ValueError(f"value is required for op {self.op}")
        if self.op == "matches":
            _compile_pattern(str(self.value))
        return self


class SetFieldsStep(ApiModel):
    """Set fields to constant values."""

    fields: Annotated[dict[str, JsonValue], Field(min_length=1, max_length=64)] = Field(
        description="Field path -> value.",
        json_schema_extra={"additionalProperties": {"x-kubernetes-preserve-unknown-fields": True}},
    )


class RenameFieldsStep(ApiModel):
    """Rename fields."""

    fields: Annotated[dict[str, FieldPath], Field(min_length=1, max_length=64)] = Field(
        description="Old field path -> new field path."
    )


class DropFieldsStep(ApiModel):
    """Remove fields."""

    fields: Annotated[list[FieldPath], Field(min_length=1, max_length=64)] = Field(
        description="Field paths to remove."
    )


class RedactStep(ApiModel):
    """Replace every match of a regular expression in string fields."""

    fields: Annotated[list[FieldPath], Field(min_length=1, max_length=64)] = Field(
        description="Fields to scan."
    )
    pattern: str = Field(
        min_length=1, max_length=1024, description="Regular expression (Python syntax)."
    )
    replacement: str = Field(default="[REDACTED]", max_length=256, description="Replacement text.")

    @field_validator("pattern")
    @classmethod
    def _pattern_compiles(cls, pattern: str) -> str:
        _compile_pattern(pattern)
        return pattern


class SampleStep(ApiModel):
    """Keep a fraction of events, deterministically by key when one is given."""

    rate: float = Field(gt=0, le=1, description="Fraction kept, in (0, 1].")
    key: FieldPath | None = Field(
        default=None,
        description="Hash this field so all events of a key are kept or dropped together.",
    )


class CountByKeyStep(ApiModel):
    """Replace events with counts per key over tumbling windows."""

    key: FieldPath = Field(description="Field to group by.")
    window: Duration = Field(default="10s", description="Tumbling window length.")


class PipelineStep(ApiModel):
    """One processing step: exactly one of the step kinds."""

    model_config = cel_rules(
        cel(
            "[" + ", ".join(f"has(self.{kind})" for kind in _PIPELINE_STEP_KINDS) + "]"
            ".filter(x, x).size() == 1",
            "a pipeline step must set exactly one of: " + ", ".join(_PIPELINE_STEP_KINDS),
        ),
    )

    name: str | None = Field(
        default=None, max_length=63, description="Optional label for logs and metrics."
    )
    parse_json: ParseJsonStep | None = Field(default=None, description="Parse a JSON string field.")
    filter: FilterStep | None = Field(default=None, description="Keep events matching a predicate.")
    set_fields: SetFieldsStep | None = Field(default=None, description="Set constant fields.")
    rename_fields: RenameFieldsStep | None = Field(default=None, description="Rename fields.")
    drop_fields: DropFieldsStep | None = Field(default=None, description="Remove fields.")
    redact: RedactStep | None = Field(default=None, description="Redact by regular expression.")
    sample: SampleStep | None = Field(default=None, description="Keep a fraction of events.")
    count_by_key: CountByKeyStep | None = Field(
        default=None, description="Count per key per window."
    )

    @model_validator(mode="after")
    def _exactly_one_kind(self) -> Self:
        chosen = [
            name
            for name in self.model_fields_set
            if name != "name" and getattr(self, name) is not None
        ]
        if len(chosen) != 1:
            raise ValueError(
                "a pipeline step must set exactly one of: " + ", ".join(_PIPELINE_STEP_KINDS)
            )
        return self

    @property
    def kind(self) -> str:
        """The camelCase name of the step kind this entry sets."""
        for field_name, info in type(self).model_fields.items():
            if field_name != "name" and getattr(self, field_name) is not None:
                return info.alias or field_name
        raise AssertionError("validated step has no kind")


def _compile_pattern(pattern: str) -> re.Pattern[str]:
    try:
        return re.compile(pattern)
    except re.error as error:
        raise ValueError(f"invalid regular expression {pattern!r}: {error}") from None
