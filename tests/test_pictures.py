"""Pictures: `Coordinator.graph` (Mermaid and DOT), `RunResult.timeline` (a Mermaid gantt), the guide's pictures."""

import functools
import html
import importlib.util
import math
import os
import pickle
import re
import shutil
import subprocess
import textwrap
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import tenacity

from choreograph import Call, Coordinator, DataBag, JobFailed, MemoryStore, Parallel, Retry, RunResult, Skip, Step
from choreograph._core.result import Finished, RawCall
from choreograph._core.timeline import MIN_SHARE

ROOT = Path(__file__).resolve().parent.parent
KINDS = ["mermaid", "dot"]


# -- the flows drawn ---------------------------------------------------------------


def is_new(order: object) -> None:
    pass


def validate(order: object) -> int:
    return 1


def check_credit(order: object) -> str:
    return "hold"


def release_credit(order: object) -> None:
    pass


def reserve_stock(order: object) -> int:
    return 9


def release_stock(order: object) -> None:
    pass


def book(order: object) -> str:
    return "booked"


def orders() -> Coordinator[object]:
    """The guide's order flow: validate (with a precheck); credit and reserve side by side, each undone; book."""
    return Coordinator(
        [
            Step("validate", validate, is_new),
            Parallel(
                "checks",
                Step("credit", check_credit, compensate=release_credit),
                Step("reserve", reserve_stock, compensate=release_stock, retry=Retry(attempts=3)),
            ),
            Step("book", book, retry=Retry(attempts=2), timeout=5),
        ]
    )


# -- reading the pictures back -------------------------------------------------------


@dataclass
class Box:
    shape: str  # terminal, step, precheck, undo, circle
    label: str
    notes: str = ""
    cluster: str | None = None  # the id of the innermost group holding it
    style: str = ""  # Mermaid's class, DOT's fill colour


@dataclass
class Drawn:
    """A picture read back: the same model from either format."""

    boxes: dict[str, Box] = field(default_factory=dict[str, Box])
    clusters: dict[str, tuple[str, str | None]] = field(default_factory=dict[str, tuple[str, str | None]])
    edges: list[tuple[str, str, bool, str]] = field(default_factory=list[tuple[str, str, bool, str]])  # dashed, label

    def by_label(self, label: str, shape: str | None = None) -> str:
        found = [ident for ident, box in self.boxes.items() if box.label == label and shape in (None, box.shape)]
        assert len(found) == 1, (label, found)
        return found[0]

    def edge(self, source: str, target: str) -> tuple[bool, str]:
        found = [(dashed, label) for s, t, dashed, label in self.edges if (s, t) == (source, target)]
        assert len(found) == 1, (source, target, self.edges)
        return found[0]

    def successors(self, source: str, *, dashed: bool | None = None) -> set[str]:
        return {t for s, t, d, _ in self.edges if s == source and dashed in (None, d)}

    def clusters_of(self, ident: str) -> list[str]:
        """The labels of the groups holding *ident*, innermost first."""
        found: list[str] = []
        cluster = self.boxes[ident].cluster
        while cluster is not None:
            label, cluster = self.clusters[cluster]
            found.append(label)
        return found


IDENT = r"[A-Za-z][A-Za-z0-9_]*"
MERMAID_SHAPES = {"([": "terminal", "[": "step", "{": "precheck", "[/": "undo", "((": "circle"}
MERMAID_CLOSE = {"([": "])", "[": "]", "{": "}", "[/": "/]", "((": "))"}
MERMAID_NODE = re.compile(
    rf'(?P<id>{IDENT})(?P<open>\(\[|\[/|\(\(|\[|\{{)"(?P<label>[^"]*)"(?P<close>\]\)|/\]|\)\)|\]|\}})'
)
MERMAID_EDGE = re.compile(rf"(?P<source>{IDENT}) (?P<arrow>-->|-\.->)(?:\|(?P<label>[^|\"]*)\|)? (?P<target>{IDENT})")
MERMAID_NOTES = re.compile(r"(?P<label>.*)<br/><small>(?P<notes>.*)</small>")


def mermaid_unescape(text: str) -> str:
    """Mermaid's entity codes (``#quot;``, ``#35;``) as the characters they stand for."""
    return re.sub(
        r"#(\w+);", lambda found: html.unescape(f"&#{found[1]};" if found[1].isdigit() else f"&{found[1]};"), text
    )


