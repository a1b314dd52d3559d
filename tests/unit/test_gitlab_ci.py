"""`.gitlab-ci.yml`: valid for GitLab's own schema, consistent in its jobs, stages, needs and rules,
and every script a job runs is a target of the Makefile."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from unde_infra.model import ROOT

CI_FILE = ROOT / ".gitlab-ci.yml"
MR_EVENT = '$CI_PIPELINE_SOURCE == "merge_request_event"'
DEFAULT_BRANCH = "$CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH"
# Top-level keys that are not jobs (GitLab's reserved keywords).
GLOBAL_KEYS = {"stages", "workflow", "variables", "default", "include", "image", "services", "cache",
               "before_script", "after_script", "spec"}  # fmt: skip
MR_JOBS = {"preview", "diff", "diagram", "pulumi-preview:helsinki", "pulumi-preview:local"}
DEPLOY_JOBS = ("deploy:helsinki", "deploy:local")
CREDENTIALS = ("$PULUMI_BACKEND_URL", "$PULUMI_CONFIG_PASSPHRASE", "$AWS_ACCESS_KEY_ID")


@pytest.fixture(scope="module")
def ci() -> dict[str, Any]:
    return yaml.safe_load(CI_FILE.read_text(encoding="utf-8"))


def jobs(ci: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Every job with its `extends` templates merged in (GitLab merges hashes deeply, the job's
    own keys winning)."""
    def resolved(name: str) -> dict[str, Any]:
        job = ci[name]
        merged: dict[str, Any] = {}
        for parent in _as_list(job.get("extends")):
            merged = _deep_merge(merged, resolved(parent))
        return _deep_merge(merged, {k: v for k, v in job.items() if k != "extends"})

    return {name: resolved(name) for name in ci if name not in GLOBAL_KEYS and not name.startswith(".")}


def _as_list(value: Any) -> list[Any]:
    return [] if value is None else value if isinstance(value, list) else [value]


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    result = dict(base)
    for key, value in over.items():
        result[key] = _deep_merge(result[key], value) if isinstance(value, dict) and isinstance(result.get(key), dict) else value
    return result


def test_gitlab_schema_accepts_the_file() -> None:
    """GitLab's own CI schema (app/assets/javascripts/editor/schema/ci.json, vendored by
    check-jsonschema), through check-jsonschema's CLI."""
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(CI_FILE)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ok -- validation done" in result.stdout


def test_gitlab_schema_rejects_a_broken_job(tmp_path: Path, ci: dict[str, Any]) -> None:
    """The schema check can fail: a misspelt keyword and a bad `when` are refused."""
    broken = {**ci, "preview": {**ci["preview"], "artifact": {"paths": ["x"]}, "when": "sometimes"}}
    path = tmp_path / ".gitlab-ci.yml"
    path.write_text(yaml.safe_dump(broken), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--builtin-schema", "vendor.gitlab-ci", str(path)],
        capture_output=True, text=True, check=False,
    )
    assert result.returncode == 1, result.stdout


def test_every_job_stage_is_declared_and_needs_point_backwards(ci: dict[str, Any]) -> None:
    stages = ci["stages"]
    all_jobs = jobs(ci)
    assert set(all_jobs) >= MR_JOBS | set(DEPLOY_JOBS) | {"test"}
    for name, job in all_jobs.items():
        assert job.get("stage") in stages, f"{name}: stage {job.get('stage')!r} not in {stages}"
        assert job.get("script"), f"{name}: no script"
        for need in job.get("needs", []):
            needed = need["job"] if isinstance(need, dict) else need
            assert needed in all_jobs, f"{name}: needs unknown job {needed}"
            assert stages.index(all_jobs[needed]["stage"]) <= stages.index(job["stage"]), f"{name} needs a later job {needed}"


def _conditions(job: dict[str, Any]) -> list[str]:
    return [rule["if"] for rule in job.get("rules", []) if "if" in rule]


def test_merge_request_jobs_run_only_in_merge_request_pipelines(ci: dict[str, Any]) -> None:
    all_jobs = jobs(ci)
    for name in MR_JOBS:
        conditions = _conditions(all_jobs[name])
        assert conditions, f"{name}: no rules"
        assert all(c.startswith(MR_EVENT) for c in conditions), f"{name}: {conditions}"
    # The real `pulumi preview` runs only where the backend's credentials are configured.
    for stack in ("helsinki", "local"):
        job = all_jobs[f"pulumi-preview:{stack}"]
        assert all(all(v in c for v in CREDENTIALS) for c in _conditions(job))
        assert job["script"] == [f"make pulumi-preview STACK={stack}"]


