"""Every service, rpc, message, enum, enum value and field of the .proto files is documented.

A declaration counts as documented when a ``//`` comment line sits directly above it (no
blank line in between) or a ``//`` comment trails it on its own line.  The parser is
line-based and small on purpose; it is cross-checked against the compiled descriptors so that
it cannot silently skip a declaration.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PROTO_DIR = ROOT / "proto" / "eap" / "v1"
PROTO_FILES = ("types.proto", "node_api.proto", "federation.proto")

_BLOCK = re.compile(r"^(message|enum|service|oneof|extend)\s+([\w.]+)\s*\{")
_RPC = re.compile(r"^rpc\s+(\w+)\s*\(")
_FIELD = re.compile(
    r"^(?:(?:repeated|optional|required)\s+)?(?:map\s*<[^>]*>|[.\w]+)\s+(\w+)\s*=\s*\d+"
)
_ENUM_VALUE = re.compile(r"^(\w+)\s*=\s*-?(?:0[xX][0-9a-fA-F]+|\d+)\b")
_STATEMENT = re.compile(r"^(syntax|edition|package|import|option|reserved|extensions)\b")
_PACKAGE = re.compile(r"^package\s+([\w.]+)\s*;")


@dataclass(frozen=True)
class Decl:
    """One declaration found in a .proto file."""

    file: str
    line: int  # 1-based
    kind: str  # service | rpc | message | enum | enum value | field | oneof
    name: str  # fully qualified, e.g. eap.v1.RecordBundle.owner
    documented: bool

    def __str__(self) -> str:
        return f"{self.file}:{self.line}: {self.kind} {self.name}"


def split_comment(line: str) -> tuple[str, str]:
    """``(code, comment)`` of one line; ``//`` inside a string literal is not a comment."""
    quote = None
    i = 0
    while i < len(line):
        c = line[i]
        if quote:
            if c == "\\":
                i += 2
                continue
            if c == quote:
                quote = None
        elif c in "\"'":
            quote = c
        elif line.startswith("//", i):
            return line[:i].strip(), line[i + 2 :].strip()
        i += 1
    return line.strip(), ""


def parse(text: str, file: str = "<proto>") -> tuple[list[Decl], list[str]]:
    """Declarations of a .proto source, and the lines the parser could not classify."""
    lines = text.splitlines()
    decls: list[Decl] = []
    unparsed: list[str] = []
    package = ""
    # Open blocks: (kind, scope of their children). Kind "other" marks braces we do not look
    # into (rpc bodies, option aggregates). A oneof's fields belong to its message's scope.
    stack: list[tuple[str, str]] = []

    for number, raw in enumerate(lines, start=1):
        code, comment = split_comment(raw)
        if not code:
            continue
        above = lines[number - 2].strip() if number >= 2 else ""
        documented = bool(comment) or above.startswith("//")
        top, scope = stack[-1] if stack else ("file", package)
        opens: tuple[str, str] = ("other", scope)

        def add(
            kind: str, short: str, scope: str = scope, line: int = number, doc: bool = documented
        ) -> str:
            qualified = f"{scope}.{short}" if scope else short
            decls.append(Decl(file, line, kind, qualified, doc))
            return qualified

        if top in ("file", "message", "oneof", "extend") and (m := _BLOCK.match(code)):
            kind, short = m.groups()
            if kind == "extend":
                opens = ("extend", scope)
            elif kind == "oneof":
                add(kind, short)
                opens = ("oneof", scope)
            else:
                opens = (kind, add(kind, short))
        elif top == "file" and (m := _PACKAGE.match(code)):
            package = m.group(1)
        elif top == "service" and (m := _RPC.match(code)):
            add("rpc", m.group(1))
            opens = ("rpc", scope)
        elif top in ("message", "oneof", "extend") and (m := _FIELD.match(code)):
            add("field", m.group(1))
        elif top == "enum" and (m := _ENUM_VALUE.match(code)):
            add("enum value", m.group(1))
        elif not (_STATEMENT.match(code) or code.startswith("}") or top in ("other", "rpc")):
            unparsed.append(f"{file}:{number}: {raw.strip()}")

        # Follow the braces (outside string literals); the first "{" opens the declared block.
        quote = None
        for c in code:
            if quote:
                quote = None if c == quote else quote
            elif c in "\"'":
                quote = c
            elif c == "{":
                stack.append(opens)
                opens = ("other", opens[1])
            elif c == "}":
                if stack:
                    stack.pop()
                else:
                    unparsed.append(f"{file}:{number}: unbalanced '}}'")
    if stack:
        unparsed.append(f"{file}: {len(stack)} block(s) not closed")
    return decls, unparsed


def undocumented(text: str, file: str = "<proto>") -> list[Decl]:
    decls, _ = parse(text, file)
    return [d for d in decls if not d.documented]


def _read(name: str) -> str:
    return (PROTO_DIR / name).read_text(encoding="utf-8")