def read_mermaid(text: str) -> Drawn:
    """Read a flowchart back; every line must be one this reader knows, or the test fails."""
    lines = text.splitlines()
    assert lines[0] == "flowchart TD"
    drawn, open_groups, classes = Drawn(), list[str](), dict[str, str]()
    for line in lines[1:]:
        stripped = line.strip()
        if found := re.fullmatch(rf'subgraph (?P<id>{IDENT})\["(?P<label>[^"]*)"\]', stripped):
            drawn.clusters[found["id"]] = (mermaid_unescape(found["label"]), open_groups[-1] if open_groups else None)
            open_groups.append(found["id"])
        elif stripped == "end":
            open_groups.pop()
        elif found := MERMAID_NODE.fullmatch(stripped):
            assert found["close"] == MERMAID_CLOSE[found["open"]], line
            label, notes = found["label"], ""
            if parts := MERMAID_NOTES.fullmatch(label):
                label, notes = parts["label"], mermaid_unescape(parts["notes"])
            assert "<" not in label, line  # markup is the picture's own, never a name's
            box = Box(
                MERMAID_SHAPES[found["open"]], mermaid_unescape(label), notes, open_groups[-1] if open_groups else None
            )
            assert found["id"] not in drawn.boxes, line
            drawn.boxes[found["id"]] = box
        elif found := MERMAID_EDGE.fullmatch(stripped):
            dashed = found["arrow"] == "-.->"
            drawn.edges.append((found["source"], found["target"], dashed, found["label"] or ""))
        elif found := re.fullmatch(r"classDef (\w+) ([\w-]+:[^,]+(?:,[\w-]+:[^,]+)*)", stripped):
            classes[found[1]] = found[2]
        elif found := re.fullmatch(rf"class ((?:{IDENT},)*{IDENT}) (\w+)", stripped):
            assert found[2] in classes, line
            for ident in found[1].split(","):
                drawn.boxes[ident].style = found[2]
        else:
            pytest.fail(f"a line the reader does not know: {line!r}")
    assert not open_groups
    return drawn


DOT_VALUE = r'"(?:[^"\\]|\\.)*"|<(?:[^<>]|<[^<>]*>)*>|[^,\s\]]+'
DOT_ATTR = re.compile(rf"(\w+)=({DOT_VALUE})")
DOT_SHAPES = {"oval": "terminal", "box": "step", "diamond": "precheck", "parallelogram": "undo", "circle": "circle"}


def dot_attrs(text: str) -> dict[str, str]:
    found = dict(DOT_ATTR.findall(text))
    assert ", ".join(f"{key}={value}" for key, value in found.items()) == text, text  # nothing else in the list
    return found


def dot_string(value: str) -> str:
    """A DOT value as its text: a quoted string unescaped, or an HTML-like label's text."""
    if value.startswith('"'):
        return re.sub(r"\\(.)", lambda found: "\n" if found[1] == "n" else found[1], value[1:-1])
    return value


def dot_box(attributes: str, cluster: str | None) -> Box:
    """A node statement's box: its label (an HTML-like one holds the notes), shape and fill."""
    attrs = dot_attrs(attributes)
    label, notes = dot_string(attrs["label"]), ""
    if parts := re.fullmatch(r'<(?P<label>.*)<BR/><FONT POINT-SIZE="9">(?P<notes>.*)</FONT>>', label):
        label, notes = html.unescape(parts["label"]), html.unescape(parts["notes"])
    return Box(DOT_SHAPES[attrs["shape"]], label, notes, cluster, dot_string(attrs.get("fillcolor", "")))


