"""The drift gate: differences (or upperdir changes) into findings, and a policy into a verdict (pure).

Two modes:

- **baseline**: a :class:`~forensics.analyze.compare.Comparison` of BASELINE
  (side A) and CURRENT (side B) becomes findings: containers, images and image
  layers present on one side only, a container now running another image, each
  path whose merged view differs (``added``, ``deleted``, ``modified``) or whose
  upperdir record differs while the view does not (``upperdir``), and each path
  of a shared image layer that differs (``layer-changed``).
- **no baseline** (image immutability): every change a container's upperdir
  made (``o2f diff``) is a finding.

Then :func:`judge` drops what the allowlist covers (ignore globs, skipped
containers) and gives every other finding the rule that decides its level
(``failure`` or ``warning``). Any failure is drift.

Not findings, by design: a directory the upperdir holds a copy of with
nothing visible changed (overlayfs copies up every parent of a changed path),
and, between two snapshots, an mtime-only difference of a path the ``-init``
layer provides (the engine writes that layer when it creates the container).

A file is an executable when it has an x bit, or when its first bytes
(``entries.head``) are ELF magic or a ``#!`` line: ``ld.so FILE`` and
``sh FILE`` run it without one. A snapshot without first bytes (an older
capture) is judged by the mode bits alone.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace

from forensics.analyze.compare import (
    ONLY_IN_A,
    ONLY_IN_B,
    Comparison,
    ContainerPair,
    PathDiff,
    Side,
    container_name,
    image_name,
    used_by,
)
from forensics.errors import PolicyError
from forensics.model import (
    Change,
    ChangeKind,
    Container,
    Entry,
    Kind,
    display_path,
    executable_format,
    path_from_text,
    path_sort_key,
)

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

# -- vocabulary --------------------------------------------------------------------------------

FAILURE = "failure"
WARNING = "warning"
LEVELS = (FAILURE, WARNING)

ANY_CHANGE = "any-change"
ADDED_EXECUTABLE = "added-executable"
SETUID_ADDED = "setuid-added"
CAPABILITY_ADDED = "capability-added"
IMAGE_LAYER_CHANGED = "image-layer-changed"
CONDITIONS = (ANY_CHANGE, ADDED_EXECUTABLE, SETUID_ADDED, CAPABILITY_ADDED, IMAGE_LAYER_CHANGED)

# Finding kinds. Path findings of a container reuse the change kinds of `o2f diff`.
CONTAINER_ADDED = "container-added"
CONTAINER_REMOVED = "container-removed"
CONTAINER_UNREADABLE = "container-unreadable"
IMAGE_CHANGED = "image-changed"
IMAGE_ADDED = "image-added"
IMAGE_REMOVED = "image-removed"
LAYER_CHANGED = "layer-changed"
LAYER_ADDED = "layer-added"
LAYER_REMOVED = "layer-removed"
UPPERDIR = "upperdir"
FINDING_KINDS = (
    *(k.value for k in ChangeKind),
    UPPERDIR,
    CONTAINER_ADDED,
    CONTAINER_REMOVED,
    CONTAINER_UNREADABLE,
    IMAGE_CHANGED,
    IMAGE_ADDED,
    IMAGE_REMOVED,
    LAYER_CHANGED,
    LAYER_ADDED,
    LAYER_REMOVED,
)

# Signals a finding carries (rules test them).
EXECUTABLE = "executable"
SETUID = "setuid"
SETGID = "setgid"
CAPABILITY = "capability"
_CAPABILITY_XATTR = "security.capability"


@dataclass(frozen=True)
class Rule:
    """A policy rule: findings meeting ``when`` (and ``paths``, ``containers`` when set) get ``level``."""

    id: str
    when: str
    level: str
    paths: tuple[str, ...] = ()
    containers: tuple[str, ...] = ()
    description: str = ""


DEFAULT_RULES = (
    Rule("O2F-DRIFT-003", SETUID_ADDED, FAILURE, description="A regular file gained a setuid or setgid bit."),
    Rule(
        "O2F-DRIFT-004",
        CAPABILITY_ADDED,
        FAILURE,
        description="A file gained a file capability (security.capability), or it changed.",
    ),
    Rule(
        "O2F-DRIFT-002",
        ADDED_EXECUTABLE,
        FAILURE,
        description="A regular file with an x bit was added, or its content or x bits changed.",
    ),
    Rule(
        "O2F-DRIFT-005",
        IMAGE_LAYER_CHANGED,
        FAILURE,
        description="An image layer differs from the same layer (same chain id) in the baseline.",
    ),
    Rule("O2F-DRIFT-001", ANY_CHANGE, FAILURE, description="Something differs from the baseline."),
)
"""The built-in policy, in the order it is tried: the most specific conditions first, any change last."""

_DESCRIPTIONS = {r.when: r.description for r in DEFAULT_RULES}
_DESCRIPTIONS[ANY_CHANGE] = "Something differs from the baseline (or, without one, from the image)."


def describe(when: str) -> str:
    """The built-in description of a rule condition."""
    return _DESCRIPTIONS[when]


# -- globs -------------------------------------------------------------------------------------


def glob_to_regex(pattern: bytes) -> re.Pattern[bytes]:
    """A path glob over container paths (bytes) as a compiled regex.

    ``*`` and ``?`` match within one path component, ``[...]`` is a byte class
    (``[!...]`` negates), a ``**`` component matches zero or more components
    (``/srv/**`` matches ``/srv`` and everything below it). A pattern that does
    not start with ``/`` matches at any depth (``*.log`` is ``/**/*.log``). A
    trailing ``/`` is ignored.
    """
    if not pattern.startswith(b"/"):
        pattern = b"/**/" + pattern
    body = pattern.rstrip(b"/")
    if not body:
        return re.compile(rb"\A/\Z")
    out = []
    for part in body.split(b"/")[1:]:
        if part == b"**":
            out.append(rb"(?:/.*)?")
        else:
            out.append(b"/" + _component(part))
    return re.compile(rb"\A" + b"".join(out) + rb"\Z", re.DOTALL)


def _component(part: bytes) -> bytes:
    out = []
    i = 0
    while i < len(part):
        ch = part[i : i + 1]
        if ch == b"*":
            while part[i : i + 1] == b"*":
                i += 1
            out.append(rb"[^/]*")
            continue
        if ch == b"?":
            out.append(rb"[^/]")
        elif ch == b"[":
            end = part.find(b"]", i + 2 if part[i + 1 : i + 2] in (b"!", b"^") else i + 1)
            if end < 0:
                out.append(re.escape(ch))
            else:
                inner = part[i + 1 : end]
                negate = inner[:1] in (b"!", b"^")
                if negate:
                    inner = inner[1:]
                escaped = b"".join(b"-" if c == 0x2D else re.escape(bytes([c])) for c in inner)
                out.append(b"[" + (b"^/" if negate else b"") + escaped + b"]")
                i = end + 1
                continue
        else:
            out.append(re.escape(ch))
        i += 1
    return b"".join(out)


@dataclass(frozen=True)
class Globs:
    """A set of path globs (text form, as on the command line)."""

    patterns: tuple[str, ...] = ()
    _compiled: tuple[re.Pattern[bytes], ...] = field(default=(), repr=False, compare=False)

    @classmethod
    def of(cls, patterns: Iterable[str]) -> Globs:
        patterns = tuple(patterns)
        return cls(patterns, tuple(glob_to_regex(path_from_text(p)) for p in patterns))

    def match(self, path: bytes | None) -> str | None:
        """The first pattern matching *path*, or None."""
        if path is None:
            return None
        for text, regex in zip(self.patterns, self._compiled, strict=True):
            if regex.match(path):
                return text
        return None


# -- policy ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Policy:
    ignore: tuple[str, ...] = ()
    skip_containers: tuple[str, ...] = ()
    rules: tuple[Rule, ...] = DEFAULT_RULES
    source: str | None = None  # the policy file, None for the built-in one


_TOP_KEYS = ("ignore", "skip_containers", "rule")
_RULE_KEYS = ("id", "when", "level", "paths", "containers", "description")


def parse_policy(data: bytes, source: str) -> Policy:
    """A TOML policy (docs/policy.md) into a :class:`Policy`; every mistake is one sentence."""
    try:
        document = tomllib.loads(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise PolicyError(f"policy file {source} is not UTF-8 text.") from None
    except tomllib.TOMLDecodeError as exc:
        raise PolicyError(f"policy file {source} is not valid TOML ({exc}).") from None
    for key in document:
        if key not in _TOP_KEYS:
            raise PolicyError(
                f"policy file {source} has an unknown key {key!r} (known: {', '.join(_TOP_KEYS)})."
            )
    ignore = _strings(document, "ignore", source)
    skip = _strings(document, "skip_containers", source)
    tables = document.get("rule", [])
    if not isinstance(tables, list) or not all(isinstance(t, dict) for t in tables):
        raise PolicyError(f"policy file {source}: 'rule' must be a list of [[rule]] tables.")
    rules = []
    seen: set[str] = set()
    for number, table in enumerate(tables, 1):
        where = f"policy file {source}, rule {number}"
        for key in table:
            if key not in _RULE_KEYS:
                raise PolicyError(f"{where} has an unknown key {key!r} (known: {', '.join(_RULE_KEYS)}).")
        for key in ("id", "when", "level"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise PolicyError(f"{where} needs {key!r} (a non-empty string).")
        if table["when"] not in CONDITIONS:
            raise PolicyError(f"{where}: when = {table['when']!r} is not one of {', '.join(CONDITIONS)}.")
        if table["level"] not in LEVELS:
            raise PolicyError(f"{where}: level = {table['level']!r} is not one of {', '.join(LEVELS)}.")
        if table["id"] in seen:
            raise PolicyError(f"{where}: the id {table['id']!r} is used by an earlier rule.")
        seen.add(table["id"])
        description = table.get("description", describe(table["when"]))
        if not isinstance(description, str):
            raise PolicyError(f"{where}: 'description' must be a string.")
        rules.append(
            Rule(
                table["id"],
                table["when"],
                table["level"],
                _strings(table, "paths", where),
                _strings(table, "containers", where),
                description,
            )
        )
    return Policy(ignore, skip, tuple(rules) if rules else DEFAULT_RULES, source)


def _strings(table: dict[str, object], key: str, where: str) -> tuple[str, ...]:
    value = table.get(key, [])
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        where = where if where.startswith("policy file") else f"policy file {where}"
        raise PolicyError(f"{where}: {key!r} must be a list of strings.")
    return tuple(value)


# -- findings --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Finding:
    """One thing that drifted, before and after a policy judged it."""

    kind: str
    container: str | None = None  # container name (image-layer and image findings: None)
    path: bytes | None = None
    details: tuple[str, ...] = ()
    before: Entry | None = None  # baseline side (no-baseline mode: the image's entry)
    after: Entry | None = None  # current side
    layer: str | None = None  # chain id, for image-layer findings
    image: str | None = None  # image id, for image findings (image-changed: the current image)
    affected: tuple[str, ...] = ()  # layer findings: the images and containers using the layer
    containers: tuple[str, ...] = ()  # layer findings: the containers using the layer
    signals: tuple[str, ...] = ()
    message: str = ""
    rule: str = ""  # the deciding rule's id (after judging)
    level: str = ""  # failure or warning (after judging)
    matched: tuple[str, ...] = ()  # every rule id that matched

    @property
    def subject(self) -> str:
        """What the finding is about, for fingerprints: a container name, a chain id or an image id."""
        return self.container or self.layer or self.image or ""


def signals_of(before: Entry | None, after: Entry | None) -> tuple[str, ...]:
    """executable, setuid, setgid, capability: what the change gave the path."""
    if after is None:
        return ()
    out = []
    old = before if before is not None and before.kind is Kind.FILE else None
    if after.kind is Kind.FILE:
        runnable = after.mode & 0o111 or executable_format(after) is not None
        if runnable and (
            old is None
            or old.blake3 != after.blake3
            or old.size != after.size
            or after.mode & 0o111 & ~old.mode
        ):
            out.append(EXECUTABLE)
        gained = after.mode & ~(old.mode if old is not None else 0)
        if gained & 0o4000:
            out.append(SETUID)
        if gained & 0o2000:
            out.append(SETGID)
    capability = after.xattr(_CAPABILITY_XATTR)
    if capability is not None and (before is None or before.xattr(_CAPABILITY_XATTR) != capability):
        out.append(CAPABILITY)
    return tuple(out)


def _p(path: bytes) -> str:
    return display_path(path)


def _path_finding(
    kind: str,
    container: str,
    path: bytes,
    details: Sequence[str],
    before: Entry | None,
    after: Entry | None,
    what: str,
) -> Finding:
    detail = f" ({', '.join(details)})" if details else ""
    return Finding(
        kind,
        container,
        path,
        tuple(details),
        before,
        after,
        signals=signals_of(before, after),
        message=f"{_p(path)} {what}{detail} in container {container}.",
    )


_VIEW_KIND = {ONLY_IN_B: ChangeKind.ADDED.value, ONLY_IN_A: ChangeKind.DELETED.value}
_VIEW_WHAT = {ONLY_IN_B: "was added", ONLY_IN_A: "was deleted"}


def findings_from_comparison(cmp: Comparison) -> list[Finding]:
    """Baseline mode: what differs between BASELINE (side A) and CURRENT (side B), one finding per fact."""
    out: list[Finding] = []
    for image in cmp.images_only_a:
        out.append(
            Finding(
                IMAGE_REMOVED, image=image.id, message=f"image {image_name(image)} is in the baseline only."
            )
        )
    for image in cmp.images_only_b:
        out.append(Finding(IMAGE_ADDED, image=image.id, message=f"image {image_name(image)} is new."))
    covered_a = _chains_of_images(cmp, cmp.images_only_a, "a")
    covered_b = _chains_of_images(cmp, cmp.images_only_b, "b")
    for layer in cmp.layers_only_a:
        if layer.chain_id not in covered_a:
            out.append(
                Finding(LAYER_REMOVED, layer=layer.chain_id, message=f"image layer {layer.chain_id} is gone.")
            )
    for layer in cmp.layers_only_b:
        if layer.chain_id not in covered_b:
            out.append(
                Finding(LAYER_ADDED, layer=layer.chain_id, message=f"image layer {layer.chain_id} is new.")
            )
    for diff in cmp.layer_diffs:
        used = used_by(diff.images, diff.containers)
        short = diff.chain_id.removeprefix("sha256:")[:12]
        if diff.problem:
            out.append(
                Finding(
                    LAYER_CHANGED,
                    layer=diff.chain_id,
                    details=("records",),
                    affected=(*diff.images, *diff.containers),
                    containers=diff.containers,
                    message=f"image layer {short}: {diff.problem[0].lower()}{diff.problem[1:]}",
                )
            )
        for d in diff.paths:
            details = _layer_details(d)
            out.append(
                Finding(
                    LAYER_CHANGED,
                    path=d.path,
                    details=details,
                    before=d.a,
                    after=d.b,
                    layer=diff.chain_id,
                    affected=(*diff.images, *diff.containers),
                    containers=diff.containers,
                    signals=signals_of(d.a, d.b),
                    message=f"{_p(d.path)} differs in image layer {short} ({', '.join(details)}); "
                    f"used by {used}.",
                )
            )
    for container in cmp.containers_only_a:
        name = container_name(container)
        out.append(Finding(CONTAINER_REMOVED, name, message=f"container {name} is in the baseline only."))
    for container in cmp.containers_only_b:
        name = container_name(container)
        out.append(Finding(CONTAINER_ADDED, name, message=f"container {name} is new."))
    for pair in cmp.pairs:
        out.extend(_pair_findings(pair, cmp))
    return out


def _chains_of_images(cmp: Comparison, images: Iterable[object], side: str) -> set[str]:
    layers = {layer for image in images for layer in image.layers}  # type: ignore[attr-defined]
    records = cmp.layers_only_a if side == "a" else cmp.layers_only_b
    return {r.chain_id for r in records if r.layer_id in layers}


def _layer_details(d: PathDiff) -> tuple[str, ...]:
    if d.kind == ONLY_IN_B:
        return ("added",)
    if d.kind == ONLY_IN_A:
        return ("deleted",)
    return d.details


def _pair_findings(pair: ContainerPair, cmp: Comparison) -> list[Finding]:
    name = container_name(pair.b)
    out: list[Finding] = []
    for label, problem in (("baseline", pair.problem_a), ("current", pair.problem_b)):
        if problem:
            out.append(
                Finding(CONTAINER_UNREADABLE, name, details=(label,), message=f"in the {label}: {problem}")
            )
    folded = 0
    covered: set[bytes] = set()
    for d in pair.view:
        if d.explained_by is not None:
            continue  # reported once, at the image layer
        if d.origin == "image" and pair.image_changed:
            folded += 1
            continue
        if d.origin == "init" and d.details == ("mtime",):
            continue  # written by the engine when it created the container
        covered.add(d.path)
        kind = _VIEW_KIND.get(d.kind, ChangeKind.MODIFIED.value)
        what = _VIEW_WHAT.get(d.kind, "changed")
        out.append(_path_finding(kind, name, d.path, d.details, d.a, d.b, what))
    for c in pair.changes:
        if c.path in covered:
            continue
        change = c.b or c.a
        entry = change.entry if change is not None else None
        if entry is not None and entry.kind is Kind.DIR and _copy_up_only(c.a) and _copy_up_only(c.b):
            continue  # a directory copied up for a changed child: nothing visible differs
        details = _upperdir_details(c.a, c.b)
        out.append(
            _path_finding(
                UPPERDIR,
                name,
                c.path,
                details,
                c.a.entry if c.a is not None else None,
                c.b.entry if c.b is not None else None,
                "is recorded differently by the upperdir",
            )
        )
    if pair.image_changed:
        old = cmp.image_names.get(pair.a.image_id or "", pair.a.image_id or "?")
        new = cmp.image_names.get(pair.b.image_id or "", pair.b.image_id or "?")
        out.insert(
            0,
            Finding(
                IMAGE_CHANGED,
                name,
                details=(f"{folded} paths",) if folded else (),
                image=pair.b.image_id,
                message=f"container {name} runs image {new} instead of {old}"
                + (f" ({folded} paths of the image differ)." if folded else "."),
            ),
        )
    return out


def _copy_up_only(change: Change | None) -> bool:
    return change is None or (change.kind is ChangeKind.COPIED_UP and not change.details)


def _upperdir_details(a: Change | None, b: Change | None) -> tuple[str, ...]:
    def label(change: Change | None) -> str:
        if change is None:
            return "none"
        return change.kind.value + (f"[{','.join(change.details)}]" if change.details else "")

    return (f"baseline: {label(a)}", f"current: {label(b)}")


def findings_from_changes(reports: Sequence[tuple[Container, Sequence[Change]]]) -> list[Finding]:
    """No-baseline mode: every change each container's upperdir made is a finding."""
    out: list[Finding] = []
    for container, changes in reports:
        name = container_name(container)
        for change in changes:
            entry = change.entry
            if (
                change.kind is ChangeKind.COPIED_UP
                and not change.details
                and entry is not None
                and entry.kind is Kind.DIR
            ):
                continue  # a directory copied up for a changed child: nothing visible differs
            what = {
                ChangeKind.ADDED: "was added",
                ChangeKind.DELETED: "was deleted",
                ChangeKind.MODIFIED: "was modified",
                ChangeKind.COPIED_UP: "was copied up",
                ChangeKind.WHITEOUT_OF_NOTHING: "has a whiteout that hides nothing",
            }[change.kind]
            out.append(
                _path_finding(change.kind.value, name, change.path, change.details, change.lower, entry, what)
            )
    return out


