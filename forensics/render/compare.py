"""Output of `o2f compare` (table, json, csv) and `o2f drift` (text, json, junit, sarif).

The records come from ``analyze/compare.py`` (a Comparison) and
``analyze/drift.py`` (a DriftReport); like the rest of ``render`` this module
reads their attributes and imports neither. Every format prints a summary (the
counts per kind) before the details. The JSON structures are documented in
docs/cli.md (sections o2f compare and o2f drift).
"""

from __future__ import annotations

import hashlib
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote

from forensics.model import Change, Entry, display_path, path_to_text
from forensics.render.common import path_fields, render_table, rich_table, to_csv, to_json
from forensics.render.records import change_record, entry_record

# -- shared pieces ------------------------------------------------------------------------------


def side_record(side: Any) -> dict[str, Any] | None:
    if side is None:
        return None
    return {
        "path": side.path,
        "digest": side.digest,
        "host": side.host,
        "source": side.source,
        "started_utc": side.started_utc,
        "schema_version": side.schema_version,
        "complete": side.complete,
    }


def _short(identifier: str | None) -> str:
    return "" if not identifier else identifier.removeprefix("sha256:")[:12]


def _entry_brief(entry: Entry | None) -> str:
    """``f 0644 0:0 15 B e9cd8ee31a62`` - enough to see what differs in a table cell."""
    if entry is None:
        return ""
    parts = [entry.kind.letter, f"{entry.mode:04o}", f"{entry.uid}:{entry.gid}"]
    if entry.size is not None and entry.kind.value == "file":
        parts.append(f"{entry.size} B")
    if entry.blake3:
        parts.append(entry.blake3[:12])
    if entry.target is not None:
        parts.append("-> " + display_path(entry.target))
    return " ".join(parts)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _used(images: Sequence[str], containers: Sequence[str]) -> str:
    """Tagged images and containers by name; untagged images (a tag has a colon) only counted."""
    tagged = [name for name in images if ":" in name]
    parts = []
    if tagged or images:
        untagged = len(images) - len(tagged)
        parts.append(", ".join(tagged) + (f" (+{untagged} untagged images)" if untagged else ""))
    if containers:
        parts.append("containers " + ", ".join(containers))
    return "; ".join(p.strip() for p in parts) or "nothing"


def _printable(text: str) -> str:
    """One line of plain text: control characters in names shown escaped, so no name can fake a line."""
    if text.isprintable():
        return text
    return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)


# -- compare: records ------------------------------------------------------------------------------


def path_diff_record(d: Any) -> dict[str, Any]:
    record: dict[str, Any] = path_fields(d.path)
    record["difference"] = d.kind
    record["details"] = list(d.details)
    if d.origin:
        record["origin"] = d.origin
        record["explained_by"] = d.explained_by
    record["a"] = None if d.a is None else entry_record(d.a)
    record["b"] = None if d.b is None else entry_record(d.b)
    return record


def _change_brief(change: Change | None) -> dict[str, Any] | None:
    if change is None:
        return None
    record = change_record(change)
    for key in ("container", "container_id", "path", "path_bytes"):
        record.pop(key, None)
    return record


def change_diff_record(d: Any) -> dict[str, Any]:
    record: dict[str, Any] = path_fields(d.path)
    record["difference"] = d.kind
    record["a"] = _change_brief(d.a)
    record["b"] = _change_brief(d.b)
    return record


def _container_ref(c: Any) -> dict[str, Any]:
    return {"id": c.id, "name": c.name, "image_id": c.image_id}


def _layer_ref(layer: Any) -> dict[str, Any]:
    return {"chain_id": layer.chain_id, "diff_id": layer.diff_id, "layer": layer.layer_id}