def read_dot(text: str) -> Drawn:
    """Read a digraph back; every line must be one this reader knows, or the test fails."""
    lines = text.splitlines()
    assert lines[:4] == [
        'digraph "flow" {',
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica", fontsize=12];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    assert lines[-1] == "}"
    drawn, open_groups, level = Drawn(), list[str](), list[tuple[str, str]]()
    for line in lines[4:-1]:
        stripped = line.strip()
        if found := re.fullmatch(rf'subgraph "cluster_(?P<id>{IDENT})" \{{', stripped):
            drawn.clusters[found["id"]] = ("", open_groups[-1] if open_groups else None)
            open_groups.append(found["id"])
        elif found := re.fullmatch(rf"label=({DOT_VALUE});", stripped):
            drawn.clusters[open_groups[-1]] = (dot_string(found[1]), drawn.clusters[open_groups[-1]][1])
        elif stripped in ('style="rounded,dashed";', "}"):
            assert open_groups
            if stripped == "}":
                open_groups.pop()
        elif found := re.fullmatch(rf'"(?P<id>{IDENT})" \[(?P<attrs>.*)\];', stripped):
            assert found["id"] not in drawn.boxes, line
            drawn.boxes[found["id"]] = dot_box(found["attrs"], open_groups[-1] if open_groups else None)
        elif found := re.fullmatch(rf'"(?P<s>{IDENT})" -> "(?P<t>{IDENT})"(?: \[(?P<attrs>.*)\])?;', stripped):
            attrs = dot_attrs(found["attrs"] or "")
            label = dot_string(attrs.get("label", '""'))
            drawn.edges.append((found["s"], found["t"], attrs.get("style") == "dashed", label))
        elif found := re.fullmatch(rf'\{{ rank=same; "({IDENT})"; "({IDENT})"; \}}', stripped):
            level.append((found[1], found[2]))
        else:
            pytest.fail(f"a line the reader does not know: {line!r}")
    assert not open_groups
    assert sorted(undo for _, undo in level) == sorted(i for i, box in drawn.boxes.items() if box.shape == "undo")
    assert all(drawn.edge(step, undo)[0] for step, undo in level)  # each undo node level with its step
    return drawn


def read(kind: str, text: str) -> Drawn:
    assert text.endswith("\n")
    return read_mermaid(text) if kind == "mermaid" else read_dot(text)


# -- graph ------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_the_order_flow_goes_start_precheck_validate_fork_checks_join_book_end(kind: str):
    """Validate -> fork -> credit and reserve side by side -> join -> book -> end; the precheck's skip goes around."""
    drawn = read(kind, orders().graph(kind))
    start, end = drawn.by_label("start", "terminal"), drawn.by_label("end", "terminal")
    precheck, validate_ = drawn.by_label("is_new?", "precheck"), drawn.by_label("validate", "step")
    fork, join = drawn.by_label("fork", "circle"), drawn.by_label("join", "circle")
    credit, reserve, book_ = (drawn.by_label(name, "step") for name in ("credit", "reserve", "book"))

    assert drawn.successors(start) == {precheck}
    assert drawn.edge(precheck, validate_) == (False, "ok")
    assert drawn.edge(precheck, fork) == (True, "skip")  # a failed precheck skips the job, the run goes on
    assert drawn.successors(validate_, dashed=False) == {fork}
    assert drawn.successors(fork) == {credit, reserve}
    assert drawn.successors(credit, dashed=False) == drawn.successors(reserve, dashed=False) == {join}
    assert drawn.successors(join) == {book_}
    assert drawn.successors(book_) == {end}
    assert drawn.successors(end) == set()
    assert len(drawn.edges) == 12  # nothing else: 10 arrows of the flow, 2 undo edges

    assert [drawn.clusters_of(ident) for ident in (fork, credit, reserve, join)] == [["checks"]] * 4
    assert [drawn.clusters_of(ident) for ident in (start, precheck, validate_, book_, end)] == [[]] * 5


@pytest.mark.parametrize("kind", KINDS)
def test_compensations_are_dashed_undo_edges_to_their_own_nodes(kind: str):
    """Each compensation: a dashed ``undo`` edge from its step to a node named after the compensating function."""
    drawn = read(kind, orders().graph(kind))
    for step, compensation in (("credit", "release_credit"), ("reserve", "release_stock")):
        undo = drawn.by_label(compensation, "undo")
        assert drawn.edge(drawn.by_label(step, "step"), undo) == (True, "undo")
        assert drawn.successors(undo) == set()
        assert drawn.clusters_of(undo) == ["checks"]
        assert drawn.boxes[undo].style in ("undo", "#f6f6f6")
    assert sum(box.shape == "undo" for box in drawn.boxes.values()) == 2
    assert drawn.boxes[drawn.by_label("is_new?")].style in ("precheck", "#fff4d6")


