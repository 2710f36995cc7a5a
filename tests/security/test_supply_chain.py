"""bandit over the package and pip-audit over the installed environment, against the accepted findings in
security/known-findings.toml (docs/security/fuzzing.md).

Both run from pytest, not from the Makefile: `make test` (CI) runs them with everything else, a failure names the
finding and what to do, and the findings file is checked in both directions (a new finding fails; an entry whose
count no longer matches the code fails too).
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import json
import subprocess
import sys
import tomllib
from collections import Counter
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FINDINGS = REPO / "security" / "known-findings.toml"
PACKAGE = "llmrec_platform"


def known() -> dict:
    return tomllib.loads(FINDINGS.read_text(encoding="utf-8"))


@functools.cache
def scopes(path: str) -> list[tuple[int, int, str]]:
    """(first line, last line, dotted name) of every function and class in a file."""
    found = []

    def walk(node, prefix):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
                name = [*prefix, child.name]
                found.append((child.lineno, child.end_lineno, ".".join(name)))
                walk(child, name)
            else:
                walk(child, prefix)

    walk(ast.parse((REPO / path).read_text(encoding="utf-8")), [])
    return found


def scope_of(path: str, line: int) -> str:
    """The innermost function or class around `line`, or `<module>`."""
    around = [s for s in scopes(path) if s[0] <= line <= s[1]]
    return min(around, key=lambda s: s[1] - s[0])[2] if around else "<module>"


def match_bandit(results: list[dict], entries: list[dict]) -> tuple[list[str], list[str]]:
    """(findings no entry accepts, entries whose count differs from the code), each as a line to print."""
    matched: Counter = Counter()
    new = []
    for result in results:
        path = Path(result["filename"]).as_posix()
        scope = scope_of(path, result["line_number"])
        entry = next((i for i, e in enumerate(entries) if e["test"] == result["test_id"]
                      and fnmatch.fnmatch(path, e["path"]) and fnmatch.fnmatch(scope, e.get("scope", "*"))), None)
        if entry is None:
            new.append(f"{result['test_id']} {path}:{result['line_number']} in {scope}: {result['issue_text']}")
        else:
            matched[entry] += 1
    changed = [f"{e['test']} {e['path']} {e.get('scope', '*')}: the entry says {e['count']}, the code has {matched[i]}"
               for i, e in enumerate(entries) if "count" in e and matched[i] != e["count"]]
    return new, changed


def test_the_findings_file_gives_a_reason_for_every_entry():
    findings = known()
    assert set(findings) <= {"bandit", "pip_audit"}, f"{FINDINGS}: unknown sections {set(findings) - {'bandit', 'pip_audit'}}"
    for entry in findings.get("bandit", []):
        assert {"test", "path", "reason"} <= set(entry) <= {"test", "path", "scope", "count", "reason"}, entry
        assert entry["reason"].strip() and entry["test"].startswith("B"), entry
    for entry in findings.get("pip_audit", []):
        assert set(entry) == {"id", "package", "reason"} and entry["reason"].strip(), entry


def test_bandit_finds_nothing_beyond_the_accepted_findings():
    done = subprocess.run([sys.executable, "-m", "bandit", "-r", PACKAGE, "-f", "json", "-q"], cwd=REPO,
                          capture_output=True, text=True, timeout=300)
    report = json.loads(done.stdout)
    assert report["errors"] == [], f"bandit could not scan: {report['errors']}"
    new, changed = match_bandit(report["results"], known().get("bandit", []))
    assert not new, (f"{len(new)} bandit finding(s) not in {FINDINGS.relative_to(REPO)}: fix them, or add an entry "
                     "with the reason they are safe:\n" + "\n".join(new))
    assert not changed, (f"entries of {FINDINGS.relative_to(REPO)} no longer match the code: review the findings, then "
                         "update the count or remove the entry:\n" + "\n".join(changed))


def test_the_bandit_matching_rejects_a_new_finding_and_a_stale_count():
    entries = [{"test": "B608", "path": "pkg/a.py", "scope": "f", "count": 1, "reason": "r"}]
    found = {"test_id": "B608", "filename": "pkg/a.py", "issue_text": "sql"}
    assert match_bandit([], entries) == ([], ["B608 pkg/a.py f: the entry says 1, the code has 0"])
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys.modules[__name__], "scope_of", lambda path, line: "f" if line == 1 else "g")
        assert match_bandit([{**found, "line_number": 1}], entries) == ([], [])
        new, changed = match_bandit([{**found, "line_number": 1}, {**found, "line_number": 9}], entries)
    assert new == ["B608 pkg/a.py:9 in g: sql"] and changed == []


def unaccepted_vulnerabilities(audited: list[dict], entries: list[dict]) -> list[str]:
    """One line per vulnerability pip-audit reported (its JSON `dependencies`) that no entry accepts."""
    accepted = {(e["package"].lower(), e["id"]) for e in entries}
    return [f"{d['name']} {d['version']}: {v['id']} ({', '.join(v.get('aliases', []))}) fixed in "
            f"{', '.join(v.get('fix_versions', [])) or 'no release yet'}"
            for d in audited for v in d.get("vulns", [])
            if not {(d["name"].lower(), i) for i in [v["id"], *v.get("aliases", [])]} & accepted]


def test_a_reported_vulnerability_fails_unless_accepted_by_id_or_alias():
    audited = [{"name": "Jinja2", "version": "2.10", "vulns": [
        {"id": "PYSEC-2019-217", "aliases": ["CVE-2019-10906"], "fix_versions": ["2.10.1"]}]},
               {"name": "requests", "version": "2.32.0", "vulns": []}]
    assert unaccepted_vulnerabilities(audited, []) == ["Jinja2 2.10: PYSEC-2019-217 (CVE-2019-10906) fixed in 2.10.1"]
    assert unaccepted_vulnerabilities(audited, [{"package": "jinja2", "id": "CVE-2019-10906", "reason": "r"}]) == []
    assert len(unaccepted_vulnerabilities(audited, [{"package": "requests", "id": "CVE-2019-10906", "reason": "r"}])) == 1


def test_pip_audit_finds_no_known_vulnerability_in_the_environment():
    done = subprocess.run([sys.executable, "-m", "pip_audit", "--format", "json", "--skip-editable",
                           "--progress-spinner", "off", "--timeout", "20"], cwd=REPO, capture_output=True, text=True,
                          timeout=600)
    assert done.stdout.strip().startswith("{"), f"pip-audit failed (exit {done.returncode}):\n{done.stderr[-3000:]}"
    dependencies = json.loads(done.stdout)["dependencies"]
    audited = [d for d in dependencies if "skip_reason" not in d]
    if not audited:  # the vulnerability service answered for no package: say so, never pass as "nothing found"
        reason = dependencies[0]["skip_reason"] if dependencies else "no packages listed"
        pytest.skip(f"pip-audit could not audit any of the {len(dependencies)} installed packages: the vulnerability "
                    f"service is unreachable from this machine (first: {reason})")
    found = unaccepted_vulnerabilities(audited, known().get("pip_audit", []))
    assert not found, (f"known vulnerabilities in installed packages: upgrade them (pyproject.toml), or accept each in "
                       f"{FINDINGS.relative_to(REPO)} with a reason:\n" + "\n".join(found))
