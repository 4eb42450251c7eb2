"""analyze/drift.py: globs, the policy file, signals, rules, and the gate on the two-hosts corpus."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from forensics import api
from forensics.analyze.drift import (
    DEFAULT_RULES,
    Finding,
    Globs,
    Policy,
    Rule,
    glob_to_regex,
    judge,
    parse_policy,
    signals_of,
)
from forensics.errors import PolicyError
from forensics.model import Entry, Kind, display_path, path_to_text
from tests.hosts import ADDED_CONTAINER, ADDED_PATH, EDITED_PATH, REMOVED_CONTAINER, TwoHosts, two_hosts

REPO = Path(__file__).resolve().parents[1]
SAMPLE_POLICY = REPO / "samples" / "drift-policy.toml"
POLICY_MD = REPO / "docs" / "policy.md"


@pytest.fixture(scope="module")
def hosts(docker_a_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoHosts:
    return two_hosts(docker_a_root, tmp_path_factory.mktemp("drift-hosts"))


# -- globs -----------------------------------------------------------------------------------

GLOBS = [
    ("/srv/**", b"/srv", True),
    ("/srv/**", b"/srv/a/b/c", True),
    ("/srv/**", b"/srvx", False),
    ("/srv/*", b"/srv/a", True),
    ("/srv/*", b"/srv/a/b", False),
    ("/srv/*", b"/srv", False),
    ("*.log", b"/c.log", True),
    ("*.log", b"/a/b/c.log", True),
    ("*.log", b"/a/log", False),
    ("/**/cache", b"/cache", True),
    ("/**/cache", b"/a/b/cache", True),
    ("/**/cache", b"/a/bcache", False),
    ("/a/**/b", b"/a/b", True),
    ("/a/**/b", b"/a/x/y/b", True),
    ("/a/**/b", b"/a/xb", False),
    ("/**", b"/", True),
    ("/**", b"/anything/at/all", True),
    ("/tmp", b"/tmp", True),
    ("/tmp", b"/tmp/x", False),
    ("/tmp/", b"/tmp", True),
    ("/f?o", b"/foo", True),
    ("/f?o", b"/f/o", False),
    ("/[ab]c", b"/ac", True),
    ("/[!ab]c", b"/cc", True),
    ("/[!ab]c", b"/ac", False),
    ("/a[!b]c", b"/a/c", False),
    ("/x[*]", b"/x*", True),
    ("/x[*]", b"/xa", False),
    ("/a.b", b"/aXb", False),
    ("/a+b", b"/a+b", True),
    ("/srv/web/new*", b"/srv/web/new\nline.txt", True),
    ("/srv/web/bad\\xff*", b"/srv/web/bad\xff.txt", True),
    ("/srv/web/bad\\xff*", b"/srv/web/bad.txt", False),
    ("/back\\\\slash", b"/back\\slash", True),
    ("/unclosed[", b"/unclosed[", True),
]


@pytest.mark.parametrize(("pattern", "path", "expected"), GLOBS, ids=[f"{p}~{x!r}" for p, x, _ in GLOBS])
def test_glob(pattern: str, path: bytes, expected: bool) -> None:
    assert (Globs.of([pattern]).match(path) is not None) is expected


def test_glob_regex_is_anchored_bytes() -> None:
    regex = glob_to_regex(b"/srv/*")
    assert isinstance(regex, re.Pattern) and regex.pattern.startswith(rb"\A")
    assert Globs.of(["/a", "/b/**"]).match(b"/b/c") == "/b/**"
    assert Globs.of(["/a"]).match(None) is None


# -- the policy file ----------------------------------------------------------------------------


def test_the_sample_policy_parses() -> None:
    policy = parse_policy(SAMPLE_POLICY.read_bytes(), str(SAMPLE_POLICY))
    assert policy.ignore == ("/tmp", "/var/log/**", "*.pyc")
    assert policy.skip_containers == ("s-fresh",)
    assert [r.id for r in policy.rules] == [
        "SAMPLE-EXEC",
        "SAMPLE-SUID",
        "SAMPLE-CAP",
        "SAMPLE-LAYER",
        "SAMPLE-DATA",
        "SAMPLE-ANY",
    ]
    data = next(r for r in policy.rules if r.id == "SAMPLE-DATA")
    assert (data.when, data.level, data.paths) == ("any-change", "warning", ("/srv/data/**", "/srv/batch/**"))
    assert next(r for r in policy.rules if r.id == "SAMPLE-SUID").description  # the condition's own text


def test_docs_policy_example_is_the_sample_file() -> None:
    """docs/policy.md shows the complete example; it must be the file the --help example runs."""
    text = POLICY_MD.read_text(encoding="utf-8")
    block = text.split("```toml\n", 1)[1].split("```", 1)[0]
    assert block == SAMPLE_POLICY.read_text(encoding="utf-8")


def test_a_policy_without_rules_keeps_the_built_in_ones() -> None:
    policy = parse_policy(b'ignore = ["/tmp/**"]\n', "p.toml")
    assert policy.rules == DEFAULT_RULES
    assert [r.id for r in DEFAULT_RULES][-1] == "O2F-DRIFT-001"  # the catch-all is tried last
    assert sorted(r.id for r in DEFAULT_RULES) == [f"O2F-DRIFT-00{n}" for n in range(1, 6)]


RULE = '[[rule]]\nid = "R"\nwhen = "any-change"\nlevel = "failure"\n'

BAD_POLICIES = [
    (b'ignored = ["/tmp"]\n', r"policy file bad\.toml has an unknown key 'ignored'"),
    ((RULE + 'path = ["/x"]\n').encode(), r"policy file bad\.toml, rule 1 has an unknown key 'path'"),
    (b'[[rule]]\nid = "R"\nwhen = "anything"\nlevel = "failure"\n', r"when = 'anything' is not one of"),
    (b'[[rule]]\nid = "R"\nwhen = "any-change"\nlevel = "error"\n', r"level = 'error' is not one of"),
    (b'[[rule]]\nwhen = "any-change"\nlevel = "failure"\n', r"rule 1 needs 'id'"),
    ((RULE + RULE).encode(), r"rule 2: the id 'R' is used by an earlier rule"),
    (b'ignore = "/tmp"\n', r"'ignore' must be a list of strings"),
    (b"skip_containers = [1]\n", r"'skip_containers' must be a list of strings"),
    ((RULE + "containers = 'web'\n").encode(), r"rule 1: 'containers' must be a list of strings"),
    (b"rule = 3\n", r"'rule' must be a list of \[\[rule\]\] tables"),
    (b"ignore = [\n", r"policy file bad\.toml is not valid TOML"),
    (b"\xff\xfe", r"policy file bad\.toml is not UTF-8 text"),
]


@pytest.mark.parametrize(("data", "message"), BAD_POLICIES, ids=[m for _, m in BAD_POLICIES])
def test_a_bad_policy_is_one_sentence(data: bytes, message: str) -> None:
    with pytest.raises(PolicyError, match=message) as caught:
        parse_policy(data, "bad.toml")
    text = str(caught.value)
    assert "\n" not in text and text.endswith(".")


def test_a_missing_policy_file(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match=r"policy file .*nope\.toml does not exist\."):
        api.load_policy(str(tmp_path / "nope.toml"))
    with pytest.raises(PolicyError, match="is a directory"):
        api.load_policy(str(tmp_path))


# -- signals and rules -----------------------------------------------------------------------


def _file(
    mode: int = 0o644,
    data: str = "x",
    caps: bytes | None = None,
    kind: Kind = Kind.FILE,
    head: bytes | None = None,
) -> Entry:
    xattrs = (("security.capability", caps),) if caps is not None else ()
    return Entry("L", b"/f", kind, mode, 0, 0, len(data), 1, xattrs=xattrs, blake3=f"h-{data}", head=head)


SIGNALS = [
    (None, _file(0o755), ("executable",)),
    (None, _file(0o644), ()),
    # no x bit, but run as one all the same (sh FILE, ld.so FILE): judged by the first bytes
    (None, _file(0o644, head=b"#!/bin/sh\n"), ("executable",)),
    (None, _file(0o600, head=b"\x7fELF\x02\x01\x01"), ("executable",)),
    (None, _file(0o644, head=b"MZ\x90\x00"), ()),  # not a format these hosts run
    (None, _file(0o644, head=b""), ()),  # empty
    (_file(0o644, "a", head=b"#!/bin/sh\n"), _file(0o644, "b", head=b"#!/bin/sh\n"), ("executable",)),
    (_file(0o644, head=b"#!/bin/sh\n"), _file(0o644, head=b"#!/bin/sh\n"), ()),  # unchanged script
    (_file(0o644), _file(0o744), ("executable",)),  # gained an x bit
    (_file(0o755, "a"), _file(0o755, "b"), ("executable",)),  # an executable's content changed
    (_file(0o755), _file(0o755), ()),  # unchanged executable (a metadata change elsewhere)
    (_file(0o755), _file(0o700), ()),  # lost x bits: not an added executable
    (_file(0o755), _file(0o4755), ("setuid",)),
    (_file(0o755), _file(0o2755), ("setgid",)),
    (_file(0o4755), _file(0o4755, "b"), ("executable",)),  # setuid kept, not gained
    (None, _file(0o4644), ("setuid",)),
    (None, _file(0o2755, kind=Kind.DIR), ()),  # a setgid directory is not a signal
    (None, _file(0o644, caps=b"\x01"), ("capability",)),
    (_file(0o644, caps=b"\x01"), _file(0o644, caps=b"\x02"), ("capability",)),
    (_file(0o644, caps=b"\x01"), _file(0o644, caps=b"\x01"), ()),
    (_file(0o755), None, ()),  # deleted
]


@pytest.mark.parametrize(("before", "after", "expected"), SIGNALS)
def test_signals(before: Entry | None, after: Entry | None, expected: tuple[str, ...]) -> None:
    assert signals_of(before, after) == expected


def _finding(path: str | None, container: str | None = "web", **kw: object) -> Finding:
    return Finding(kw.pop("kind", "modified"), container, None if path is None else path.encode(), **kw)  # type: ignore[arg-type]


def test_the_first_matching_rule_decides() -> None:
    policy = Policy(
        rules=(
            Rule("EXEC", "added-executable", "failure"),
            Rule("DATA", "any-change", "warning", paths=("/data/**",)),
            Rule("ANY", "any-change", "failure"),
        )
    )
    findings = [
        _finding("/data/new.bin", signals=("executable",)),
        _finding("/data/notes.txt"),
        _finding("/etc/passwd"),
    ]
    kept, ignored, unmatched = judge(findings, policy)
    assert {(f.path, f.rule, f.level) for f in kept} == {
        (b"/data/new.bin", "EXEC", "failure"),
        (b"/data/notes.txt", "DATA", "warning"),
        (b"/etc/passwd", "ANY", "failure"),
    }
    assert next(f for f in kept if f.path == b"/data/new.bin").matched == ("EXEC", "DATA", "ANY")
    assert (ignored, unmatched) == (0, 0)


def test_rules_for_some_containers_and_unmatched_findings() -> None:
    policy = Policy(rules=(Rule("WEB", "any-change", "failure", containers=("web",)),))
    layer = _finding("/etc/os-release", None, kind="layer-changed", containers=("db",))
    kept, _, unmatched = judge([_finding("/x"), _finding("/x", "db"), layer], policy)
    assert [(f.container, f.rule) for f in kept] == [("web", "WEB")]
    assert unmatched == 2
    kept, _, _ = judge([layer], Policy(rules=(Rule("DB", "any-change", "failure", containers=("db",)),)))
    assert [f.rule for f in kept] == ["DB"]  # a layer finding belongs to the containers using the layer


def test_image_layer_rule_matches_only_layer_findings() -> None:
    policy = Policy(rules=(Rule("LAYER", "image-layer-changed", "warning"),))
    layer = _finding("/etc/os-release", None, kind="layer-changed")
    kept, _, unmatched = judge([layer, _finding("/etc/os-release")], policy)
    assert [(f.kind, f.level) for f in kept] == [("layer-changed", "warning")]
    assert unmatched == 1


def test_ignore_globs_and_skipped_containers() -> None:
    policy = Policy(ignore=("/tmp/**",), skip_containers=("batch",))
    findings = [
        _finding("/tmp/x"),
        _finding("/etc/x", "batch"),
        _finding(None, "batch", kind="container-removed"),
        _finding(None, "web", kind="container-removed"),  # no path: a glob never ignores it
        _finding("/etc/x"),
    ]
    kept, ignored, unmatched = judge(findings, policy, extra_ignore=["/etc/x"])
    assert [(f.kind, f.container) for f in kept] == [("container-removed", "web")]
    assert (ignored, unmatched) == (4, 0)


# -- the gate on two hosts ------------------------------------------------------------------------


def _facts(report: api._drift.DriftReport) -> set[tuple[object, ...]]:
    return {(f.kind, f.container, f.path, f.rule, f.level) for f in report.findings}


def test_drift_names_the_three_differences(hosts: TwoHosts) -> None:
    report = api.drift(str(hosts.a), str(hosts.b))
    assert report.drifted
    assert _facts(report) == {
        ("layer-changed", None, EDITED_PATH.encode(), "O2F-DRIFT-005", "failure"),
        ("container-removed", REMOVED_CONTAINER, None, "O2F-DRIFT-001", "failure"),
        ("added", ADDED_CONTAINER, ADDED_PATH.encode(), "O2F-DRIFT-001", "failure"),
    }
    layer = next(f for f in report.findings if f.kind == "layer-changed")
    assert layer.details == ("content",) and layer.layer is not None
    assert "corpa/app:1.0" in layer.message and "a-idle" in layer.message
    assert {v.name: v.status for v in report.containers} == dict.fromkeys(
        ("a-batch", "a-fresh", "a-idle", "a-web", "a-worker"), "drift"
    )
    assert (report.ignored, report.unmatched, report.problems) == (0, 0, [])


@pytest.mark.parametrize("other", ["a_again", "b_same"])
def test_no_drift_between_two_collections_of_one_tree(hosts: TwoHosts, other: str) -> None:
    report = api.drift(str(hosts.a), str(getattr(hosts, other)))
    assert not report.drifted
    assert report.findings == []
    assert all(v.status == "clean" for v in report.containers)


def test_ignore_globs_on_the_gate(hosts: TwoHosts) -> None:
    report = api.drift(str(hosts.a), str(hosts.b), ignore=["/srv/data/**", "os-*"])
    assert [(f.kind, f.container) for f in report.findings] == [("container-removed", REMOVED_CONTAINER)]
    assert report.ignored == 2 and report.drifted


def test_a_policy_file_on_the_gate(hosts: TwoHosts, tmp_path: Path) -> None:
    policy = tmp_path / "policy.toml"
    policy.write_text(
        f'ignore = ["{ADDED_PATH}"]\nskip_containers = ["{REMOVED_CONTAINER}"]\n'
        '[[rule]]\nid = "LAYERS"\nwhen = "image-layer-changed"\nlevel = "warning"\n'
        '[[rule]]\nid = "ANY"\nwhen = "any-change"\nlevel = "failure"\n'
    )
    report = api.drift(str(hosts.a), str(hosts.b), policy=str(policy))
    assert not report.drifted  # only a warning is left
    assert [(f.kind, f.rule, f.level) for f in report.findings] == [("layer-changed", "LAYERS", "warning")]
    assert report.ignored == 2
    verdicts = {v.name: v.status for v in report.containers}
    assert verdicts[REMOVED_CONTAINER] == "skipped" and verdicts[ADDED_CONTAINER] == "warning"


def test_no_baseline_every_upperdir_change_is_drift(hosts: TwoHosts) -> None:
    report = api.drift(str(hosts.a), no_baseline=True)
    assert report.drifted and report.baseline is None and report.mode == "no-baseline"
    statuses = {v.name: v.status for v in report.containers}
    assert statuses == {
        "a-batch": "drift",
        "a-fresh": "clean",
        "a-idle": "clean",
        "a-web": "drift",
        "a-worker": "drift",
    }
    by_path = {(f.container, f.path): f for f in report.findings}
    suid = by_path[("a-web", b"/srv/data/ctr-suid.txt")]
    assert (suid.rule, suid.signals) == ("O2F-DRIFT-003", ("executable", "setuid"))
    cap = by_path[("a-worker", b"/srv/worker/cap-raw")]
    assert cap.rule == "O2F-DRIFT-004" and "capability" in cap.signals
    assert by_path[("a-web", b"/srv/web/.wh.evil")].kind == "added"  # a literal file, not a whiteout
    # a directory copied up only because a child changed is not a finding of its own
    assert not [f for f in report.findings if f.kind == "copied-up" and f.after and f.after.kind is Kind.DIR]
    assert ("a-web", b"/srv/data/ctr-hl-src.txt") in by_path  # a file copy-up (by ln) still is


def test_no_baseline_with_an_allowlist(hosts: TwoHosts) -> None:
    report = api.drift(str(hosts.a), no_baseline=True, ignore=["/**"])
    assert not report.drifted and report.findings == []
    assert report.ignored > 100


def test_usage_errors(hosts: TwoHosts) -> None:
    from forensics.errors import UsageError

    with pytest.raises(UsageError, match="--no-baseline checks one snapshot"):
        api.drift(str(hosts.a), str(hosts.b), no_baseline=True)
    with pytest.raises(UsageError, match="needs BASELINE and CURRENT"):
        api.drift(str(hosts.a))
    with pytest.raises(UsageError, match="the baseline and the current snapshot are the same snapshot"):
        api.drift(str(hosts.a), str(hosts.a))


# -- hostile names ------------------------------------------------------------------------------

_NAME = st.binary(min_size=1, max_size=12).filter(lambda b: b"/" not in b and b"\0" not in b)


def _literal_glob(raw: bytes) -> str:
    """A glob matching exactly *raw*: metacharacters in brackets, the rest in the path text form."""
    out = []
    for byte in raw:
        char = bytes([byte])
        out.append(b"[" + char + b"]" if char in (b"*", b"?", b"[") else char)
    return path_to_text(b"".join(out))


@settings(max_examples=200, deadline=None)
@given(st.lists(_NAME, min_size=1, max_size=4))
def test_a_literal_glob_matches_exactly_its_own_name(parts: list[bytes]) -> None:
    path = b"/" + b"/".join(parts)
    pattern = "/" + "/".join(_literal_glob(p) for p in parts)
    globs = Globs.of([pattern])
    assert globs.match(path) == pattern
    assert globs.match(path + b"x") is None
    assert Globs.of([pattern + "/**"]).match(path + b"/below") is not None
    assert Globs.of(["/**/" + _literal_glob(parts[-1])]).match(path) is not None


@settings(max_examples=60, deadline=None)
@given(container=_NAME, parts=st.lists(_NAME, min_size=1, max_size=3))
def test_junit_and_sarif_carry_any_name(container: bytes, parts: list[bytes]) -> None:
    import json
    import xml.etree.ElementTree as ET

    from forensics.analyze.compare import Side
    from forensics.analyze.drift import drift_report
    from forensics.render.compare import drift_output

    name = container.decode("utf-8", "replace")
    path = b"/" + b"/".join(parts)
    side = Side("now.o2f", "d", "h", "s", "t", 1, True)
    raw = [Finding("added", name, path, after=_file(0o755), signals=("executable",), message="x.")]
    report = drift_report("no-baseline", None, side, raw, [name], Policy())
    assert report.drifted and report.findings[0].rule == "O2F-DRIFT-002"
    root = ET.fromstring(drift_output(report, "junit"))
    assert [c.get("name") for c in root.iter("testcase")] and list(root.iter("failure"))
    log = json.loads(drift_output(report, "sarif"))
    result = log["runs"][0]["results"][0]
    assert result["ruleId"] == "O2F-DRIFT-002"
    uri = result["locations"][0]["physicalLocation"]["artifactLocation"]["uri"]
    assert all(32 < ord(c) < 127 for c in uri)  # percent-encoded: a valid URI reference
    record = json.loads(drift_output(report, "json"))["findings"][0]
    assert record["path"] == display_path(path)
    text = drift_output(report, "text")
    assert len(text.splitlines()) == 9  # 7 summary lines, a blank line, one finding: no name adds a line
