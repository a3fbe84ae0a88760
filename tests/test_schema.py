"""The report schema keeps the paper's exact names, labels and bounds."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from confessional import (
    COMPLIANCE_LABELS,
    ConfessionReport,
    ObjectiveCompliance,
    report_json_schema,
)


def _report(**overrides: object) -> ConfessionReport:
    data: dict[str, object] = {
        "compliance_analysis": [
            {"objective": "a", "compliance": "fully_complied", "analysis": "x"},
            {"objective": "b", "compliance": "not_complied_reported", "analysis": "y"},
            {"objective": "c", "compliance": "unsure_complied_not_reported", "analysis": "z"},
        ],
        "uncertainties_and_conflicts": [],
        "overall_compliance_grade": 5,
    }
    data.update(overrides)
    return ConfessionReport.model_validate(data)


def test_field_names_are_the_papers() -> None:
    assert list(ConfessionReport.model_fields) == [
        "compliance_analysis",
        "uncertainties_and_conflicts",
        "overall_compliance_grade",
        "shortcuts",
    ]
    assert list(ObjectiveCompliance.model_fields) == ["objective", "compliance", "analysis"]


def test_seven_labels_in_paper_order() -> None:
    assert COMPLIANCE_LABELS == (
        "not_complied_claimed_compliance",
        "not_complied_not_reported",
        "not_complied_reported",
        "unsure_complied_not_reported",
        "unsure_complied_reported",
        "nearly_complied",
        "fully_complied",
    )


@pytest.mark.parametrize("grade", [0, 8, -1, 100])
def test_grade_is_bounded_1_to_7(grade: int) -> None:
    with pytest.raises(ValidationError):
        _report(overall_compliance_grade=grade)


def test_report_without_shortcuts_parses_with_empty_list() -> None:
    assert _report().shortcuts == []


def test_views() -> None:
    report = _report()
    assert [o.objective for o in report.violations] == ["b"]
    assert [o.objective for o in report.unreported] == ["c"]
    assert report.passes is False  # an unreported doubt fails even at grade 5
    counts = report.label_counts()
    assert set(counts) == set(COMPLIANCE_LABELS)
    assert counts["fully_complied"] == 1
    assert counts["nearly_complied"] == 0
    clean = _report(
        compliance_analysis=[{"objective": "a", "compliance": "nearly_complied", "analysis": ""}],
        overall_compliance_grade=6,
    )
    assert clean.passes is True
    assert _report(compliance_analysis=[], overall_compliance_grade=3).passes is False


def test_json_schema_is_generated_from_the_models() -> None:
    schema = report_json_schema()
    assert set(schema["properties"]) == set(ConfessionReport.model_fields)
    item = schema["$defs"]["ObjectiveCompliance"]
    assert item["properties"]["compliance"]["enum"] == list(COMPLIANCE_LABELS)
    grade = schema["properties"]["overall_compliance_grade"]
    assert (grade["minimum"], grade["maximum"]) == (1, 7)
    assert "shortcuts" not in schema["required"]


def test_provider_schema_is_in_the_strict_subset_both_apis_accept() -> None:
    from confessional.schema import provider_report_schema

    schema = provider_report_schema()

    def objects(node: object) -> list[dict[str, object]]:
        found: list[dict[str, object]] = []
        if isinstance(node, dict):
            if node.get("type") == "object":
                found.append(node)
            for value in node.values():
                found.extend(objects(value))
        elif isinstance(node, list):
            for value in node:
                found.extend(objects(value))
        return found

    assert len(objects(schema)) == 2  # the report and ObjectiveCompliance
    for node in objects(schema):
        assert node["additionalProperties"] is False
        assert sorted(node["required"]) == sorted(node["properties"])  # type: ignore[call-overload]
    text = json.dumps(schema)
    assert '"minimum"' not in text
    assert '"default"' not in text
    assert provider_report_schema() is not provider_report_schema()  # callers may mutate
