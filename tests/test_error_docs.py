from __future__ import annotations

from pathlib import Path

from .error_cases import markdown, run_cases

DOC = Path(__file__).resolve().parent.parent / "docs" / "ERRORS.md"


def test_every_bad_input_is_one_line_exit_1_and_documented_exactly():
    results = run_cases()
    for what, line, code, message in results:
        assert code == 1, (what, code, message)
        assert "\n" not in message and message.startswith("alexcompress: error: "), (what, message)
    assert DOC.read_text() == markdown(results), "docs/ERRORS.md is stale: python -m tests.error_cases > docs/ERRORS.md"
