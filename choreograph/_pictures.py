"""
Pictures of a flow: what `Coordinator.graph` draws, as a Mermaid flowchart or as Graphviz DOT.

Both formats draw the same picture, built once as plain data (`Picture`):
a start and an end; each step a box with its name (and its retry and
timeout, small); its precheck a diamond before it, whose ``skip`` edge goes
around the job; its compensation a dashed ``undo`` edge to a node of its
own; each `Parallel` group a box (a Mermaid ``subgraph``, a DOT
``cluster``) holding a fork, its branches side by side, and a join. Groups
nest. Node ids are made by the picture (``s3_book``), never taken from a
name as it is, so any step name is safe; names appear only in labels,
escaped for each format. A run's own picture is `RunResult.timeline`.
"""

from __future__ import annotations

import html
import re
from dataclasses import dataclass, field
from typing import Any, Final, Literal

from ._core.retry import Retry, TenacityRetry
from ._core.step import Parallel, Step

#: The kinds of picture `Coordinator.graph` draws.
KINDS: Final = ("mermaid", "dot")

Shape = Literal["terminal", "step", "precheck", "undo", "fork", "join"]
Line = Literal["flow", "ok", "skip", "undo"]


@dataclass(frozen=True, slots=True)
class Node:
    """A box of the picture."""

    id: str
    shape: Shape
    label: str
    notes: tuple[str, ...] = ()  # drawn small, under the label


@dataclass(frozen=True, slots=True)
class Edge:
    """An arrow of the picture."""

    source: str
    target: str
    line: Line
    label: str = ""


@dataclass(slots=True)
class Cluster:
    """A `Parallel` group: its nodes and nested groups, in order."""

    id: str
    label: str
    members: list[Node | Cluster] = field(default_factory=list)


@dataclass(slots=True)
class Picture:
    """A flow as nodes (top level and in clusters), edges, and which node each undo node stands beside."""

    members: list[Node | Cluster] = field(default_factory=list)
    edges: list[Edge] = field(default_factory=list)
    beside: dict[str, str] = field(default_factory=dict)  # an undo node's id -> its step's


def draw(flow: tuple[Step[Any] | Parallel, ...], kind: str) -> str:
    """
    Draw *flow* (a coordinator's top-level nodes) as *kind*, ``"mermaid"`` or ``"dot"``.

    Raises:
        ValueError: *kind* is neither.

    >>> print(draw((Step("a", len),), "mermaid"), end="")
    flowchart TD
        start(["start"])
        s1_a["a"]
        finish(["end"])
        start --> s1_a
        s1_a --> finish
    """
    if kind == "mermaid":
        return mermaid(picture(flow))
    if kind == "dot":
        return dot(picture(flow))
    msg = f"kind must be one of {', '.join(map(repr, KINDS))}, got {kind!r}"
    raise ValueError(msg)


# -- the picture ---------------------------------------------------------------


def picture(flow: tuple[Step[Any] | Parallel, ...]) -> Picture:
    """Lay *flow* out as nodes and edges."""
    builder = _Builder()
    start = Node("start", "terminal", "start")
    builder.picture.members.append(start)
    exits = builder.sequence(flow, [(start.id, "flow")], builder.picture.members)
    finish = Node("finish", "terminal", "end")
    builder.picture.members.append(finish)
    builder.connect(exits, finish.id)
    return builder.picture


#: Where the flow goes on from: a node's id and the kind of line that leaves it.
_Exits = list[tuple[str, Line]]


class _Builder:
    def __init__(self) -> None:
        self.picture = Picture()
        self.count = 0

    def ident(self, prefix: str, name: str) -> str:
        self.count += 1
        return _ident(prefix, self.count, name)

    def connect(self, exits: _Exits, target: str) -> None:
        for source, line in exits:
            self.picture.edges.append(Edge(source, target, line, line if line in ("ok", "skip") else ""))

    def sequence(self, nodes: tuple[Step[Any] | Parallel, ...], exits: _Exits, members: list[Node | Cluster]) -> _Exits:
        """Place *nodes* one after the other in *members*, the first reached from *exits*; return the last's exits."""
        for node in nodes:
            exits = self.group(node, exits, members) if isinstance(node, Parallel) else self.step(node, exits, members)
        return exits

    def step(self, step: Step[Any], exits: _Exits, members: list[Node | Cluster]) -> _Exits:
        """Place *step* (and its precheck and undo nodes), reached from *exits*; return its exits."""
        ident = self.ident("s", step.name)
        leaving: _Exits = [(ident, "flow")]
        if step.precheck is not None:
            precheck = "p" + ident[1:]
            members.append(Node(precheck, "precheck", f"{_name(step.precheck, 'precheck')}?"))
            self.connect(exits, precheck)
            exits = [(precheck, "ok")]
            leaving.append((precheck, "skip"))
        members.append(Node(ident, "step", step.name, _notes(step)))
        self.connect(exits, ident)
        if step.compensate is not None:
            undo = "u" + ident[1:]
            members.append(Node(undo, "undo", _name(step.compensate, "compensate")))
            label = "undo, also on failure" if step.compensate_failed is True else "undo"
            self.picture.edges.append(Edge(ident, undo, "undo", label))
            self.picture.beside[undo] = ident
        return leaving

    def group(self, group: Parallel, exits: _Exits, members: list[Node | Cluster]) -> _Exits:
        """Place *group* as a cluster, reached from *exits*: a fork, its branches, a join; return the join."""
        ident = self.ident("g", group.name)
        label = group.name if group.max_workers is None else f"{group.name} · at most {group.max_workers} at once"
        cluster = Cluster(ident, label)
        members.append(cluster)
        fork, join = Node("f" + ident[1:], "fork", "fork"), Node("j" + ident[1:], "join", "join")
        cluster.members.append(fork)
        self.connect(exits, fork.id)
        ends = [self.sequence(branch, [(fork.id, "flow")], cluster.members) for branch in group.branches]
        cluster.members.append(join)
        for branch_exits in ends:
            self.connect(branch_exits, join.id)
        return [(join.id, "flow")]


