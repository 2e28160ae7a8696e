"""The exit codes are one table (kompress_api.exit_codes): the README's and docs/operator.md's tables, every
"`Reason` (exit code N)" in the docs, and the operator's podFailurePolicy all say what the code says."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from kompress_api.exit_codes import ExitCode, non_retriable_codes

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]


def table_rows(path: Path) -> dict[int, tuple[str, str]]:
    """{code: (reason, the rest of its cells)} from every table row of `path` that starts a cell with a code."""
    rows: dict[int, tuple[str, str]] = {}
    for line in path.read_text().splitlines():
        if not line.startswith("|"):
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        for i, cell in enumerate(cells[:-1]):
            reason = re.match(r"`?([A-Z][A-Za-z]+)`?", cells[i + 1])
            if not cell.isdigit() or reason is None:
                continue
            rest = []
            for more in cells[i + 1:]:
                if not more or more.isdigit():
                    break
                rest.append(more)
            rows[int(cell)] = (reason.group(1), " ".join(rest))
    return rows


def expected() -> dict[int, tuple[str, bool]]:
    return {m.code: (m.reason, m.retriable) for m in ExitCode}


@pytest.mark.parametrize("doc", ["README.md", "docs/operator.md"])
def test_the_exit_code_tables_in_the_docs_are_the_code_table(doc):
    rows = table_rows(ROOT / doc)
    assert {code: reason for code, (reason, _) in rows.items()} == {code: reason for code, (reason, _) in expected().items()}
    retried = {code for code, (_, text) in rows.items() if re.search(r"(?<!not )retried", text)}
    assert retried == {code for code, (_, retriable) in expected().items() if retriable}


def test_every_exit_code_the_docs_name_is_the_codes():
    """'`TargetsMatchNothing`, exit 14', '`UnsupportedArchitecture` (exit code 12)', '| 14 `TargetsMatchNothing` |'."""
    by_reason = {m.reason: m.code for m in ExitCode}
    mentions = []
    for path in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        text = path.read_text()
        mentions += [(path.name, reason, int(code)) for reason, code in re.findall(r"`([A-Z][A-Za-z]+)`,? \(?exit(?: code)? (\d+)", text)]
        mentions += [(path.name, reason, int(code)) for code, reason in re.findall(r"(\d+) `([A-Z][A-Za-z]+)`", text)]
    assert len(mentions) >= 8  # the pattern still finds what the docs say
    wrong = [(doc, reason, code) for doc, reason, code in mentions if reason in by_reason and by_reason[reason] != code]
    assert not wrong


def test_sigterm_is_the_tables_terminated_entry_and_retried():
    """The shell's 128 + SIGTERM, what the worker exits with when its pod is deleted (kompress_job.runner)."""
    import signal

    assert ExitCode.from_code(128 + signal.SIGTERM) is ExitCode.TERMINATED
    assert ExitCode.TERMINATED.reason == "Terminated" and ExitCode.TERMINATED.code not in non_retriable_codes()


def test_the_operators_jobs_fail_at_once_on_exactly_the_non_retried_codes():
    from kompress_operator.children import pod_failure_policy

    [fail] = [r for r in pod_failure_policy("worker")["rules"] if r["action"] == "FailJob"]
    assert fail["onExitCodes"]["values"] == non_retriable_codes()
    assert set(non_retriable_codes()) == {m.code for m in ExitCode if not m.retriable and m is not ExitCode.OK}
    assert ExitCode.INTERNAL.code not in non_retriable_codes() and ExitCode.STORAGE_UNREACHABLE.code not in non_retriable_codes()
