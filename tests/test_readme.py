"""The README's Python examples run as written, in order, in a fresh directory."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parent.parent / "README.md"


def test_python_examples_run(tmp_path, monkeypatch, capsys):
    blocks = re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)
    assert len(blocks) >= 2
    monkeypatch.chdir(tmp_path)
    namespace: dict = {"__name__": "readme"}
    for block in blocks:
        exec(compile(block, str(README), "exec"), namespace)  # noqa: S102 - our own README
    assert (tmp_path / "alexnet.dcz").exists() and (tmp_path / "mine.dcz").exists()
    assert re.search(r"^\d+\.\dx$", capsys.readouterr().out, flags=re.M)
    assert namespace["net"].encoder[2].out_features == 10