def compare_record(cmp: Any) -> dict[str, Any]:
    """The whole comparison as one JSON object (docs/cli.md#o2f-compare)."""
    return {
        "a": side_record(cmp.a),
        "b": side_record(cmp.b),
        "summary": cmp.summary(),
        "images": {
            "only_in_a": [{"id": i.id, "tags": list(i.tags)} for i in cmp.images_only_a],
            "only_in_b": [{"id": i.id, "tags": list(i.tags)} for i in cmp.images_only_b],
        },
        "layers": {
            "only_in_a": [_layer_ref(layer) for layer in cmp.layers_only_a],
            "only_in_b": [_layer_ref(layer) for layer in cmp.layers_only_b],
            "changed": [
                {
                    "chain_id": d.chain_id,
                    "diff_id_a": d.diff_id_a,
                    "diff_id_b": d.diff_id_b,
                    "layer_a": d.layer_a,
                    "layer_b": d.layer_b,
                    "images": list(d.images),
                    "containers": list(d.containers),
                    "problem": d.problem,
                    "paths": [path_diff_record(p) for p in d.paths],
                }
                for d in cmp.layer_diffs
            ],
        },
        "containers": {
            "only_in_a": [_container_ref(c) for c in cmp.containers_only_a],
            "only_in_b": [_container_ref(c) for c in cmp.containers_only_b],
            "matched": [
                {
                    "a": _container_ref(p.a),
                    "b": _container_ref(p.b),
                    "image_changed": p.image_changed,
                    "problem_a": p.problem_a,
                    "problem_b": p.problem_b,
                    "paths": [path_diff_record(d) for d in p.view],
                    "changes": [change_diff_record(c) for c in p.changes],
                }
                for p in cmp.pairs
            ],
        },
    }


COMPARE_FIELDS = (
    "scope",
    "difference",
    "container_a",
    "container_b",
    "image",
    "chain_id",
    "path",
    "path_bytes",
    "details",
    "origin",
    "explained_by",
    *(
        f"{side}_{name}"
        for side in "ab"
        for name in ("type", "mode", "uid", "gid", "size", "blake3", "change")
    ),
)


def _csv_entry(side: str, entry: Entry | None) -> dict[str, Any]:
    if entry is None:
        return {}
    record = entry_record(entry)
    return {f"{side}_{k}": record.get(k) for k in ("type", "mode", "uid", "gid", "size", "blake3")}


def compare_rows(cmp: Any) -> list[dict[str, Any]]:
    """One flat row per difference (CSV)."""
    rows: list[dict[str, Any]] = []
    for side, images in (("only-in-a", cmp.images_only_a), ("only-in-b", cmp.images_only_b)):
        rows += [{"scope": "image", "difference": side, "image": i.id} for i in images]
    for side, layers in (("only-in-a", cmp.layers_only_a), ("only-in-b", cmp.layers_only_b)):
        rows += [{"scope": "layer", "difference": side, "chain_id": layer.chain_id} for layer in layers]
    for layer in cmp.layer_diffs:
        if layer.problem:
            rows.append(
                {
                    "scope": "layer",
                    "difference": "records",
                    "chain_id": layer.chain_id,
                    "details": layer.problem,
                }
            )
        for d in layer.paths:
            rows.append(
                {
                    "scope": "layer-path",
                    "difference": d.kind,
                    "chain_id": layer.chain_id,
                    **path_fields(d.path),
                    "details": ",".join(d.details),
                    **_csv_entry("a", d.a),
                    **_csv_entry("b", d.b),
                }
            )
    for side, containers in (("only-in-a", cmp.containers_only_a), ("only-in-b", cmp.containers_only_b)):
        key = "container_a" if side == "only-in-a" else "container_b"
        rows += [
            {"scope": "container", "difference": side, key: c.name or c.id, "image": c.image_id}
            for c in containers
        ]
    for pair in cmp.pairs:
        names = {"container_a": pair.a.name or pair.a.id, "container_b": pair.b.name or pair.b.id}
        if pair.image_changed:
            rows.append({"scope": "container", "difference": "image", **names, "image": pair.b.image_id})
        for label, problem in (("problem-a", pair.problem_a), ("problem-b", pair.problem_b)):
            if problem:
                rows.append({"scope": "container", "difference": label, **names, "details": problem})
        for d in pair.view:
            rows.append(
                {
                    "scope": "container-path",
                    "difference": d.kind,
                    **names,
                    **path_fields(d.path),
                    "details": ",".join(d.details),
                    "origin": d.origin,
                    "explained_by": d.explained_by,
                    **_csv_entry("a", d.a),
                    **_csv_entry("b", d.b),
                }
            )
        for c in pair.changes:
            rows.append(
                {
                    "scope": "change-report",
                    "difference": c.kind,
                    **names,
                    **path_fields(c.path),
                    "a_change": _change_label(c.a),
                    "b_change": _change_label(c.b),
                }
            )
    return rows