def test_deploys_are_manual_on_the_default_branch_serialised_helsinki_first(ci: dict[str, Any]) -> None:
    all_jobs = jobs(ci)
    groups = set()
    for name in DEPLOY_JOBS:
        job = all_jobs[name]
        rules = job["rules"]
        assert rules and all(r["if"].startswith(DEFAULT_BRANCH) and r.get("when") == "manual" for r in rules), name
        assert all(all(v in r["if"] for v in CREDENTIALS) for r in rules)
        assert "allow_failure" not in job  # a manual rule then blocks the pipeline until approved
        assert job["stage"] == "deploy"
        groups.add(job["resource_group"])
    assert len(groups) == 1, "one resource group serialises both deploys"
    assert "deploy:helsinki" in all_jobs["deploy:local"]["needs"]
    assert all_jobs["deploy:helsinki"]["script"] == ["make pulumi-up STACK=helsinki"]
    assert all_jobs["deploy:local"]["script"] == ["make pulumi-up STACK=local"]
    # Nothing else runs a deploy.
    for name, job in all_jobs.items():
        if name not in DEPLOY_JOBS:
            assert not any("pulumi-up" in line for line in job["script"]), name


def test_the_diff_runs_after_a_failed_preview_and_keeps_its_reports(ci: dict[str, Any]) -> None:
    job = jobs(ci)["diff"]
    assert job["rules"] == [{"if": MR_EVENT, "when": "always"}]
    assert job["artifacts"]["when"] == "always"
    assert "build/mr/diff.md" in job["artifacts"]["paths"]
    assert jobs(ci)["preview"]["artifacts"]["when"] == "always"


def make_invocations(ci: dict[str, Any]) -> list[tuple[str, str, list[str]]]:
    """(job, target, variable assignments) for every `make` a job's script runs."""
    found = []
    for name, job in jobs(ci).items():
        for line in [*_as_list(ci.get("default", {}).get("before_script")), *job["script"]]:
            words = shlex.split(line)
            if words and words[0] == "make":
                targets = [w for w in words[1:] if "=" not in w and not w.startswith("-")]
                found.append((name, " ".join(targets), [w for w in words[1:] if "=" in w]))
    return found


def test_every_make_target_a_job_runs_exists(ci: dict[str, Any]) -> None:
    """The real make, dry-running each target (`make -n`), says the rule exists."""
    invocations = make_invocations(ci)
    assert {target for _, target, _ in invocations} >= {"test", "mr-preview", "mr-diff", "diagram", "pulumi-preview", "pulumi-up"}
    for job, target, assignments in invocations:
        result = subprocess.run(
            ["make", "-n", "-C", str(ROOT), target, *[a.replace("$CI_MERGE_REQUEST_DIFF_BASE_SHA", "HEAD") for a in assignments]],
            capture_output=True, text=True, check=False,
        )
        assert "No rule to make target" not in result.stderr, f"{job}: {result.stderr}"
        assert result.returncode == 0, f"{job}: make -n {target}: {result.stderr}"


def test_a_missing_make_target_is_caught() -> None:
    result = subprocess.run(["make", "-n", "-C", str(ROOT), "no-such-target"], capture_output=True, text=True, check=False)
    assert result.returncode != 0 and "No rule to make target" in result.stderr


def test_pulumi_cli_is_pinned_and_checked(ci: dict[str, Any]) -> None:
    variables = ci["variables"]
    assert re.fullmatch(r"3\.\d+\.\d+", variables["PULUMI_VERSION"])
    assert re.fullmatch(r"[0-9a-f]{64}", variables["PULUMI_SHA256"])
    # The credentialed jobs install the CLI through make pulumi-cli, which uses both variables.
    recipe = subprocess.run(
        ["make", "-n", "-C", str(ROOT), "pulumi-cli",
         f"PULUMI_VERSION={variables['PULUMI_VERSION']}", f"PULUMI_SHA256={variables['PULUMI_SHA256']}"],
        capture_output=True, text=True, check=True,
    ).stdout
    tarball = f"pulumi-v{variables['PULUMI_VERSION']}-linux-x64.tar.gz"
    assert f"releases/download/v{variables['PULUMI_VERSION']}" in recipe and tarball in recipe
    assert f"echo \"{variables['PULUMI_SHA256']}  $tarball\" | sha256sum --check --strict" in recipe
    assert f"pulumi-{variables['PULUMI_VERSION']}-checksums.txt" in recipe
    for target in ("pulumi-preview", "pulumi-up"):
        dry = subprocess.run(
            ["make", "-n", "-C", str(ROOT), target, "STACK=helsinki", *(f"{k}={variables[k]}" for k in ("PULUMI_VERSION", "PULUMI_SHA256"))],
            capture_output=True, text=True, check=True,
        ).stdout
        assert "sha256sum --check" in dry, f"{target} does not install the checked CLI first"
        assert "--policy-pack policies" in dry