# -- judging -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ContainerVerdict:
    name: str
    status: str  # drift, warning, clean, skipped
    failures: int = 0
    warnings: int = 0


@dataclass
class DriftReport:
    mode: str  # "baseline" or "no-baseline"
    baseline: Side | None
    current: Side
    policy: Policy
    ignore: tuple[str, ...]  # every ignore glob applied (policy and --ignore)
    findings: list[Finding] = field(default_factory=list)  # failures and warnings, in report order
    containers: list[ContainerVerdict] = field(default_factory=list)
    ignored: int = 0  # findings an ignore glob or skip_containers covered
    unmatched: int = 0  # findings no rule matched (not drift)
    problems: list[str] = field(default_factory=list)

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.level == FAILURE]

    @property
    def warnings(self) -> list[Finding]:
        return [f for f in self.findings if f.level == WARNING]

    @property
    def drifted(self) -> bool:
        return any(f.level == FAILURE for f in self.findings)

    def by_kind(self) -> dict[str, dict[str, int]]:
        """{kind: {"failure": n, "warning": n}}, kinds in FINDING_KINDS order."""
        out: dict[str, dict[str, int]] = {}
        for kind in FINDING_KINDS:
            counts = {FAILURE: 0, WARNING: 0}
            for f in self.findings:
                if f.kind == kind:
                    counts[f.level] += 1
            if any(counts.values()):
                out[kind] = counts
        return out

    def by_rule(self) -> dict[str, int]:
        out = {r.id: 0 for r in self.policy.rules}
        for f in self.findings:
            out[f.rule] = out.get(f.rule, 0) + 1
        return out


