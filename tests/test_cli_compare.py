"""`o2f compare` and `o2f drift` end to end: every format, the exit codes, and bad input.

Runs in-process through the console entry point (``run_cli`` from test_cli_analyze), so exit codes
and stderr are the real ones.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.conftest import SAMPLE_TAR
from tests.hosts import ADDED_CONTAINER, ADDED_PATH, EDITED_PATH, REMOVED_CONTAINER, TwoHosts, two_hosts
from tests.test_cli_analyze import run_cli
from tests.test_compare import write_other_version

REPO = Path(__file__).resolve().parents[1]
SAMPLE_POLICY = REPO / "samples" / "drift-policy.toml"


@pytest.fixture(scope="module")
def hosts(docker_a_root: Path, tmp_path_factory: pytest.TempPathFactory) -> TwoHosts:
    return two_hosts(docker_a_root, tmp_path_factory.mktemp("cli-hosts"))


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from forensics import api

    if not SAMPLE_TAR.exists():
        pytest.skip("samples/docker-sample.tar.gz is missing")
    out = tmp_path_factory.mktemp("cli-sample") / "sample.o2f"
    api.collect(str(SAMPLE_TAR), str(out), force=True)
    return out


def o2f(*args: object) -> tuple[int, bytes, str]:
    return run_cli(*(str(a) for a in args))


def one_sentence(err: str) -> str:
    """Bad input: exactly one line on stderr, `o2f: ...`, no traceback."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("o2f: ") and "Traceback" not in err
    return lines[0]


# -- compare ------------------------------------------------------------------------------------


def test_compare_table_summary_first(hosts: TwoHosts) -> None:
    code, out, err = o2f("compare", hosts.a, hosts.b)
    assert code == 0, err
    text = out.decode()
    assert text.index("images only in A") < text.index(EDITED_PATH)  # summary, then details
    for needle in (EDITED_PATH, ADDED_PATH, REMOVED_CONTAINER, "containers only in A"):
        assert needle in text


def test_compare_json_structure(hosts: TwoHosts) -> None:
    code, out, err = o2f("compare", hosts.a, hosts.b, "--format", "json")
    assert code == 0, err
    doc = json.loads(out)
    assert set(doc) == {"a", "b", "summary", "images", "layers", "containers"}
    assert doc["a"]["path"] == str(hosts.a) and doc["b"]["digest"]
    assert doc["summary"]["layers"]["changed"] == 1
    changed = doc["layers"]["changed"]
    assert [
        (layer["chain_id"].startswith("sha256:"), [p["path"] for p in layer["paths"]]) for layer in changed
    ] == [(True, [EDITED_PATH])]
    path = changed[0]["paths"][0]
    assert path["difference"] == "content" and path["a"]["blake3"] != path["b"]["blake3"]
    assert [c["name"] for c in doc["containers"]["only_in_a"]] == [REMOVED_CONTAINER]
    web = next(m for m in doc["containers"]["matched"] if m["a"]["name"] == ADDED_CONTAINER)
    added = [p for p in web["paths"] if p["explained_by"] is None]
    assert [(p["path"], p["difference"], p["origin"], p["a"]) for p in added] == [
        (ADDED_PATH, "only-in-b", "upper", None)
    ]
    assert [(c["path"], c["difference"], c["b"]["change"]) for c in web["changes"]] == [
        (ADDED_PATH, "only-in-b", "added")
    ]


def test_compare_csv(hosts: TwoHosts) -> None:
    code, out, err = o2f("compare", hosts.a, hosts.b, "-f", "csv")
    assert code == 0, err
    rows = list(csv.DictReader(io.StringIO(out.decode(), newline="")))
    scopes = {
        (r["scope"], r["difference"], r["path"] or r["container_a"]) for r in rows if not r["explained_by"]
    }
    assert scopes == {
        ("layer-path", "content", EDITED_PATH),
        ("container", "only-in-a", REMOVED_CONTAINER),
        ("container-path", "only-in-b", ADDED_PATH),
        ("change-report", "only-in-b", ADDED_PATH),
    }