def test_state_backend_workarounds_are_set(ci: dict[str, Any]) -> None:
    """Newer AWS SDKs' default request/response checksums break S3-compatible stores."""
    assert ci["variables"]["AWS_REQUEST_CHECKSUM_CALCULATION"] == "when_required"
    assert ci["variables"]["AWS_RESPONSE_CHECKSUM_VALIDATION"] == "when_required"


def test_mr_note_posts_the_report_to_the_gitlab_api(tmp_path: Path) -> None:
    """`make mr-note` against a stand-in of GitLab's notes endpoint on loopback: one POST to
    /projects/:id/merge_requests/:iid/notes with the token in PRIVATE-TOKEN and the report,
    byte for byte, as `body`; the token is not in the output."""
    import threading
    from http.server import BaseHTTPRequestHandler, HTTPServer
    from urllib.parse import parse_qs

    received: list[tuple[str, str, dict[str, list[str]]]] = []

    class Notes(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 (http.server's naming)
            length = int(self.headers["Content-Length"])
            form = parse_qs(self.rfile.read(length).decode(), keep_blank_values=True)
            received.append((self.path, self.headers.get("PRIVATE-TOKEN", ""), form))
            self.send_response(201)
            self.end_headers()
            self.wfile.write(b'{"id": 1}')

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Notes)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    report = "## unde-infra diff\n\n- changed: `x` & `y` (100% + 1)\n"
    (tmp_path / "diff.md").write_text(report, encoding="utf-8")
    env = {
        "PATH": "/usr/bin:/bin", "UNDE_MR_NOTE_TOKEN": "glpat-secret-value",
        "CI_API_V4_URL": f"http://127.0.0.1:{server.server_port}/api/v4", "CI_PROJECT_ID": "42",
        "CI_MERGE_REQUEST_IID": "7",
    }
    try:
        result = subprocess.run(
            ["make", "--no-print-directory", "-C", str(ROOT), "mr-note", f"MR_DIR={tmp_path}"],
            capture_output=True, text=True, env=env, timeout=30, check=False,
        )
    finally:
        server.shutdown()
        thread.join(timeout=5)
    assert result.returncode == 0, result.stderr
    assert received == [("/api/v4/projects/42/merge_requests/7/notes", "glpat-secret-value", {"body": [report]})]
    assert "glpat-secret-value" not in result.stdout + result.stderr
    assert "posted" in result.stdout


def test_mr_preview_previews_the_merge_base_in_its_own_worktree(tmp_path: Path) -> None:
    """`make mr-preview` with the merge base HEAD: both previews are written, the base's from a
    worktree of that commit, and the worktree is gone afterwards; their diff is then empty
    unless the working tree has uncommitted changes to the program."""
    out = tmp_path / "mr"
    result = subprocess.run(["make", "--no-print-directory", "-C", str(ROOT), "mr-preview", "MR_BASE_SHA=HEAD", f"MR_DIR={out}"],
                            capture_output=True, text=True, timeout=900, check=False)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    for side in ("base", "head"):
        for stack in ("helsinki", "local"):
            assert (out / side / stack / "resources.json").is_file()
    assert not (out / "base-src").exists()
    worktrees = subprocess.run(["git", "-C", str(ROOT), "worktree", "list"], capture_output=True, text=True, check=True).stdout
    assert str(out) not in worktrees
    dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "unde_infra", "components", "config",
                            "__main__.py", "Pulumi.helsinki.yaml", "Pulumi.local.yaml", "policies"],
                           capture_output=True, text=True, check=True).stdout
    if not dirty:
        diff = subprocess.run([sys.executable, "-m", "unde_infra", "diff", str(out / "base"), str(out / "head")],
                              capture_output=True, text=True, cwd=ROOT, check=False)
        assert diff.returncode == 0 and diff.stdout.startswith("no changes"), diff.stdout[:2000]