def _change_label(change: Change | None) -> str:
    if change is None:
        return ""
    return change.kind.value + (f" ({', '.join(change.details)})" if change.details else "")


# -- compare: the table --------------------------------------------------------------------------


def _summary_rows(cmp: Any) -> list[tuple[str, int | str]]:
    s = cmp.summary()
    lp = s["layer_paths"]
    cp = s["container_paths"]
    return [
        ("images only in A", s["images"]["only_in_a"]),
        ("images only in B", s["images"]["only_in_b"]),
        ("images in both", s["images"]["shared"]),
        ("image layers only in A", s["layers"]["only_in_a"]),
        ("image layers only in B", s["layers"]["only_in_b"]),
        ("image layers in both", s["layers"]["shared"]),
        ("image layers that differ", s["layers"]["changed"]),
        (
            "  their paths (only in A / only in B / content / metadata)",
            f"{lp['only_in_a']} / {lp['only_in_b']} / {lp['content']} / {lp['metadata']}",
        ),
        ("containers only in A", s["containers"]["only_in_a"]),
        ("containers only in B", s["containers"]["only_in_b"]),
        ("containers matched", s["containers"]["matched"]),
        ("  that differ", s["containers"]["changed"]),
        ("  that run another image", s["containers"]["image_changed"]),
        (
            "container paths (only in A / only in B / content / metadata)",
            f"{cp['only_in_a']} / {cp['only_in_b']} / {cp['content']} / {cp['metadata']}",
        ),
        ("  explained by an image layer that differs", cp["explained_by_layers"]),
        (
            "change-report paths (only in A / only in B / differ)",
            "{only_in_a} / {only_in_b} / {differs}".format(**s["change_reports"]),
        ),
    ]


def compare_table(cmp: Any) -> str:
    title = f"A {cmp.a.path} ({cmp.a.host or '?'})  vs  B {cmp.b.path} ({cmp.b.host or '?'})"
    out = [render_table(rich_table(("difference", "count"), _summary_rows(cmp), title=_printable(title)))]
    for label, images in (("images only in A", cmp.images_only_a), ("images only in B", cmp.images_only_b)):
        if images:
            rows = [(i.id, ", ".join(i.tags) or "<none>") for i in images]
            out.append(render_table(rich_table(("id", "tags"), rows, title=_printable(label))))
    for label, layers in (
        ("image layers only in A", cmp.layers_only_a),
        ("image layers only in B", cmp.layers_only_b),
    ):
        if layers:
            rows = [(layer.chain_id, layer.diff_id or "", _short(layer.layer_id)) for layer in layers]
            out.append(
                render_table(rich_table(("chain id", "diff id", "layer"), rows, title=_printable(label)))
            )
    for layer in cmp.layer_diffs:
        count = _count(len(layer.paths), "path") + (" differs" if len(layer.paths) == 1 else " differ")
        title = f"image layer {layer.chain_id}: {count}; used by {_used(layer.images, layer.containers)}"
        if layer.problem:
            title += f". {layer.problem}"
        rows = [
            (d.kind, display_path(d.path), ", ".join(d.details), _entry_brief(d.a), _entry_brief(d.b))
            for d in layer.paths
        ]
        out.append(
            render_table(
                rich_table(("difference", "path", "details", "A", "B"), rows, title=_printable(title))
            )
        )
    for label, containers in (
        ("containers only in A", cmp.containers_only_a),
        ("containers only in B", cmp.containers_only_b),
    ):
        if containers:
            rows = [
                (c.name or "", _short(c.id), cmp.image_names.get(c.image_id or "", c.image or ""))
                for c in containers
            ]
            out.append(render_table(rich_table(("name", "id", "image"), rows, title=_printable(label))))
    for pair in cmp.pairs:
        if not pair.view and not pair.changes and not pair.changed:
            continue
        name = pair.b.name or pair.b.id
        title = f"container {name} (A {_short(pair.a.id)}, B {_short(pair.b.id)})"
        if pair.image_changed:
            old = cmp.image_names.get(pair.a.image_id or "", pair.a.image_id)
            new = cmp.image_names.get(pair.b.image_id or "", pair.b.image_id)
            title += f": image {old} in A, {new} in B"
        for label, problem in (("A", pair.problem_a), ("B", pair.problem_b)):
            if problem:
                title += f"; {label}: {problem}"
        rows = [
            (
                d.kind,
                d.origin if d.explained_by is None else f"layer {_short(d.explained_by)}",
                display_path(d.path),
                ", ".join(d.details),
                _entry_brief(d.a),
                _entry_brief(d.b),
            )
            for d in pair.view
        ]
        out.append(
            render_table(
                rich_table(
                    ("difference", "origin", "path", "details", "A", "B"), rows, title=_printable(title)
                )
            )
        )
        if pair.changes:
            rows = [
                (c.kind, display_path(c.path), _change_label(c.a), _change_label(c.b)) for c in pair.changes
            ]
            out.append(
                render_table(
                    rich_table(
                        ("difference", "path", "A change", "B change"),
                        rows,
                        title=_printable(f"container {name}: change reports"),
                    )
                )
            )
    return "".join(out)