def test_compare_identical_snapshots_prints_zeros(hosts: TwoHosts) -> None:
    code, out, _ = o2f("compare", hosts.a, hosts.b_same, "-f", "json")
    assert code == 0
    doc = json.loads(out)
    assert doc["layers"]["changed"] == [] and doc["containers"]["only_in_a"] == []
    assert all(not m["paths"] and not m["changes"] for m in doc["containers"]["matched"])


def test_compare_pair_option(hosts: TwoHosts) -> None:
    code, out, err = o2f("compare", hosts.a, hosts.b, "--pair", "a-web=a-worker", "-f", "json")
    assert code == 0, err
    matched = {(m["a"]["name"], m["b"]["name"]) for m in json.loads(out)["containers"]["matched"]}
    assert ("a-web", "a-worker") in matched


# -- drift -------------------------------------------------------------------------------------


def test_drift_exits_1_and_names_the_three_things(hosts: TwoHosts) -> None:
    code, out, err = o2f("drift", hosts.a, hosts.b)
    assert code == 1, err
    text = out.decode()
    first = text.splitlines()[0]
    assert first.startswith("o2f: ") is False and "DRIFT - 3 failures" in first
    for needle in (EDITED_PATH, ADDED_PATH, f"container {REMOVED_CONTAINER}"):
        assert needle in text
    assert text.index("by kind") < text.index(ADDED_PATH)  # summary first


@pytest.mark.parametrize("fmt", ["text", "json", "junit", "sarif"])
def test_drift_exits_0_on_the_unchanged_tree(hosts: TwoHosts, fmt: str) -> None:
    code, out, err = o2f("drift", hosts.a, hosts.a_again, "--format", fmt)
    assert code == 0, err
    assert out.strip()
    code, _, err = o2f("drift", hosts.a, hosts.b_same, "--format", fmt)
    assert code == 0, err


def test_drift_ignore_option(hosts: TwoHosts) -> None:
    code, out, _ = o2f(
        "drift", hosts.a, hosts.b, "--ignore", "/srv/data/**", "--ignore", EDITED_PATH, "-f", "json"
    )
    assert code == 1
    doc = json.loads(out)
    assert [(f["kind"], f["container"]) for f in doc["findings"]] == [
        ("container-removed", REMOVED_CONTAINER)
    ]
    assert doc["summary"]["ignored"] == 2
    assert doc["policy"]["ignore"] == ["/srv/data/**", EDITED_PATH]


def test_drift_policy_option(hosts: TwoHosts, tmp_path: Path) -> None:
    policy = tmp_path / "gate.toml"
    policy.write_text(
        f'skip_containers = ["{REMOVED_CONTAINER}"]\n'
        "[[rule]]\n"
        'id = "DATA"\nwhen = "any-change"\nlevel = "warning"\npaths = ["/srv/data/**"]\n'
        "[[rule]]\n"
        'id = "LAYER"\nwhen = "image-layer-changed"\nlevel = "warning"\n'
    )
    code, out, err = o2f("drift", hosts.a, hosts.b, "--policy", policy, "-f", "json")
    assert code == 0, err  # warnings only
    doc = json.loads(out)
    assert doc["verdict"] == "no drift"
    assert sorted((f["rule"], f["level"]) for f in doc["findings"]) == [
        ("DATA", "warning"),
        ("LAYER", "warning"),
    ]
    assert {c["name"]: c["status"] for c in doc["containers"]}[REMOVED_CONTAINER] == "skipped"
    assert doc["policy"]["source"] == str(policy)


def test_drift_junit_parses_with_a_failure(hosts: TwoHosts) -> None:
    code, out, _ = o2f("drift", hosts.a, hosts.b, "--format", "junit")
    assert code == 1
    root = ET.fromstring(out)
    assert root.tag == "testsuites"
    cases = {c.get("name"): c for c in root.iter("testcase")}
    assert set(cases) == {"a-batch", "a-fresh", "a-idle", "a-web", "a-worker", "images and image layers"}
    web = cases[ADDED_CONTAINER].find("failure")
    assert web is not None and ADDED_PATH in (web.text or "") and EDITED_PATH in (web.text or "")
    assert "baseline only" in (cases[REMOVED_CONTAINER].find("failure").text or "")  # type: ignore[union-attr]
    suite = root.find("testsuite")
    assert suite is not None and suite.get("failures") == str(len(cases))


