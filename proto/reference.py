"""The protocol reference, generated from the ``.proto`` files' own comments.

One Markdown page per proto file: its header comment, every service with its rpcs (request,
response, comment), every message with every field (type, number, comment) and every enum with
its values.  The descriptors come from protoc (grpc_tools) with ``--include_source_info``, so
the pages say exactly what the protos say and can never drift from them.

Used two ways:

* as an MkDocs hook (``hooks: [proto/reference.py]`` in ``mkdocs.yml``): every site build
  generates ``reference/<file>.md`` in memory (nothing is written into ``docs/``);
* from the command line, ``python proto/reference.py --out DIR``, to look at the pages.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
from importlib import resources
from pathlib import Path

PROTO_ROOT = Path(__file__).resolve().parent
#: Folder of the generated pages inside the site.
SITE_DIR = "reference"

# FieldDescriptorProto.Type -> proto type name (scalars).
_SCALARS = {
    1: "double",
    2: "float",
    3: "int64",
    4: "uint64",
    5: "int32",
    6: "fixed64",
    7: "fixed32",
    8: "bool",
    9: "string",
    12: "bytes",
    13: "uint32",
    15: "sfixed32",
    16: "sfixed64",
    17: "sint32",
    18: "sint64",
}
_TYPE_MESSAGE, _TYPE_ENUM, _LABEL_REPEATED = 11, 14, 3
# SourceCodeInfo paths (descriptor.proto field numbers).
_FILE_MESSAGE, _FILE_ENUM, _FILE_SERVICE, _FILE_SYNTAX, _FILE_PACKAGE = 4, 5, 6, 12, 2
_MSG_FIELD, _MSG_NESTED, _MSG_ENUM, _ENUM_VALUE, _SERVICE_METHOD = 2, 3, 4, 2, 2


def proto_files() -> list[Path]:
    return sorted((PROTO_ROOT / "eap" / "v1").glob("*.proto"))


def descriptor_set():
    """The ``FileDescriptorSet`` of every proto file, with source info (comments)."""
    from google.protobuf import descriptor_pb2
    from grpc_tools import protoc

    include = str(resources.files("grpc_tools") / "_proto")
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "eap.pb"
        code = protoc.main(
            [
                "protoc",
                f"-I{PROTO_ROOT}",
                f"-I{include}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *[str(p.relative_to(PROTO_ROOT)) for p in proto_files()],
            ]
        )
        if code != 0:
            raise RuntimeError(f"protoc failed with exit code {code}")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def render_all() -> dict[str, str]:
    """Page name (``types.md``, ...) -> Markdown, one per proto file."""
    files = list(descriptor_set().file)
    where = _type_index(files)
    return {f"{Path(f.name).stem}.md": _render_file(f, where) for f in files}


# -- rendering ---------------------------------------------------------------------------------


def _type_index(files) -> dict[str, tuple[str, str]]:
    """Fully qualified type name (``.eap.v1.Account``) -> (page, display name)."""
    index: dict[str, tuple[str, str]] = {}

    def walk(page: str, prefix: str, shown: str, messages, enums) -> None:
        for e in enums:
            index[f"{prefix}.{e.name}"] = (page, f"{shown}{e.name}")
        for m in messages:
            index[f"{prefix}.{m.name}"] = (page, f"{shown}{m.name}")
            walk(page, f"{prefix}.{m.name}", f"{shown}{m.name}.", m.nested_type, m.enum_type)

    for f in files:
        walk(f"{Path(f.name).stem}.md", f".{f.package}", "", f.message_type, f.enum_type)
    return index


def _comments(f) -> dict[tuple[int, ...], str]:
    out = {}
    for loc in f.source_code_info.location:
        text = "\n".join(c for c in (loc.leading_comments, loc.trailing_comments) if c.strip())
        if text.strip():
            out[tuple(loc.path)] = _clean(text)
    return out


def _clean(text: str) -> str:
    lines = [ln[1:] if ln.startswith(" ") else ln for ln in text.strip("\n").split("\n")]
    return "\n".join(ln.rstrip() for ln in lines).strip()


def _escape(text: str) -> str:
    """Markdown-safe prose: ``<``/``>`` escaped outside code spans (inside they show as is)."""
    parts = text.split("`")
    for i in range(0, len(parts), 2):
        parts[i] = parts[i].replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return "`".join(parts)


def _prose(text: str) -> str:
    """A comment as Markdown paragraphs (bullets kept, lines of a paragraph joined)."""
    text = _escape(text)
    # A bullet needs a blank line before it to start a list.
    return re.sub(r"\n(?=\* )", "\n\n", text, count=1) if "\n* " in text else text


def _cell(text: str) -> str:
    """A comment in one table cell."""
    return _escape(" ".join(text.split())).replace("|", "\\|")


def _anchor(name: str) -> str:
    return name.lower().replace(".", "")


def _link(type_name: str, page: str, where: dict[str, tuple[str, str]]) -> str:
    target = where.get(type_name)
    if target is None:
        return f"`{type_name.lstrip('.')}`"
    to_page, shown = target
    href = ("" if to_page == page else to_page) + "#" + _anchor(shown)
    return f"[`{shown}`]({href})"


def _field_type(field, page, where, maps) -> str:
    if field.type_name in maps:
        key, value = maps[field.type_name]
        return (
            f"map&lt;{_field_type(key, page, where, maps)}, "
            f"{_field_type(value, page, where, maps)}&gt;"
        )
    if field.type in (_TYPE_MESSAGE, _TYPE_ENUM):
        shown = _link(field.type_name, page, where)
    else:
        shown = f"`{_SCALARS.get(field.type, str(field.type))}`"
    return ("repeated " if field.label == _LABEL_REPEATED else "") + shown


def _render_file(f, where) -> str:
    page = f"{Path(f.name).stem}.md"
    notes = _comments(f)
    out = [
        f"# {Path(f.name).name}",
        "",
        f"Package `{f.package}`, generated from `proto/{f.name}` (do not edit: change the "
        "proto's comments).",
        "",
    ]
    header = notes.get((_FILE_SYNTAX,)) or notes.get((_FILE_PACKAGE,))
    if header:
        out += [_prose(header), ""]
    if f.service:
        out += ["## Services", ""]
    for si, svc in enumerate(f.service):
        out += [f"### {svc.name}", ""]
        if (_FILE_SERVICE, si) in notes:
            out += [_prose(notes[(_FILE_SERVICE, si)]), ""]
        out += ["| rpc | request | response | description |", "| --- | --- | --- | --- |"]
        for mi, m in enumerate(svc.method):
            req = ("stream " if m.client_streaming else "") + _link(m.input_type, page, where)
            res = ("stream " if m.server_streaming else "") + _link(m.output_type, page, where)
            note = _cell(notes.get((_FILE_SERVICE, si, _SERVICE_METHOD, mi), ""))
            out.append(f"| `{m.name}` | {req} | {res} | {note} |")
        out.append("")
    if f.message_type:
        out += ["## Messages", ""]
    for mi, msg in enumerate(f.message_type):
        out += _render_message(
            msg, f".{f.package}.{msg.name}", (_FILE_MESSAGE, mi), "", page, notes, where
        )
    if f.enum_type:
        out += ["## Enums", ""]
    for ei, enum in enumerate(f.enum_type):
        out += _render_enum(enum, (_FILE_ENUM, ei), "", notes)
    return "\n".join(out).rstrip() + "\n"


def _render_message(msg, fq, path, prefix, page, notes, where) -> list[str]:
    """``msg`` (fully qualified name ``fq``), its fields, then its nested types."""
    name = f"{prefix}{msg.name}"
    maps = {
        f"{fq}.{n.name}": (n.field[0], n.field[1]) for n in msg.nested_type if n.options.map_entry
    }
    out = [f"### {name}", ""]
    if path in notes:
        out += [_prose(notes[path]), ""]
    if msg.field:
        out += ["| field | type | number | description |", "| --- | --- | --- | --- |"]
        for fi, fld in enumerate(msg.field):
            note = _cell(notes.get((*path, _MSG_FIELD, fi), ""))
            out.append(
                f"| `{fld.name}` | {_field_type(fld, page, where, maps)} | {fld.number} | {note} |"
            )
        out.append("")
    else:
        out += ["No fields.", ""]
    for ni, nested in enumerate(msg.nested_type):
        if not nested.options.map_entry:
            out += _render_message(
                nested,
                f"{fq}.{nested.name}",
                (*path, _MSG_NESTED, ni),
                f"{name}.",
                page,
                notes,
                where,
            )
    for ei, enum in enumerate(msg.enum_type):
        out += _render_enum(enum, (*path, _MSG_ENUM, ei), f"{name}.", notes)
    return out


def _render_enum(enum, path, prefix, notes) -> list[str]:
    out = [f"### {prefix}{enum.name}", ""]
    if path in notes:
        out += [_prose(notes[path]), ""]
    out += ["| value | number | description |", "| --- | --- | --- |"]
    for vi, value in enumerate(enum.value):
        note = _cell(notes.get((*path, _ENUM_VALUE, vi), ""))
        out.append(f"| `{value.name}` | {value.number} | {note} |")
    return [*out, ""]


# -- MkDocs hook -------------------------------------------------------------------------------


def on_files(files, config):
    """Add the generated ``reference/*.md`` pages to the site (MkDocs event)."""
    from mkdocs.structure.files import File

    for name, text in render_all().items():
        files.append(File.generated(config, f"{SITE_DIR}/{name}", content=text))
    return files


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the pages")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    pages = render_all()
    for name, text in pages.items():
        (args.out / name).write_text(text, encoding="utf-8")
    print(f"wrote {len(pages)} pages into {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