def _when(rule: Rule, finding: Finding) -> bool:
    if rule.when == ANY_CHANGE:
        return True
    if rule.when == ADDED_EXECUTABLE:
        return EXECUTABLE in finding.signals
    if rule.when == SETUID_ADDED:
        return SETUID in finding.signals or SETGID in finding.signals
    if rule.when == CAPABILITY_ADDED:
        return CAPABILITY in finding.signals
    return finding.kind == LAYER_CHANGED


def _applies(rule: Rule, finding: Finding, paths: Globs | None) -> bool:
    if not _when(rule, finding):
        return False
    if paths is not None and paths.match(finding.path) is None:
        return False
    if rule.containers:
        names = {finding.container} if finding.container else set(finding.containers)
        if not names & set(rule.containers):
            return False
    return True


def judge(
    findings: Sequence[Finding], policy: Policy, extra_ignore: Sequence[str] = ()
) -> tuple[list[Finding], int, int]:
    """Findings the policy keeps, each with its deciding rule and level; and the ignored and unmatched counts.

    Rules are tried in policy order: the first rule that matches a finding
    decides its rule id and level (``matched`` lists every rule that matched).
    """
    ignore = Globs.of((*policy.ignore, *extra_ignore))
    skip = set(policy.skip_containers)
    rule_paths = {r.id: Globs.of(r.paths) if r.paths else None for r in policy.rules}
    kept: list[Finding] = []
    ignored = unmatched = 0
    for finding in findings:
        if (finding.container is not None and finding.container in skip) or ignore.match(finding.path):
            ignored += 1
            continue
        if finding.container is None and finding.containers and skip:
            finding = replace(finding, containers=tuple(c for c in finding.containers if c not in skip))
        matched = [rule for rule in policy.rules if _applies(rule, finding, rule_paths[rule.id])]
        if not matched:
            unmatched += 1
            continue
        best = matched[0]
        kept.append(replace(finding, rule=best.id, level=best.level, matched=tuple(r.id for r in matched)))
    kept.sort(key=_order)
    return kept, ignored, unmatched