def test_drift_junit_clean_and_skipped(hosts: TwoHosts, tmp_path: Path) -> None:
    policy = tmp_path / "skip.toml"
    policy.write_text('skip_containers = ["a-idle"]\n')
    code, out, _ = o2f("drift", hosts.a, hosts.a_again, "-f", "junit", "--policy", policy)
    assert code == 0
    root = ET.fromstring(out)
    assert not list(root.iter("failure"))
    skipped = [c.get("name") for c in root.iter("testcase") if c.find("skipped") is not None]
    assert skipped == ["a-idle"]


def test_drift_sarif(hosts: TwoHosts) -> None:
    code, out, _ = o2f("drift", hosts.a, hosts.b, "--format", "sarif")
    assert code == 1
    log = json.loads(out)
    assert log["version"] == "2.1.0" and log["$schema"].endswith("sarif-2.1.0.json")
    run = log["runs"][0]
    driver = run["tool"]["driver"]
    assert driver["name"] == "o2f" and driver["version"]
    rule_ids = [r["id"] for r in driver["rules"]]
    assert sorted(rule_ids) == [f"O2F-DRIFT-00{n}" for n in range(1, 6)]
    _, json_out, _ = o2f("drift", hosts.a, hosts.b, "--format", "json")
    findings = json.loads(json_out)["findings"]
    assert len(run["results"]) == len(findings) == 3  # one result per finding
    for result, finding in zip(run["results"], findings, strict=True):
        assert result["ruleId"] == finding["rule"] and rule_ids[result["ruleIndex"]] == result["ruleId"]
        assert result["level"] == "error" and result["message"]["text"] == finding["message"]
        assert result["partialFingerprints"]["o2fDrift/v1"] == finding["fingerprint"]
    uris = {
        loc["physicalLocation"]["artifactLocation"]["uri"]
        for r in run["results"]
        for loc in r["locations"]
        if "physicalLocation" in loc
    }
    assert uris == {EDITED_PATH.lstrip("/"), ADDED_PATH.lstrip("/")}
    added = next(r for r in run["results"] if r["properties"]["container"] == ADDED_CONTAINER)
    expected = hashlib.sha256(f"O2F-DRIFT-001\0{ADDED_CONTAINER}\0{ADDED_PATH}".encode()).hexdigest()
    assert added["partialFingerprints"]["o2fDrift/v1"] == expected


def test_sarif_fingerprints_are_stable_across_runs_and_hosts(hosts: TwoHosts, tmp_path: Path) -> None:
    """Two runs, and a second collection of host B (another digest and capture time): same fingerprints."""
    from forensics import api

    again = tmp_path / "host-b-again.o2f"
    api.collect(str(hosts.host_b.root), str(again), force=True)

    def prints(current: Path) -> list[str]:
        _, out, _ = o2f("drift", hosts.a, current, "-f", "sarif")
        return sorted(r["partialFingerprints"]["o2fDrift/v1"] for r in json.loads(out)["runs"][0]["results"])

    first = prints(hosts.b)
    assert first == prints(hosts.b) == prints(again)
    assert len(set(first)) == len(first)


# -- the bundled sample (what the --help examples run on) -------------------------------------------


@pytest.mark.parametrize("fmt", ["text", "json", "junit", "sarif"])
def test_no_baseline_on_the_sample(sample: Path, fmt: str) -> None:
    code, out, err = o2f("drift", sample, "--no-baseline", "-f", fmt)
    assert code == 1, err
    if fmt == "json":
        doc = json.loads(out)
        assert doc["mode"] == "no-baseline" and doc["baseline"] is None
        assert {c["name"]: c["status"] for c in doc["containers"]} == {
            "s-batch": "drift",
            "s-fresh": "clean",
            "s-web": "drift",
        }
        names = [f for f in doc["findings"] if f["path"] == "/srv/web/bad\\xff.txt"]
        assert names and names[0]["path_bytes"]  # raw bytes kept in machine formats
    elif fmt == "junit":
        cases = [c.get("name") for c in ET.fromstring(out).iter("testcase")]
        assert cases == ["s-batch", "s-fresh", "s-web"]  # no image test case without a baseline
    elif fmt == "sarif":
        assert json.loads(out)["runs"][0]["results"]
    else:
        assert "/srv/web/new\\nline.txt" in out.decode()  # a newline in a name cannot fake a line


