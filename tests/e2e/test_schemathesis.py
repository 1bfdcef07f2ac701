"""Schemathesis against the real processes: requests generated from the served /schema/ (valid and
invalid ones) for every operation, each answered with no 5xx and with a body as documented.

This runs schemathesis's own engine in-process, the same one as ``make schemathesis`` (examples,
coverage, fuzzing and stateful phases), bounded and reproducible: a fixed seed, at most
MAX_EXAMPLES fuzzed cases per operation, one worker.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

import pytest
import schemathesis
from schemathesis import engine
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import Status, StopReason, events

pytestmark = pytest.mark.e2e

SEED = 20240115
MAX_EXAMPLES = 20
CHECKS = ("not_a_server_error", "response_schema_conformance")


def run_config(base_url: str, api_key: str) -> SchemathesisConfig:
    return SchemathesisConfig.from_dict(
        {
            "seed": SEED,
            "base-url": base_url,
            "headers": {"X-API-Key": api_key},
            "workers": 1,
            "request-timeout": 15,
            "cache": {"enabled": False},  # no .schemathesis/ folder in the work tree
            "generation": {"max-examples": MAX_EXAMPLES, "database": "none"},
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
        }
    )


def describe(recorder: Any, case_id: str, check: Any) -> str:
    """The failing request (as curl) and the server's answer."""
    info = check.failure_info
    interaction = recorder.interactions.get(case_id)
    response = getattr(interaction, "response", None)
    if response is None:
        answer = "no response"
    else:
        body = response.content.decode(errors="replace")
        # Django's debug page: its title names the exception
        title = re.search(r"<title>\s*(.*?)\s*</title>", body, re.S)
        answer = f"HTTP {response.status_code}: " + (" ".join(title.group(1).split()) if title else body[:600])
    return f"[{recorder.label}] {check.name}: {info.failure.title}\n  {info.code_sample}\n  -> {answer}"


def test_every_operation_answers_as_documented(stack) -> None:  # type: ignore[no-untyped-def]
    api_key = stack.register("Schemathesis", "market_maker")
    schema = schemathesis.openapi.from_url(f"{stack.base_url}/schema/", config=run_config(stack.base_url, api_key))
    operations = {f"{op.ok().method.upper()} {op.ok().path}" for op in schema.get_all_operations()}

    tested: set[str] = set()
    cases = 0
    outcomes: Counter[str] = Counter()
    problems: list[str] = []
    stop_reason = None
    for event in engine.from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            recorder = event.recorder
            tested.add(recorder.label)
            cases += len(recorder.cases)
            outcomes[event.status.value] += 1
            for case_id, checks in recorder.checks.items():
                problems += [describe(recorder, case_id, c) for c in checks if c.status == Status.FAILURE]
        elif isinstance(event, events.NonFatalError | events.FatalError):
            problems.append(f"schemathesis error: {getattr(event, 'value', None) or event.exception!r}")
        elif isinstance(event, events.EngineFinished):
            stop_reason = event.stop_reason

    print(f"schemathesis: {len(operations)} operations, {cases} cases, scenarios {dict(outcomes)}, seed {SEED}")
    assert not problems, "\n\n".join(problems[:20])
    assert stop_reason == StopReason.COMPLETED
    assert len(operations) == 14 and operations <= tested, sorted(operations - tested)
    assert cases >= 14 * MAX_EXAMPLES