@pytest.mark.parametrize("kind", KINDS)
def test_retries_and_timeouts_are_noted_small_under_the_name(kind: str):
    """``3 attempts``, ``timeout 5 s``: a step's options under its name; a step without them has no notes."""
    drawn = read(kind, orders().graph(kind))
    notes = {box.label: box.notes for box in drawn.boxes.values() if box.shape == "step"}
    assert notes == {"validate": "", "credit": "", "reserve": "3 attempts", "book": "2 attempts · timeout 5 s"}


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_of_option_has_its_note(kind: str):
    """Retrying prechecks, tenacity and other policies, fractional timeouts, compensate_failed, max_workers."""

    class Patient:
        prechecks = False

        def delay(self, *_: object) -> float | None:
            return None

    flow = Coordinator(
        [
            Step("a", validate, retry=Retry(attempts=4, prechecks=True), timeout=0.25),
            Step(
                "b",
                validate,
                retry=tenacity.Retrying(stop=tenacity.stop_after_attempt(2)),
                compensate=functools.partial(release_stock),
            ),
            Step("c", validate, retry=Patient()),
            Step("d", validate, lambda order: None, compensate=lambda order: None, compensate_failed=True),
            Parallel("g", Step("e", validate), Step("f", validate), max_workers=1),
        ]
    )
    drawn = read(kind, flow.graph(kind))
    notes = {box.label: box.notes for box in drawn.boxes.values() if box.shape == "step"}
    assert notes == {
        "a": "4 attempts, precheck too · timeout 0.25 s",
        "b": "retry (tenacity)",
        "c": "retry",
        "d": "",
        "e": "",
        "f": "",
    }
    d = drawn.by_label("d", "step")
    assert drawn.edge(drawn.by_label("precheck?", "precheck"), d) == (False, "ok")  # a lambda is named by its role
    assert drawn.edge(d, drawn.by_label("compensate", "undo")) == (True, "undo, also on failure")
    assert drawn.edge(drawn.by_label("b", "step"), drawn.by_label("partial", "undo")) == (True, "undo")  # its type
    assert {label for label, _ in drawn.clusters.values()} == {"g · at most 1 at once"}


@pytest.mark.parametrize("kind", KINDS)
def test_groups_nest_and_branches_of_several_steps_run_in_order(kind: str):
    """A branch is a column of its steps; a group in a branch is a box in the box, from its own fork to its own join."""
    flow = Coordinator(
        [
            Parallel(
                "outer",
                [Step("a1", validate), Step("a2", validate, is_new)],
                [
                    Step("b1", validate),
                    Parallel("inner", Step("c", validate), [Step("d1", validate), Step("d2", book)]),
                ],
            )
        ]
    )
    drawn = read(kind, flow.graph(kind))
    a1, a2, b1, c, d1, d2 = (drawn.by_label(name, "step") for name in ("a1", "a2", "b1", "c", "d1", "d2"))
    forks = [ident for ident, box in drawn.boxes.items() if box.label == "fork"]
    joins = [ident for ident, box in drawn.boxes.items() if box.label == "join"]
    outer_fork, inner_fork = sorted(forks, key=lambda ident: len(drawn.clusters_of(ident)))
    outer_join, inner_join = sorted(joins, key=lambda ident: len(drawn.clusters_of(ident)))
    precheck = drawn.by_label("is_new?")

    assert drawn.successors(drawn.by_label("start")) == {outer_fork}
    assert drawn.successors(outer_fork) == {a1, b1}
    assert drawn.successors(a1) == {precheck}
    assert drawn.successors(precheck) == {a2, outer_join}  # ok, and skip to the end of the branch
    assert drawn.successors(a2) == {outer_join}
    assert drawn.successors(b1) == {inner_fork}
    assert drawn.successors(inner_fork) == {c, d1}
    assert drawn.successors(d1) == {d2}
    assert drawn.successors(c) == drawn.successors(d2) == {inner_join}
    assert drawn.successors(inner_join) == {outer_join}
    assert drawn.successors(outer_join) == {drawn.by_label("end")}

    assert drawn.clusters_of(a2) == ["outer"]
    assert drawn.clusters_of(d2) == drawn.clusters_of(inner_fork) == ["inner", "outer"]
    assert drawn.clusters_of(inner_join) == ["inner", "outer"]
    assert drawn.clusters_of(outer_join) == ["outer"]


NASTY = [
    "end",
    "graph",
    "subgraph",
    "flowchart",
    "class",
    "classDef",
    "style",
    "click",
    "direction",
    "digraph",
    "node",
    "edge",
    "cluster_x",
    'say "hi"',
    "it's",
    "a:b;c#d",
    "#quot;",
    "&amp;",
    "<b>bold</b> & `tick`",
    "x --> y",
    "A---oB",
    "[(x)]",
    "{x}",
    "|pipe|",
    "%%comment",
    "back\\slash \\n",
    "two\nlines",
    "tab\there",
    "ünï cödé ✓ 注文",
    "    spaced",
]