def _ident(prefix: str, number: int, name: str) -> str:
    """
    A node id: *prefix*, *number*, then what can be kept of *name* (ASCII letters and digits).

    >>> _ident("s", 3, "book"), _ident("s", 4, 'Réserver "le" stock'), _ident("g", 5, "éé ✓")
    ('s3_book', 's4_R_server_le_stock', 'g5')
    """
    slug = re.sub(r"[^0-9A-Za-z]+", "_", name).strip("_")[:24].rstrip("_")
    return f"{prefix}{number}_{slug}" if slug else f"{prefix}{number}"


def _name(fn: object, fallback: str) -> str:
    """
    A callback's name as the picture shows it: its qualified name (past any ``<locals>``), or *fallback* for a lambda.

    >>> def make():
    ...     def check(): ...
    ...     return check
    >>> _name(len, "precheck"), _name(lambda: None, "precheck"), _name(str.upper, "job"), _name(make(), "job")
    ('len', 'precheck', 'str.upper', 'check')
    """
    name: object = getattr(fn, "__qualname__", None)
    if not isinstance(name, str):
        name = type(fn).__qualname__
    name = name.rpartition("<locals>.")[2]
    return fallback if name == "<lambda>" else name


def _notes(step: Step[Any]) -> tuple[str, ...]:
    """
    The step's options, small: retries and timeout.

    >>> _notes(Step("a", len, retry=Retry(attempts=3), timeout=2.5))
    ('3 attempts', 'timeout 2.5 s')
    """
    notes: list[str] = []
    retry: object = step.retry
    if isinstance(retry, Retry):
        notes.append(f"{retry.attempts} attempts" + (", precheck too" if retry.prechecks else ""))
    elif isinstance(retry, TenacityRetry) or type(retry).__module__.partition(".")[0] == "tenacity":
        notes.append("retry (tenacity)")
    elif retry is not None:
        notes.append("retry")
    if step.timeout is not None:
        notes.append(f"timeout {float(step.timeout):g} s")
    return tuple(notes)


def _nodes(members: list[Node | Cluster]) -> list[Node]:
    found: list[Node] = []
    for member in members:
        found.extend(_nodes(member.members) if isinstance(member, Cluster) else [member])
    return found


# -- Mermaid ---------------------------------------------------------------------

#: Mermaid's entity codes for what would end or change a quoted label; a line break becomes a space.
_MERMAID_TEXT: Final = str.maketrans(
    {
        "#": "#35;",
        '"': "#quot;",
        "&": "#amp;",
        "<": "#lt;",
        ">": "#gt;",
        "`": "#96;",
        ":": "#58;",
        "\n": " ",
        "\r": " ",
        "\t": " ",
    }
)
_MERMAID_SHAPES: Final[dict[Shape, tuple[str, str]]] = {
    "terminal": ("([", "])"),
    "step": ("[", "]"),
    "precheck": ("{", "}"),
    "undo": ("[/", "/]"),
    "fork": ("((", "))"),
    "join": ("((", "))"),
}
_MERMAID_LINES: Final[dict[Line, str]] = {"flow": "-->", "ok": "-->", "skip": "-.->", "undo": "-.->"}
_MERMAID_CLASSES: Final = (
    ("precheck", "fill:#fff4d6,stroke:#b08020", ("precheck",)),
    ("undo", "fill:#f6f6f6,stroke:#888888,stroke-dasharray:4 3,color:#555555", ("undo",)),
    ("bar", "fill:#333333,stroke:#333333,color:#ffffff", ("fork", "join")),
)


def mermaid_text(text: str) -> str:
    """
    *text* inside a quoted Mermaid label: entity codes for what Mermaid would read as syntax or HTML.

    >>> mermaid_text('say "end" <b>#1</b>')
    'say #quot;end#quot; #lt;b#gt;#35;1#lt;/b#gt;'
    """
    return text.translate(_MERMAID_TEXT)


