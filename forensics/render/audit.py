"""`o2f audit`: findings and layer checks, as tables for people or one JSON object."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from forensics.model import AuditFinding, LayerCheck, Severity, display_path
from forensics.render.common import path_fields, render_table, rich_table, to_json

FINDING_FIELDS = (
    "severity",
    "kind",
    "container",
    "container_id",
    "layer",
    "path",
    "path_bytes",
    "detail",
    "evidence",
)
CHECK_FIELDS = (
    "layer",
    "verdict",
    "method",
    "chain_id",
    "diff_id",
    "computed_diff_id",
    "files_checked",
    "findings",
    "detail",
)


def finding_record(finding: AuditFinding) -> dict[str, Any]:
    record: dict[str, Any] = {
        "severity": finding.severity.value,
        "kind": finding.kind.value,
        "container": finding.container,
        "container_id": finding.container_id,
        "layer": finding.layer,
    }
    if finding.path is None:
        record["path"] = None
    else:
        record.update(path_fields(finding.path))
    record["detail"] = finding.detail
    record["evidence"] = finding.evidence
    return record


def check_record(check: LayerCheck) -> dict[str, Any]:
    return {
        "layer": check.layer_id,
        "verdict": check.verdict.value,
        "method": check.method,
        "chain_id": check.chain_id,
        "diff_id": check.diff_id,
        "computed_diff_id": check.computed_diff_id,
        "files_checked": check.files_checked,
        "findings": check.findings,
        "detail": check.detail,
    }


def summary(findings: Sequence[AuditFinding]) -> dict[str, Any]:
    counts = {s.value: 0 for s in sorted(Severity, key=lambda s: -s.rank)}
    for finding in findings:
        counts[finding.severity.value] += 1
    failed = any(f.severity.rank >= Severity.WARNING.rank for f in findings)
    return {**counts, "failed": failed}


def audit_output(
    findings: Sequence[AuditFinding], checks: Sequence[LayerCheck], fmt: str, *, layers_checked: bool = True
) -> str:
    if fmt == "json":
        return (
            to_json(
                {
                    "summary": {**summary(findings), "layers_checked": layers_checked},
                    "layer_checks": [check_record(c) for c in checks],
                    "findings": [finding_record(f) for f in findings],
                }
            )
            + "\n"
        )
    return audit_table(findings, checks, layers_checked=layers_checked)


def audit_table(
    findings: Sequence[AuditFinding], checks: Sequence[LayerCheck], *, layers_checked: bool = True
) -> str:
    out = []
    if checks:
        rows = [
            (
                c.layer_id[:12],
                c.verdict.value,
                c.method or "",
                "" if c.files_checked is None else c.files_checked,
                c.findings,
                c.detail or "",
            )
            for c in checks
        ]
        columns = ("layer", "verdict", "method", "files", "findings", "detail")
        out.append(render_table(rich_table(columns, rows, title="image layers")))
    elif not layers_checked:
        out.append("image layers: not checked (collected with --no-verify-layers)\n")
    if findings:
        rows = [
            (
                f.severity.value,
                f.kind.value,
                f.container or (f"layer {f.layer[:12]}" if f.layer else ""),
                "" if f.path is None else display_path(f.path),
                f.detail,
            )
            for f in findings
        ]
        columns = ("severity", "kind", "where", "path", "detail")
        out.append(render_table(rich_table(columns, rows, title="findings")))
    counts = summary(findings)
    verdict = "FAILED" if counts["failed"] else "passed"
    out.append(
        f"{verdict}: {counts['critical']} critical, {counts['warning']} warning, {counts['info']} info\n"
    )
    return "".join(out)