@pytest.mark.parametrize("kind", KINDS)
def test_any_name_is_safe_ids_are_made_up_and_labels_come_back_as_given(kind: str):
    """Keywords, quotes, markup, entity codes, backslashes, line breaks, unicode: each step and group reads back."""
    steps = [Step(name, validate, is_new if index % 2 else None) for index, name in enumerate(NASTY)]
    flow = Coordinator([Parallel('group "end"', *steps[:4], max_workers=2), *steps[4:]])
    text = flow.graph(kind)
    drawn = read(kind, text)
    labels = sorted(box.label for box in drawn.boxes.values() if box.shape == "step")
    shown = [re.sub(r"[\n\r\t]", " ", name) if kind == "mermaid" else name for name in NASTY]  # Mermaid: one line
    assert labels == sorted(shown)
    assert [label for label, _ in drawn.clusters.values()] == ['group "end" · at most 2 at once']
    assert all(re.fullmatch(r"[a-z][A-Za-z0-9_]*", ident) for ident in [*drawn.boxes, *drawn.clusters])
    assert not {ident.casefold() for ident in drawn.boxes} & {"end", "graph", "subgraph", "class", "style", "node"}


@pytest.mark.parametrize("kind", KINDS)
def test_an_empty_flow_goes_from_start_to_end(kind: str):
    drawn = read(kind, Coordinator().graph(kind))
    assert drawn.edges == [(drawn.by_label("start"), drawn.by_label("end"), False, "")]


def test_mermaid_is_the_default_and_other_kinds_are_a_value_error_naming_the_kinds():
    flow = orders()
    assert flow.graph() == flow.graph("mermaid")
    assert flow.graph("mermaid") != flow.graph("dot")
    for kind in ("svg", "Mermaid", "", 3):
        with pytest.raises(ValueError, match=r"kind must be one of 'mermaid', 'dot', got"):
            flow.graph(kind)  # type: ignore[arg-type]


def test_drawing_a_flow_runs_nothing():
    """Drawing reads the definitions only: no callback is called."""
    called: list[str] = []
    flow = Coordinator([Step("a", lambda: called.append("job"), lambda: called.append("precheck"))])
    flow.graph()
    flow.graph("dot")
    assert called == []


def test_the_dot_parses_with_graphviz_grammar():
    """pydot (Graphviz's DOT grammar) reads every picture back, nasty names and nesting included."""
    import pydot

    steps = [Step(name, validate, is_new, compensate=release_stock) for name in NASTY]
    for flow in (orders(), Coordinator([Parallel("p", *steps[:3], [Parallel("q", *steps[3:6])]), *steps[6:]])):
        with warnings.catch_warnings():  # pydot's parser uses pyparsing's old names
            warnings.simplefilter("ignore", DeprecationWarning)
            graphs = pydot.graph_from_dot_data(flow.graph("dot"))
        assert graphs is not None
        assert len(graphs) == 1
        names = {node.get_name() for node in graphs[0].get_nodes()}
        for cluster in graphs[0].get_subgraphs():
            names |= {node.get_name() for node in cluster.get_nodes()}
            for inner in cluster.get_subgraphs():
                names |= {node.get_name() for node in inner.get_nodes()}
        assert len(names) >= len(flow.steps)


@pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz's dot is not installed")
def test_graphviz_reads_the_dot():
    """Graphviz's own parser takes every picture, nasty names and nesting included."""
    dot = shutil.which("dot")
    assert dot is not None
    steps = [Step(name, validate, is_new, compensate=release_stock) for name in NASTY]
    for flow in (orders(), Coordinator([Parallel("p", *steps[:3], [Parallel("q", *steps[3:6])]), *steps[6:]])):
        done = subprocess.run([dot, "-Tsvg"], input=flow.graph("dot"), capture_output=True, text=True, check=False)
        assert done.returncode == 0, done.stderr
        assert not done.stderr, done.stderr


MERMAID_CHECK = textwrap.dedent(
    """
    import { createRequire } from "node:module";
    import { readFileSync } from "node:fs";
    import { pathToFileURL } from "node:url";
    const here = createRequire(process.argv[2] + "/");
    const { JSDOM } = here("jsdom");
    const dom = new JSDOM("<!doctype html><body></body>");
    globalThis.window = dom.window;
    globalThis.document = dom.window.document;
    const mermaid = (await import(pathToFileURL(here.resolve("mermaid")).href)).default;
    for (const path of process.argv.slice(3)) await mermaid.parse(readFileSync(path, "utf8"));
    """
)


