"""The README's examples run, in order, as one program (they build on each other)."""

import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_python_block_of_the_readme_runs(tmp_path: Path):
    """Every ```python block of README.md runs without error, in a fresh interpreter and folder."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.DOTALL | re.MULTILINE)
    assert len(blocks) >= 10
    # One module namespace, as a reader pasting the blocks in order would have; the
    # blocks' dataclasses must be importable by name, so the module is registered.
    runner = textwrap.dedent(
        """
        import sys, types
        blocks = {blocks!r}
        module = types.ModuleType("readme")
        sys.modules["readme"] = module
        for index, block in enumerate(blocks, 1):
            exec(compile(block, f"<README block {{index}}>", "exec"), module.__dict__)
        """
    ).format(blocks=blocks)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-c", runner], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