_KIND_ORDER = {kind: index for index, kind in enumerate(FINDING_KINDS)}


def _order(f: Finding) -> tuple[object, ...]:
    return (
        f.level != FAILURE,
        f.container is not None,  # images and image layers first
        f.container or "",
        f.layer or f.image or "",
        path_sort_key(f.path or b""),
        _KIND_ORDER.get(f.kind, 99),
    )


def verdicts(findings: Sequence[Finding], names: Iterable[str], policy: Policy) -> list[ContainerVerdict]:
    """One verdict per container name (sorted): drift, warning, clean or skipped."""
    skip = set(policy.skip_containers)
    out = []
    for name in sorted(set(names)):
        if name in skip:
            out.append(ContainerVerdict(name, "skipped"))
            continue
        mine = [f for f in findings if f.container == name or name in f.containers]
        failures = sum(1 for f in mine if f.level == FAILURE)
        warnings = sum(1 for f in mine if f.level == WARNING)
        status = "drift" if failures else "warning" if warnings else "clean"
        out.append(ContainerVerdict(name, status, failures, warnings))
    return out


def drift_report(
    mode: str,
    baseline: Side | None,
    current: Side,
    raw: Sequence[Finding],
    names: Iterable[str],
    policy: Policy,
    extra_ignore: Sequence[str] = (),
    problems: Sequence[str] = (),
) -> DriftReport:
    """The gate's whole answer: judged findings, per-container verdicts, counts."""
    findings, ignored, unmatched = judge(raw, policy, extra_ignore)
    return DriftReport(
        mode,
        baseline,
        current,
        policy,
        (*policy.ignore, *extra_ignore),
        findings,
        verdicts(findings, names, policy),
        ignored,
        unmatched,
        list(problems),
    )


__all__ = [
    "CONDITIONS",
    "DEFAULT_RULES",
    "FINDING_KINDS",
    "LEVELS",
    "ContainerVerdict",
    "DriftReport",
    "Finding",
    "Globs",
    "Policy",
    "Rule",
    "drift_report",
    "findings_from_changes",
    "findings_from_comparison",
    "glob_to_regex",
    "judge",
    "parse_policy",
    "signals_of",
]