def compare_output(cmp: Any, fmt: str) -> str:
    if fmt == "json":
        return to_json(compare_record(cmp)) + "\n"
    if fmt == "csv":
        return to_csv(COMPARE_FIELDS, compare_rows(cmp))
    return compare_table(cmp)


# -- drift ---------------------------------------------------------------------------------------


def fingerprint(finding: Any) -> str:
    """Stable across runs and hosts: SHA-256 of rule id, subject (container, chain or image id), path."""
    path = "" if finding.path is None else path_to_text(finding.path)
    return hashlib.sha256(f"{finding.rule}\0{finding.subject}\0{path}".encode()).hexdigest()


def finding_record(f: Any) -> dict[str, Any]:
    record: dict[str, Any] = {
        "rule": f.rule,
        "level": f.level,
        "kind": f.kind,
        "container": f.container,
    }
    if f.path is not None:
        record.update(path_fields(f.path))
    else:
        record["path"] = None
    record.update(
        {
            "details": list(f.details),
            "signals": list(f.signals),
            "layer": f.layer,
            "image": f.image,
            "affected": list(f.affected),
            "message": f.message,
            "matched": list(f.matched),
            "fingerprint": fingerprint(f),
            "before": None if f.before is None else entry_record(f.before),
            "after": None if f.after is None else entry_record(f.after),
        }
    )
    return record


def rule_record(rule: Any) -> dict[str, Any]:
    return {
        "id": rule.id,
        "when": rule.when,
        "level": rule.level,
        "paths": list(rule.paths),
        "containers": list(rule.containers),
        "description": rule.description,
    }


def drift_summary(report: Any) -> dict[str, Any]:
    statuses = {"drift": 0, "warning": 0, "clean": 0, "skipped": 0}
    for verdict in report.containers:
        statuses[verdict.status] = statuses.get(verdict.status, 0) + 1
    return {
        "failures": len(report.failures),
        "warnings": len(report.warnings),
        "ignored": report.ignored,
        "unmatched": report.unmatched,
        "by_kind": report.by_kind(),
        "by_rule": report.by_rule(),
        "containers": statuses,
    }