def test_sample_policy_on_the_sample(sample: Path) -> None:
    code, out, err = o2f("drift", sample, "--no-baseline", "--policy", SAMPLE_POLICY, "-f", "json")
    assert code == 1, err
    doc = json.loads(out)
    levels = {(f["path"], f["level"]) for f in doc["findings"]}
    assert ("/srv/data/ctr-added.txt", "warning") in levels
    assert ("/etc/passwd", "failure") in levels
    assert {c["name"]: c["status"] for c in doc["containers"]}["s-fresh"] == "skipped"


def test_the_whole_sample_allowlisted_passes(sample: Path) -> None:
    code, out, _ = o2f("drift", sample, "--no-baseline", "--ignore", "/**")
    assert code == 0
    assert out.decode().startswith("o2f drift: no drift")


# -- bad input: one sentence, exit 2 --------------------------------------------------------------


def test_same_snapshot(hosts: TwoHosts, tmp_path: Path) -> None:
    for command in ("compare", "drift"):
        code, out, err = o2f(command, hosts.a, hosts.a)
        assert code == 2 and out == b""
        assert "the same snapshot" in one_sentence(err)
    copy = tmp_path / "copy.o2f"
    shutil.copyfile(hosts.a, copy)
    code, _, err = o2f("compare", hosts.a, copy)
    assert code == 2 and "A and B are the same snapshot" in one_sentence(err)


def test_different_schema_versions(hosts: TwoHosts, tmp_path: Path) -> None:
    other = write_other_version(hosts.b, tmp_path / "v1.o2f", "1")
    for command in ("compare", "drift"):
        code, out, err = o2f(command, hosts.a, other)
        assert code == 2 and out == b""
        assert "schema version 1" in one_sentence(err)


def test_missing_policy_file(hosts: TwoHosts, tmp_path: Path) -> None:
    missing = tmp_path / "missing.toml"
    code, out, err = o2f("drift", hosts.a, hosts.b, "--policy", missing)
    assert code == 2 and out == b""
    assert one_sentence(err) == f"o2f: policy file {missing} does not exist."


def test_policy_with_an_unknown_key(hosts: TwoHosts, tmp_path: Path) -> None:
    policy = tmp_path / "typo.toml"
    policy.write_text('ignore = ["/tmp/**"]\nskip_container = ["a-idle"]\n')
    code, out, err = o2f("drift", hosts.a, hosts.b, "--policy", policy)
    assert code == 2 and out == b""
    line = one_sentence(err)
    assert "'skip_container'" in line and str(policy) in line


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--no-baseline",), "--no-baseline checks one snapshot"),
        (("--pair", "a-web"), None),
    ],
)
def test_usage_errors(hosts: TwoHosts, args: tuple[str, ...], message: str | None) -> None:
    command = "drift" if message else "compare"
    code, out, err = o2f(command, hosts.a, hosts.b, *args)
    assert code == 2 and out == b""
    line = one_sentence(err)
    assert (message or "A=B") in line


def test_drift_needs_two_snapshots_or_no_baseline(hosts: TwoHosts) -> None:
    code, _, err = o2f("drift", hosts.a)
    assert code == 2 and "needs BASELINE and CURRENT" in one_sentence(err)


def test_unknown_format_is_a_usage_error(hosts: TwoHosts) -> None:
    code, _, _ = o2f("drift", hosts.a, hosts.b, "--format", "table")
    assert code == 2
    code, _, _ = o2f("compare", hosts.a, hosts.b, "--format", "sarif")
    assert code == 2
