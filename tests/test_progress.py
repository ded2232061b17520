"""`run_many(progress=True)`: a live bar on stderr when it is a terminal, nothing otherwise; rich only then."""

import fcntl
import io
import os
import pty
import re
import select
import struct
import subprocess
import sys
import termios
import textwrap
import threading
import time
from pathlib import Path

import pytest

from choreograph import Coordinator, Step
from choreograph._progress import Bar, check, track

ROOT = Path(__file__).resolve().parent.parent
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")

#: A batch of 30 runs, every third failing, 10 ms each, drawn with a bar; arguments: ``total=`` or nothing.
CHILD = textwrap.dedent(
    """
    import sys, time
    from choreograph import Coordinator, Step

    def work(x: int) -> int:
        time.sleep(0.01)
        if x % 3 == 0:
            raise ValueError(x)
        return x

    flow = Coordinator[int]([Step("work", work)])
    inputs = range(30) if len(sys.argv) == 1 else iter(range(30))
    total = None if len(sys.argv) == 1 else int(sys.argv[1])
    results = list(flow.run_many(inputs, workers=3, progress=True, total=total))
    print(len(results), sum(r.ok for r in results))
    """
)


def child_env(**extra: str) -> dict[str, str]:
    """The environment of a child Python: the package importable, and measured when the tests are."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), **extra}
    for name in ("NO_COLOR", "FORCE_COLOR", "TTY_COMPATIBLE", "COLUMNS", "LINES"):
        env.pop(name, None)
    if "coverage" in sys.modules and sys.modules["coverage"].Coverage.current() is not None:
        env |= {"COVERAGE_PROCESS_START": str(ROOT / "pyproject.toml"), "COVERAGE_FILE": str(ROOT / ".coverage")}
    return env


def run_on_terminal(args: list[str], *, cwd: Path, env: dict[str, str], columns: int = 160) -> tuple[int, str, str]:
    """Run *args* with stderr on a pseudo-terminal; return the exit status, stdout, and what the terminal showed."""
    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 40, columns, 0, 0))
    child = subprocess.Popen(
        args, cwd=cwd, env={**env, "TERM": "xterm-256color"}, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
        stderr=terminal,
    )  # fmt: skip
    os.close(terminal)
    shown = b""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        ready, _, _ = select.select([controller], [], [], 1)
        if not ready:
            if child.poll() is not None:
                break
            continue
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # the child closed the terminal (EIO on Linux)
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    assert child.stdout is not None
    out = child.stdout.read().decode()
    child.stdout.close()
    return child.wait(timeout=30), out, ANSI.sub("", shown.decode(errors="replace"))


@pytest.mark.parametrize("total", [None, 30], ids=["len", "total="])
def test_on_a_terminal_the_bar_is_drawn_with_the_counts(tmp_path: Path, total: int | None):
    """Under a pseudo-terminal, stderr shows the bar: done of total (from len() or total=), rate, ok and failed."""
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    args = [sys.executable, str(script)] + ([] if total is None else [str(total)])
    status, out, shown = run_on_terminal(args, cwd=tmp_path, env=child_env())

    assert status == 0, shown
    assert out.split() == ["30", "20"]
    assert "30/30" in shown
    assert "20 ok 10 failed" in shown
    assert re.search(r"[\d.,]+/s", shown)
    assert "ETA" in shown
    assert "━" in shown


def test_without_a_terminal_nothing_is_drawn(tmp_path: Path):
    """With stderr a pipe, the results are the same and stderr stays empty."""
    script = tmp_path / "child.py"
    script.write_text(CHILD, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, str(script)], cwd=tmp_path, env=child_env(), capture_output=True, text=True, timeout=60,
        check=False,
    )  # fmt: skip

    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["30", "20"]
    assert done.stderr == ""


def test_without_a_terminal_the_results_pass_through_untouched(capsys: pytest.CaptureFixture[str]):
    """In-process with stderr captured (not a terminal), run_many(progress=True) yields the same results, silently."""
    flow = Coordinator[int]([Step("double", lambda x: x * 2)])

    results = sorted(r.data_bag.get_job_data("double") for r in flow.run_many(range(5), progress=True))

    assert results == [0, 2, 4, 6, 8]
    assert capsys.readouterr().err == ""


class FakeTerminal(io.StringIO):
    """A stderr that says it is a terminal, and keeps what is written to it."""

    def isatty(self) -> bool:
        return True


def fake_terminal(monkeypatch: pytest.MonkeyPatch) -> FakeTerminal:
    """Make stderr a `FakeTerminal` (from the test's body: pytest sets its own stderr after the fixtures)."""
    screen = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", screen)
    monkeypatch.setenv("COLUMNS", "160")
    return screen


def test_closing_the_results_early_stops_the_workers_and_the_bar(monkeypatch: pytest.MonkeyPatch):
    """Leaving the loop early closes the executor's iterator (its workers stop) and draws the last counts."""
    terminal = fake_terminal(monkeypatch)
    flow = Coordinator[int]([Step("work", lambda x: x)])
    results = flow.run_many(iter(range(10_000)), workers=2, progress=True, total=10_000)
    taken = [next(results) for _ in range(3)]
    results.close()

    assert len(taken) == 3
    assert not [t for t in threading.enumerate() if re.fullmatch(r"choreograph-\d+", t.name)]  # run_many's workers
    assert "3 ok 0 failed" in ANSI.sub("", terminal.getvalue())
    assert "/10000" in terminal.getvalue()


def test_the_bar_counts_from_many_threads(monkeypatch: pytest.MonkeyPatch):
    """`Bar.count` is thread-safe: eight threads counting 250 runs each make 2000, of which 1000 failed."""
    terminal = fake_terminal(monkeypatch)
    bar = Bar(2000)

    def count(ok: bool) -> None:
        for _ in range(250):
            bar.count(ok=ok)

    threads = [threading.Thread(target=count, args=(i % 2 == 0,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    bar.close()

    shown = ANSI.sub("", terminal.getvalue())
    assert "2000/2000" in shown
    assert "1000 ok 1000 failed" in shown


def test_an_exception_in_the_runs_closes_the_bar(monkeypatch: pytest.MonkeyPatch):
    """An error raised by the executor reaches the caller, and the bar is stopped (its last line drawn)."""
    terminal = fake_terminal(monkeypatch)

    def broken() -> object:
        yield 1
        raise OSError("the input file went away")

    flow = Coordinator[int]([Step("work", lambda x: x)])
    with pytest.raises(OSError, match="went away"):
        list(flow.run_many(broken(), workers=1, progress=True))
    assert "1 ok 0 failed" in ANSI.sub("", terminal.getvalue())
    assert "/?" in terminal.getvalue()  # no total: neither len() nor total= tells it


def test_a_closed_stream_is_no_terminal():
    """`is_terminal` of a closed stream (isatty raises ValueError) is False."""
    from choreograph._progress import is_terminal

    stream = io.StringIO()
    stream.close()
    assert is_terminal(stream) is False


def test_a_bar_that_is_not_drawn_is_the_executors_own_iterator():
    """Without a terminal, `track` hands back the very iterator it was given: no cost per result."""

    def results() -> object:
        yield from ()

    given = results()
    assert track(given, None) is given  # type: ignore[arg-type]


def test_without_rich_progress_raises_an_import_error_naming_the_extra(monkeypatch: pytest.MonkeyPatch):
    """With rich missing, run_many(progress=True) raises ImportError naming choreograph[cli]; progress=False works."""
    monkeypatch.setitem(sys.modules, "rich", None)
    flow = Coordinator[int]([Step("work", lambda x: x)])

    with pytest.raises(ImportError, match=re.escape("choreograph[cli]")) as caught:
        flow.run_many([1, 2], progress=True)
    assert caught.value.name == "rich"
    assert [r.ok for r in flow.run_many([1, 2], progress=False)] == [True, True]


def test_rich_is_imported_only_to_draw():
    """`import choreograph` and run_many(progress=True) without a terminal never import rich."""
    code = (
        "import sys, choreograph\n"
        "flow = choreograph.Coordinator([choreograph.Step('w', lambda x: x)])\n"
        "assert len(list(flow.run_many([1, 2], progress=True))) == 2\n"
        "print('rich' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], env=child_env(), capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


@pytest.mark.parametrize(
    ("progress", "total", "error"),
    [
        (1, None, TypeError),
        ("yes", None, TypeError),
        (True, 2.5, TypeError),
        (True, True, TypeError),
        (True, -1, ValueError),
    ],
)
def test_bad_progress_options_are_refused(progress: object, total: object, error: type[Exception]):
    """progress= must be a bool and total= an int >= 0 or None, checked when run_many is called."""
    flow = Coordinator[int]([Step("work", lambda x: x)])
    with pytest.raises(error):
        flow.run_many([1], progress=progress, total=total)  # type: ignore[arg-type]
    assert check(False, 0) is False