@pytest.mark.skipif(
    not os.environ.get("CHOREOGRAPH_MERMAID_MODULES") or shutil.which("node") is None,
    reason="set CHOREOGRAPH_MERMAID_MODULES to a node_modules folder with mermaid and jsdom to check with Mermaid",
)
def test_mermaid_parses_every_picture(tmp_path: Path):
    """Mermaid's own parser takes the flowcharts and the gantt charts (optional: needs node, mermaid and jsdom)."""
    steps = [Step(name, validate, is_new, compensate=release_stock) for name in NASTY]
    pictures = [
        orders().graph(),
        Coordinator([Parallel("p", *steps[:3], [Parallel("q", *steps[3:6])]), *steps[6:]]).graph(),
        Coordinator().graph(),
        fixed_result().timeline(),
        result_of([Call(step=name, phase="compensate", outcome="failed", seconds=1) for name in NASTY]).timeline(),
        result_of([]).timeline(),
    ]
    paths = []
    for index, text in enumerate(pictures):
        paths.append(tmp_path / f"{index}.mmd")
        paths[-1].write_text(text, encoding="utf-8")
    (tmp_path / "check.mjs").write_text(MERMAID_CHECK, encoding="utf-8")
    modules, node = os.environ["CHOREOGRAPH_MERMAID_MODULES"], shutil.which("node")
    assert node is not None
    done = subprocess.run(
        [node, str(tmp_path / "check.mjs"), modules, *map(str, paths)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr


# -- timeline ------------------------------------------------------------------------------


def result_of(calls: list[Call], *, key: str | None = None, fatal: Exception | None = None) -> RunResult[Any]:
    """A finished run with exactly *calls* as its trace (as one read from a store or unpickled is)."""
    raw: tuple[RawCall, ...] = tuple(
        (c.step, c.phase, c.outcome, c.seconds, c.attempts, c.restored, c.started) for c in calls
    )
    wrapped = None if fatal is None else JobFailed("book", fatal)
    return RunResult(Finished(None, (), wrapped, DataBag(), 7, key, (), raw))


#: A failed run of the order flow, in the order its calls finished.
TRACE = [
    Call(step="validate", phase="precheck", outcome="ok", seconds=0.0002, started=0.0),
    Call(step="validate", phase="job", outcome="ok", seconds=0.004, started=0.001),
    Call(step="reserve", phase="job", outcome="ok", seconds=0.018, started=0.006),
    Call(step="quote", phase="precheck", outcome="failed", seconds=0.001, started=0.025),
    Call(step="quote", phase="job", outcome="skipped", seconds=0.0, attempts=0, started=0.026),
    Call(step="credit", phase="job", outcome="ok", seconds=0.046, started=0.006, restored=True),
    Call(step="book", phase="job", outcome="failed", seconds=0.031, attempts=2, started=0.053),
    Call(step="credit", phase="compensate", outcome="ok", seconds=0.007, started=0.085),
    Call(step="reserve", phase="compensate", outcome="canceled", seconds=0.0124, started=0.093),
]


def fixed_result() -> RunResult[Any]:
    return result_of(TRACE, fatal=KeyError("x"))


BAR = re.compile(r"        (?P<name>[^:\n]+) :(?P<tags>(?:\w+, )*)(?P<start>\d+), (?P<end>\d+)")


def read_gantt(text: str) -> tuple[list[str], list[tuple[str, str, list[str], int, int]]]:
    """The chart's header lines and its bars: (section, name, tags, start ms, end ms)."""
    assert text.endswith("\n")
    lines = text.splitlines()
    assert lines[0] == "gantt"
    header = [line.strip() for line in lines[1:5]]
    section, bars = None, []
    for line in lines[5:]:
        if line.startswith("    section "):
            section = line.removeprefix("    section ")
        elif found := BAR.fullmatch(line):
            assert section is not None
            tags = found["tags"].split(", ")[:-1]
            bars.append((section, found["name"].strip(), tags, int(found["start"]), int(found["end"])))
        else:
            pytest.fail(f"a line the reader does not know: {line!r}")
    return header, bars


def test_the_timeline_has_a_bar_per_call_placed_by_its_start_in_milliseconds():
    """A section per step, in the order they started, compensations last; start and end in ms from the run's start."""
    header, bars = read_gantt(fixed_result().timeline())
    assert header == [
        "title run 7: JobFailed at book (KeyError)",
        "dateFormat x",
        "axisFormat %S.%L",
        "todayMarker off",
    ]
    least = math.ceil(105 * MIN_SHARE)  # the chart spans 105 ms: 1% of it, rounded up, is 2 ms
    assert least == 2
    assert bars == [
        ("validate", "precheck · ok · 0.2 ms", [], 0, 0 + least),  # very short: drawn 2 ms wide
        ("validate", "job · ok · 4 ms", [], 1, 5),
        ("reserve", "job · ok · 18 ms", [], 6, 24),
        ("credit", "job · ok · 46 ms · restored", ["done"], 6, 52),
        ("quote", "precheck · failed · 1 ms", ["crit"], 25, 27),
        ("quote", "job · skipped", ["milestone"], 26, 28),
        ("book", "job · failed · 31 ms · 2 attempts", ["crit"], 53, 84),
        ("compensations", "undo credit · ok · 7 ms", [], 85, 92),
        ("compensations", "undo reserve · canceled · 12.4 ms", ["active"], 93, 105),
    ]


def test_the_same_bars_from_a_pickled_result_and_whatever_order_the_trace_is_in():
    """Only the trace is read: an unpickled result draws the same; bars are ordered by start, not by finish."""
    result = fixed_result()
    twin = pickle.loads(pickle.dumps(result))  # noqa: S301 - our own data
    assert twin.timeline() == result.timeline()
    assert result_of(TRACE[::-1], fatal=KeyError("x")).timeline() == result.timeline()


def test_a_real_parallel_run_with_compensations():
    """A real run of parallel branches that fails: a section per step by start, the failure crit, the undo last."""

    def fail(order: object) -> None:
        raise ValueError("closed")

    flow = Coordinator(
        [
            Step("validate", validate),
            Parallel("checks", Step("credit", check_credit, compensate=release_credit), Step("reserve", reserve_stock)),
            Step("book", fail, compensate=release_stock),
        ]
    )
    result = flow.run(None)
    assert isinstance(result.fatal, JobFailed)
    header, bars = read_gantt(result.timeline())
    assert header[0] == f"title run {result.run_id}: JobFailed at book (ValueError)"
    by_start = sorted(result.trace, key=lambda call: call.started)
    assert [section for section, *_ in bars] == [
        *dict.fromkeys(call.step for call in by_start if call.phase != "compensate"),
        "compensations",
    ]
    assert [name.split(" · ")[:2] for section, name, *_ in bars if section == "compensations"] == [
        ["undo credit", "ok"]
    ]
    calls = {(call.step, call.phase): call for call in result.trace}
    for section, name, tags, start, end in bars:
        call = calls[
            (name.split(" · ")[0].removeprefix("undo "), "compensate")
            if section == "compensations"
            else (section, name.split(" · ")[0])
        ]
        assert start == round(call.started * 1000)
        assert end == max(round((call.started + call.seconds) * 1000), start + 1)
        assert ("crit" in tags) == (call.outcome == "failed")


def test_restored_calls_of_a_durable_run_are_done():
    """A durable key run again restores its calls from the store: each bar ``done``, its name says ``restored``."""
    flow = Coordinator([Step("a", validate), Step("b", book)], store=MemoryStore(), key=lambda order: "k-1")
    first = flow.run("order")
    again = flow.run("order")
    assert all(call.restored for call in again.trace)
    header, bars = read_gantt(again.timeline())
    assert header[0] == "title key k-1: ok"
    assert [(section, tags) for section, _, tags, _, _ in bars] == [("a", ["done"]), ("b", ["done"])]
    assert all(name.endswith(" · restored") for _, name, _, _, _ in bars)
    assert first.timeline() != again.timeline()


def test_names_the_gantt_syntax_reserves_are_drawn_with_look_alikes():
    """``:`` ends a bar's name, ``#`` and ``;`` end lines in some Mermaid versions: each is drawn as a look-alike."""
    names = ["title x", "a: b", "c#1; d", "two\nlines", "section", "%%y", "click me"]
    calls = [Call(step=name, phase="job", outcome="ok", seconds=0.01) for name in names]
    calls += [Call(step=name, phase="compensate", outcome="failed", seconds=0.01) for name in names]
    _, bars = read_gantt(result_of(calls, key="k#1: x").timeline())
    sections = [section for section, *_ in bars]
    looks = ["title x", "a\u2236 b", "c\uff031\uff1b d", "two lines", "section", "%%y", "click me"]
    assert sections == [*looks, *["compensations"] * len(names)]
    assert [name.split(" · ")[0] for _, name, *_ in bars[len(names) :]] == [f"undo {look}" for look in looks]


def test_a_run_that_called_nothing_has_one_milestone():
    header, bars = read_gantt(result_of([]).timeline())
    assert header[0] == "title run 7: ok"
    assert bars == [("run", "no callback ran", ["milestone"], 0, 1)]


@pytest.mark.parametrize(
    ("seconds", "axis", "least"),
    [(0.5, "%S.%L", 5), (59.9, "%S.%L", 599), (600, "%M:%S", 6000), (7200, "%H:%M:%S", 72000)],
)
def test_the_axis_and_the_least_width_follow_the_span(seconds: float, axis: str, least: int):
    """A longer run: an axis of minutes or hours, and a least width of 1% of the span."""
    calls = [
        Call(step="long", phase="job", outcome="ok", seconds=seconds),
        Call(step="short", phase="job", outcome="ok", seconds=0.000001, started=seconds / 2),
    ]
    header, bars = read_gantt(result_of(calls).timeline())
    assert header[2] == f"axisFormat {axis}"
    assert bars[1][4] - bars[1][3] == least


# -- the guide's pictures ----------------------------------------------------------------------


def load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("pictures_tool", ROOT / "tools" / "pictures.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_guides_pictures_are_drawn_from_its_code_and_up_to_date():
    """docs/guide/pictures.md shows what its own code draws now; if this fails, run ``python tools/pictures.py``."""
    tool = load_tool()
    page = tool.PAGE.read_text(encoding="utf-8")
    drawn = tool.render(page)
    assert drawn == page, f"the pictures of {tool.PAGE.name} are out of date: run {tool.COMMAND}"
    for name in ("orders", "orders-dot", "failed-timeline"):
        assert f"<!-- picture: {name} -->\n```" in page
    assert "```mermaid\nflowchart TD\n" in page
    assert "```mermaid\ngantt\n" in page
    assert "```dot\ndigraph" in page


def test_the_tool_checks_rewrites_and_refuses_a_page_it_does_not_know(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
):
    """``--check`` fails on a stale page and names the command; without it, the page is rewritten; bad markers fail."""
    tool = load_tool()
    page = tmp_path / "pictures.md"
    fresh = tool.PAGE.read_text(encoding="utf-8")
    stale = fresh.replace("flowchart TD\n", "flowchart TD\n    stale --> picture\n", 1)
    page.write_text(stale, encoding="utf-8")
    monkeypatch.setattr(tool, "PAGE", page)
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    assert tool.main(["--check"]) == 1
    assert "run python tools/pictures.py" in capsys.readouterr().err
    assert tool.main([]) == 0
    assert page.read_text(encoding="utf-8") == fresh
    assert tool.main(["--check"]) == 0
    with pytest.raises(LookupError, match="marks the pictures"):
        tool.render(fresh.replace("<!-- picture: orders-dot -->", "<!-- picture: other -->"))


def test_the_fixed_timeline_keeps_the_calls_of_the_real_run():
    """The guide's timeline has round times, but the calls, outcomes and attempts of the page's real failed run."""
    tool = load_tool()
    namespace = tool.run_page(tool.PAGE.read_text(encoding="utf-8"))
    failed: RunResult[Any] = namespace["failed"]
    shown = tool.fixed(failed)
    key = lambda call: (call.step, call.phase, call.outcome, call.attempts)  # noqa: E731
    assert sorted(map(key, shown.trace)) == sorted(map(key, failed.trace))
    assert [call.started for call in shown.trace] == [tool.TIMES[call.step, call.phase][0] for call in shown.trace]
    assert shown.fatal is failed.fatal
    with pytest.raises(LookupError, match="other calls than TIMES"):
        tool.fixed(result_of([Call(step="other", phase="job", outcome="ok")]))


def test_skip_is_drawn_in_the_guides_flow_too():
    """The page's precheck raises `Skip` for a booked order: the run goes on around the job, as the picture says."""
    tool = load_tool()
    namespace = tool.run_page(tool.PAGE.read_text(encoding="utf-8"))
    flow: Coordinator[Any] = namespace["orders"]
    order = namespace["Order"]("A-1", "mug", 1, 100)
    assert flow.run(order).ok
    again = flow.run(order)
    assert [call.outcome for call in again.trace_of("validate")] == ["failed", "skipped"]
    assert isinstance(again.errors[0].error, Skip)