def drift_record(report: Any) -> dict[str, Any]:
    """The gate's answer as one JSON object (docs/cli.md#o2f-drift)."""
    policy = report.policy
    return {
        "verdict": "drift" if report.drifted else "no drift",
        "mode": report.mode,
        "baseline": side_record(report.baseline),
        "current": side_record(report.current),
        "summary": drift_summary(report),
        "policy": {
            "source": policy.source,
            "ignore": list(report.ignore),
            "skip_containers": list(policy.skip_containers),
            "rules": [rule_record(r) for r in policy.rules],
        },
        "containers": [
            {"name": v.name, "status": v.status, "failures": v.failures, "warnings": v.warnings}
            for v in report.containers
        ],
        "findings": [finding_record(f) for f in report.findings],
        "problems": list(report.problems),
    }


def _where(side: Any) -> str:
    if side is None:
        return ""
    return f"{side.path}  (host {side.host or '?'}, captured {side.started_utc or '?'})"


def drift_text(report: Any) -> str:
    s = drift_summary(report)
    verdict = "DRIFT" if report.drifted else "no drift"
    counts = f"{_count(s['failures'], 'failure')}, {_count(s['warnings'], 'warning')}"
    lines = [f"o2f drift: {verdict} - {counts}"]
    if report.baseline is not None:
        lines.append(f"baseline    {_where(report.baseline)}")
    else:
        lines.append("baseline    none: every container is checked against its image (--no-baseline)")
    lines.append(f"current     {_where(report.current)}")
    source = report.policy.source or "built-in"
    lines.append(f"policy      {source}: {len(report.policy.rules)} rules, {len(report.ignore)} ignore globs")
    kinds = "; ".join(
        f"{kind}: " + ", ".join(_count(n, level) for level, n in counts.items() if n)
        for kind, counts in s["by_kind"].items()
    )
    lines.append(f"by kind     {kinds or 'nothing'}")
    lines.append(
        f"not drift   {s['ignored']} ignored (globs, skipped containers), {s['unmatched']} matched no rule"
    )
    containers = ", ".join(
        f"{v.name} {v.status}" + (f" ({v.failures})" if v.failures else "") for v in report.containers
    )
    lines.append(f"containers  {containers or 'none'}")
    if report.findings:
        lines.append("")
    for f in report.findings:
        lines.append(f"{f.level.upper():<8} {f.rule}  {f.message}")
    return "".join(_printable(line) + "\n" for line in lines)


# -- junit -------------------------------------------------------------------------------------


def _xml_text(text: str) -> str:
    """Text XML 1.0 can carry: characters it forbids become ``\\xHH``."""
    return "".join(
        ch
        if ch in "\t\n\r" or (" " <= ch <= "\ud7ff") or ("\ue000" <= ch <= "\ufffd") or ch >= "\U00010000"
        else (f"\\x{ord(ch):02x}" if ord(ch) < 0x100 else f"\\u{ord(ch):04x}")
        for ch in text
    )


def drift_junit(report: Any) -> str:
    """JUnit XML: a testcase per container (and one for images and layers), a failure when it drifted."""
    cases: list[tuple[str, str, list[Any], str | None]] = []  # classname, name, findings, skipped
    general = [f for f in report.findings if f.container is None]
    for verdict in report.containers:
        mine = [f for f in report.findings if f.container == verdict.name or verdict.name in f.containers]
        skipped = "skipped by the policy" if verdict.status == "skipped" else None
        cases.append(("o2f.drift.container", verdict.name, mine, skipped))
    if report.mode == "baseline":
        cases.append(("o2f.drift.images", "images and image layers", general, None))
    failures = sum(1 for _, _, found, _ in cases if any(f.level == "failure" for f in found))
    skipped_count = sum(1 for case in cases if case[3])
    root = ET.Element("testsuites", name="o2f drift", tests=str(len(cases)), failures=str(failures))
    suite = ET.SubElement(
        root,
        "testsuite",
        name="o2f drift",
        tests=str(len(cases)),
        failures=str(failures),
        errors="0",
        skipped=str(skipped_count),
    )
    properties = ET.SubElement(suite, "properties")
    for key, side in (("baseline", report.baseline), ("current", report.current)):
        if side is not None:
            ET.SubElement(properties, "property", name=key, value=_xml_text(side.path))
    ET.SubElement(properties, "property", name="policy", value=_xml_text(report.policy.source or "built-in"))
    for classname, name, found, skipped in cases:
        case = ET.SubElement(suite, "testcase", classname=classname, name=_xml_text(name))
        if skipped:
            ET.SubElement(case, "skipped", message=skipped)
            continue
        failed = [f for f in found if f.level == "failure"]
        warned = [f for f in found if f.level == "warning"]
        if failed:
            failure = ET.SubElement(
                case, "failure", type="drift", message=_xml_text(f"{name}: {_count(len(failed), 'finding')}")
            )
            failure.text = _xml_text("\n".join(_finding_line(f) for f in failed))
        if warned:
            out = ET.SubElement(case, "system-out")
            out.text = _xml_text("\n".join(_finding_line(f) for f in warned))
    ET.indent(root)
    return '<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _finding_line(f: Any) -> str:
    return _printable(f"{f.level.upper()} {f.rule} ({f.kind}): {f.message}")