# -- the real files ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PROTO_FILES)
def test_every_declaration_is_documented(name: str) -> None:
    decls, unparsed = parse(_read(name), name)
    assert not unparsed, "lines the doc parser does not understand:\n" + "\n".join(unparsed)
    assert decls, f"no declarations found in {name}"
    missing = [str(d) for d in decls if not d.documented]
    assert not missing, (
        f"{len(missing)} declaration(s) in {name} have no comment directly above or trailing "
        "(units, range, who sets it):\n" + "\n".join(missing)
    )


def _descriptor_names() -> set[tuple[str, str]]:
    from eap.v1 import federation_pb2, node_api_pb2, types_pb2

    names: set[tuple[str, str]] = set()

    def enum(e) -> None:
        names.add(("enum", e.full_name))
        names.update(("enum value", f"{e.full_name}.{v.name}") for v in e.values)

    def message(m) -> None:
        if m.GetOptions().map_entry:
            return
        names.add(("message", m.full_name))
        names.update(("field", f.full_name) for f in m.fields)
        names.update(("oneof", o.full_name) for o in m.oneofs if not o.name.startswith("_"))
        for nested in m.nested_types:
            message(nested)
        for e in m.enum_types:
            enum(e)

    for module in (types_pb2, node_api_pb2, federation_pb2):
        fd = module.DESCRIPTOR
        for m in fd.message_types_by_name.values():
            message(m)
        for e in fd.enum_types_by_name.values():
            enum(e)
        for s in fd.services_by_name.values():
            names.add(("service", s.full_name))
            names.update(("rpc", f"{s.full_name}.{r.name}") for r in s.methods)
    return names


def test_parser_sees_every_declaration_of_the_descriptors() -> None:
    parsed = {(d.kind, d.name) for name in PROTO_FILES for d in parse(_read(name), name)[0]}
    expected = _descriptor_names()
    assert sorted(expected - parsed) == [], "declarations the doc parser missed"
    assert sorted(parsed - expected) == [], "parsed names that are not in the descriptors"


@pytest.mark.parametrize("name", PROTO_FILES)
def test_removing_any_comment_is_caught(name: str) -> None:
    text = _read(name)
    lines = text.splitlines()
    decls, _ = parse(text, name)
    for decl in decls:
        mutated = list(lines)
        i = decl.line - 1
        mutated[i] = split_comment(mutated[i])[0]
        while i > 0 and mutated[i - 1].strip().startswith("//"):
            del mutated[i - 1]
            i -= 1
        flagged = {d.name for d in undocumented("\n".join(mutated), name) if d.kind == decl.kind}
        assert decl.name in flagged, f"removing the comment of {decl} went unnoticed"


# -- the parser itself ---------------------------------------------------------------------------

SAMPLE = """\
syntax = "proto3";
package demo.v1;
option go_package = "example.com/x//y"; // trailing comments on statements are fine

// A service.
service Things {
  // Documented rpc with an option body.
  rpc Get(GetRequest) returns (Thing) {
    option deprecated = true;
  }
  rpc Put(Thing) returns (Thing);
}

// Empty message on one line.
message GetRequest {}

message Thing {
  // Nested message.
  message Part {
    int64 wh = 1;  // Wh, >= 0.
    string name = 2;
  }
  map<string, bytes> keys = 1;
  // A repeated nested type.
  repeated Part parts = 2;

  // Separated from its comment by a blank line: not documented.

  optional string label = 3;
  // A oneof.
  oneof kind {
    // A choice.
    int32 a = 4;
    string b = 5;  // trailing
  }
  // Nested enum.
  enum Colour {
    COLOUR_UNSPECIFIED = 0;  // trailing
    COLOUR_RED = 1;
  }
}
"""


def test_parser_on_a_sample() -> None:
    decls, unparsed = parse(SAMPLE, "sample.proto")
    assert unparsed == []
    found = {d.name: (d.kind, d.documented) for d in decls}
    assert found == {
        "demo.v1.Things": ("service", True),
        "demo.v1.Things.Get": ("rpc", True),
        "demo.v1.Things.Put": ("rpc", False),
        "demo.v1.GetRequest": ("message", True),
        "demo.v1.Thing": ("message", False),
        "demo.v1.Thing.Part": ("message", True),
        "demo.v1.Thing.Part.wh": ("field", True),
        "demo.v1.Thing.Part.name": ("field", False),
        "demo.v1.Thing.keys": ("field", False),
        "demo.v1.Thing.parts": ("field", True),
        "demo.v1.Thing.label": ("field", False),
        "demo.v1.Thing.kind": ("oneof", True),
        "demo.v1.Thing.a": ("field", True),
        "demo.v1.Thing.b": ("field", True),
        "demo.v1.Thing.Colour": ("enum", True),
        "demo.v1.Thing.Colour.COLOUR_UNSPECIFIED": ("enum value", True),
        "demo.v1.Thing.Colour.COLOUR_RED": ("enum value", False),
    }


def test_parser_reports_lines_it_cannot_classify() -> None:
    _, unparsed = parse("message M {\n  this is not proto;\n}\n", "bad.proto")
    assert unparsed == ["bad.proto:2: this is not proto;"]
