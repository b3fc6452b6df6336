"""`likeness prompts ...` against a real `likeness serve gallery` process."""

from __future__ import annotations

import subprocess
import sys


def likeness(server, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "likeness.cli.main", *args, "--address", server.address],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_prompts_record_search_show_templates(server_factory):
    server = server_factory("gallery")
    server.wait_serving(timeout=60)

    recorded = likeness(server, "prompts", "record", "{subject} surfing a huge wave", "--steps", "30", "--tag", "sport")
    assert recorded.returncode == 0, recorded.stderr
    prompt_id = recorded.stdout.split()[1]

    found = likeness(server, "prompts", "search", "surfing wave")
    assert found.returncode == 0, found.stderr
    assert found.stdout.splitlines()[1].startswith(prompt_id)

    shown = likeness(server, "prompts", "show", prompt_id)
    assert '"numInferenceSteps": 30' in shown.stdout

    templates = likeness(server, "prompts", "templates", "--category", "pet")
    assert templates.returncode == 0 and "{subject}" in templates.stdout

    missing = likeness(server, "prompts", "show", "pr-" + "0" * 32)
    assert missing.returncode == 2
    assert missing.stderr.startswith("likeness: error:") and "Traceback" not in missing.stderr
    assert server.terminate() == 0
