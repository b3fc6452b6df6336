"""The container image recipe: hadolint-clean, non-root, the right entry point, and a build context that holds
what the build copies. (No Docker engine here: the image itself is built in CI or by operators.)"""

from __future__ import annotations

import fnmatch
import json
import re
from importlib.metadata import entry_points

from deploy_helpers import REPO, run_tool, tool

DOCKERFILE = REPO / "Dockerfile"
#: Rules the Dockerfile disables inline, each with its reason written above it.
ALLOWED_IGNORES = {"DL3008"}


def instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    text = re.sub(r"\\\n\s*", " ", DOCKERFILE.read_text())
    pairs = []
    for line in text.splitlines():
        stripped = line.strip()
        if stripped and not stripped.startswith("#"):
            keyword, _, rest = stripped.partition(" ")
            pairs.append((keyword.upper(), rest.strip()))
    return pairs


def final_stage() -> list[tuple[str, str]]:
    pairs = instructions()
    last_from = max(i for i, (keyword, _) in enumerate(pairs) if keyword == "FROM")
    return pairs[last_from:]


def test_hadolint_finds_nothing():
    result = run_tool([tool("hadolint"), "--format", "json", "--failure-threshold", "style", str(DOCKERFILE)])
    findings = json.loads(result.stdout or "[]")
    report = "\n".join(f"line {f['line']}: {f['code']} {f['level']}: {f['message']}" for f in findings)
    assert result.returncode == 0 and not findings, f"hadolint:\n{report}{result.stderr}"


def test_only_justified_rules_are_ignored():
    lines = DOCKERFILE.read_text().splitlines()
    for number, line in enumerate(lines):
        match = re.match(r"#\s*hadolint ignore=(\S+)", line.strip())
        if match:
            assert set(match.group(1).split(",")) <= ALLOWED_IGNORES, f"line {number + 1}: {line}"
            assert lines[number - 1].lstrip().startswith("#"), f"line {number + 1}: say why above the ignore"


def test_multi_stage_build_on_a_pinned_cuda_base():
    pairs = instructions()
    stages = [rest for keyword, rest in pairs if keyword == "FROM"]
    assert len(stages) >= 2, "build tools must stay out of the runtime image"
    defaults = dict(rest.split("=", 1) for keyword, rest in pairs if keyword == "ARG" and "=" in rest)
    base = defaults["CUDA_IMAGE"]
    name, _, tag = base.rpartition(":")
    assert name.startswith("nvidia/cuda") and tag and tag != "latest", base
    # The torch the image installs is the one the project pins for every machine.
    pinned = re.search(r"^torch==(\S+)$", (REPO / "constraints.txt").read_text(), re.MULTILINE)
    assert pinned and defaults["TORCH_VERSION"] == pinned.group(1)
    # Same CUDA major as the torch build on the default index (CUDA 13 for torch 2.13).
    assert tag.split(".")[0] == "13"


def test_runtime_stage_runs_the_cli_as_a_non_root_user():
    stage = final_stage()
    users = [rest for keyword, rest in stage if keyword == "USER"]
    assert users and users[-1].split(":")[0] == "10001", "the manifests' runAsUser must match"
    assert ("ENTRYPOINT", '["likeness"]') in stage
    assert ("CMD", '["serve", "all"]') in stage
    scripts = {entry.name: entry.value for entry in entry_points(group="console_scripts")}
    assert scripts.get("likeness") == "likeness.cli.main:main", "ENTRYPOINT names the project's console script"
    exposed = {port for keyword, rest in stage if keyword == "EXPOSE" for port in rest.split()}
    assert exposed == {"50051", "9090"}
    assert not any(keyword == "HEALTHCHECK" for keyword, _ in stage), "Kubernetes probes replace it"


def test_open_clip_install_matches_the_makefile():
    """The image installs the tokenizer's vocabulary package the same way `make setup` does."""
    makefile_spec = re.search(r"--no-deps '(open-clip-torch[^']+)'", (REPO / "Makefile").read_text())
    assert makefile_spec, "the Makefile no longer installs open-clip-torch; update the Dockerfile too"
    assert f'--no-deps "{makefile_spec.group(1)}"' in DOCKERFILE.read_text()


def dockerignore_excludes(path: str, patterns: list[str]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    excluded = False
    for pattern in patterns:
        negated = pattern.startswith("!")
        glob = pattern[1:] if negated else pattern
        glob = glob.rstrip("/").replace("**/", "*/")
        if any(fnmatch.fnmatch(candidate, glob) for candidate in candidates):
            excluded = not negated
    return excluded


def test_build_context_holds_what_the_build_copies():
    patterns = [
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    copied = [
        source
        for keyword, rest in instructions()
        if keyword == "COPY" and "--from" not in rest
        for source in rest.split()[:-1]
    ]
    assert copied
    for source in copied:
        source = source.rstrip("/").removeprefix("./")
        assert (REPO / source).exists(), f"COPY {source}: not in the repository"
        assert not dockerignore_excludes(source, patterns), f"COPY {source}: excluded by .dockerignore"
    assert not dockerignore_excludes("services/likeness/server/app.py", patterns)
    for local_state in (".venv/bin/python", ".git/HEAD", "var/storage/x", "tools/node_modules/x", "tests/x.py"):
        assert dockerignore_excludes(local_state, patterns), f"{local_state} would be sent to the build"
    assert dockerignore_excludes("services/likeness/__pycache__/app.cpython-312.pyc", patterns)