# -- sarif -------------------------------------------------------------------------------------

SARIF_SCHEMA = "https://json.schemastore.org/sarif-2.1.0.json"
_SARIF_LEVEL = {"failure": "error", "warning": "warning"}


def _rule_name(when: str) -> str:
    return "".join(part.capitalize() for part in when.split("-"))


def drift_sarif(report: Any, tool_version: str = "") -> dict[str, Any]:
    """SARIF 2.1.0: the policy's rules, and one result per finding with a stable partial fingerprint."""
    rules = list(report.policy.rules)
    index = {rule.id: number for number, rule in enumerate(rules)}
    driver: dict[str, Any] = {
        "name": "o2f",
        "rules": [
            {
                "id": rule.id,
                "name": _rule_name(rule.when),
                "shortDescription": {"text": rule.description},
                "defaultConfiguration": {"level": _SARIF_LEVEL[rule.level]},
                "properties": {
                    "when": rule.when,
                    "paths": list(rule.paths),
                    "containers": list(rule.containers),
                },
            }
            for rule in rules
        ],
    }
    if tool_version:
        driver["version"] = tool_version
    results = []
    for f in report.findings:
        location: dict[str, Any] = {
            "logicalLocations": [
                {
                    "name": f.container or f.layer or f.image or "",
                    "kind": "module" if f.container else "resource",
                }
            ]
        }
        if f.path is not None:
            location["physicalLocation"] = {
                "artifactLocation": {"uri": quote(f.path.lstrip(b"/")) or ".", "uriBaseId": "CONTAINER_ROOT"}
            }
        results.append(
            {
                "ruleId": f.rule,
                "ruleIndex": index[f.rule],
                "level": _SARIF_LEVEL[f.level],
                "message": {"text": f.message},
                "locations": [location],
                "partialFingerprints": {"o2fDrift/v1": fingerprint(f)},
                "properties": {
                    "kind": f.kind,
                    "container": f.container,
                    "layer": f.layer,
                    "image": f.image,
                    "details": list(f.details),
                    "signals": list(f.signals),
                },
            }
        )
    run: dict[str, Any] = {
        "tool": {"driver": driver},
        "originalUriBaseIds": {
            "CONTAINER_ROOT": {
                "description": {"text": "The root of the container's file system (or of the image layer)."}
            }
        },
        "results": results,
        "properties": {
            "verdict": "drift" if report.drifted else "no drift",
            "mode": report.mode,
            "baseline": None if report.baseline is None else report.baseline.path,
            "current": report.current.path,
            "summary": drift_summary(report),
        },
    }
    return {"$schema": SARIF_SCHEMA, "version": "2.1.0", "runs": [run]}


def drift_output(report: Any, fmt: str, tool_version: str = "") -> str:
    if fmt == "json":
        return to_json(drift_record(report)) + "\n"
    if fmt == "junit":
        return drift_junit(report)
    if fmt == "sarif":
        return to_json(drift_sarif(report, tool_version)) + "\n"
    return drift_text(report)