def mermaid(drawn: Picture) -> str:
    """Write *drawn* as a Mermaid flowchart, top down."""
    lines = ["flowchart TD"]
    _mermaid_members(drawn.members, lines, "    ")
    for edge in drawn.edges:
        label = f"|{mermaid_text(edge.label)}|" if edge.label else ""
        lines.append(f"    {edge.source} {_MERMAID_LINES[edge.line]}{label} {edge.target}")
    nodes = _nodes(drawn.members)
    for name, style, shapes in _MERMAID_CLASSES:
        members = [node.id for node in nodes if node.shape in shapes]
        if members:
            lines += [f"    classDef {name} {style}", f"    class {','.join(members)} {name}"]
    return "\n".join(lines) + "\n"


def _mermaid_members(members: list[Node | Cluster], lines: list[str], indent: str) -> None:
    for member in members:
        if isinstance(member, Cluster):
            lines.append(f'{indent}subgraph {member.id}["{mermaid_text(member.label)}"]')
            _mermaid_members(member.members, lines, indent + "    ")
            lines.append(f"{indent}end")
            continue
        opening, closing = _MERMAID_SHAPES[member.shape]
        label = mermaid_text(member.label)
        if member.notes:
            label += f"<br/><small>{mermaid_text(' · '.join(member.notes))}</small>"
        lines.append(f'{indent}{member.id}{opening}"{label}"{closing}')


# -- DOT ---------------------------------------------------------------------------

_DOT_SHAPES: Final[dict[Shape, str]] = {
    "terminal": 'shape=oval, style=""',
    "step": "shape=box",
    "precheck": 'shape=diamond, style=filled, fillcolor="#fff4d6", color="#b08020"',
    "undo": 'shape=parallelogram, style="dashed,filled", fillcolor="#f6f6f6", color="#888888", fontcolor="#555555"',
    "fork": 'shape=circle, style=filled, fillcolor="#333333", color="#333333", fontcolor="#ffffff", fontsize=10',
    "join": 'shape=circle, style=filled, fillcolor="#333333", color="#333333", fontcolor="#ffffff", fontsize=10',
}
_DOT_LINES: Final[dict[Line, str]] = {
    "flow": "",
    "ok": "",
    "skip": "style=dashed",
    "undo": "style=dashed, arrowhead=empty",
}


def dot_text(text: str) -> str:
    r"""
    *text* inside a quoted DOT string: backslashes and quotes escaped, line breaks as ``\n``.

    >>> print(dot_text('say "hi"\\now\nthen'))
    say \"hi\"\\now\nthen
    """
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\r", "").replace("\n", "\\n")


def dot(drawn: Picture) -> str:
    """Write *drawn* as a Graphviz ``digraph``, top down, each group a cluster."""
    lines = [
        'digraph "flow" {',
        "    rankdir=TB;",
        '    node [shape=box, style=rounded, fontname="Helvetica", fontsize=12];',
        '    edge [fontname="Helvetica", fontsize=10];',
    ]
    _dot_members(drawn.members, drawn.beside, lines, "    ")
    for edge in drawn.edges:
        options = ", ".join(part for part in (_DOT_LINES[edge.line], _dot_label(edge.label)) if part)
        lines.append(f'    "{edge.source}" -> "{edge.target}"' + (f" [{options}];" if options else ";"))
    return "\n".join(lines) + "\n}\n"


def _dot_html(text: str) -> str:
    """
    *text* inside an HTML-like DOT label.

    >>> _dot_html('<b> & "x"')
    '&lt;b&gt; &amp; "x"'
    """
    return html.escape(" ".join(text.splitlines()), quote=False)


def _dot_label(label: str) -> str:
    return f'label="{dot_text(label)}"' if label else ""


def _dot_members(members: list[Node | Cluster], beside: dict[str, str], lines: list[str], indent: str) -> None:
    for member in members:
        if isinstance(member, Cluster):
            lines += [
                f'{indent}subgraph "cluster_{member.id}" {{',
                f"{indent}    {_dot_label(member.label)};",
                f'{indent}    style="rounded,dashed";',
            ]
            _dot_members(member.members, beside, lines, indent + "    ")
            lines.append(f"{indent}}}")
            continue
        if member.notes:  # an HTML-like label, for the small print
            notes = _dot_html(" · ".join(member.notes))
            label = f'label=<{_dot_html(member.label)}<BR/><FONT POINT-SIZE="9">{notes}</FONT>>'
        else:
            label = _dot_label(member.label)
        lines.append(f'{indent}"{member.id}" [{label}, {_DOT_SHAPES[member.shape]}];')
        if member.id in beside:  # an undo node, level with its step
            lines.append(f'{indent}{{ rank=same; "{beside[member.id]}"; "{member.id}"; }}')
