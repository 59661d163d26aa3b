"""The documentation site builds in strict mode and its protocol reference covers every proto.

The reference pages are generated from the ``.proto`` comments at build time (the MkDocs hook
``proto/reference.py``), so they cannot drift; this test checks the generator misses nothing:
every service, rpc, message, field and enum (value) of the compiled protos appears on the
built page of its file.
"""

from __future__ import annotations

import html
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytest.importorskip("mkdocs")
pytest.importorskip("material")


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("site")
    proc = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(out)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "WARNING" not in proc.stderr, proc.stderr[-4000:]
    return out


def _sections(page: str) -> dict[str, str]:
    """Rendered page -> {h3 text: the HTML up to the next h2/h3}."""
    parts = re.split(r"<h[23][^>]*>", page)
    out = {}
    for part in parts[1:]:
        title, _, body = part.partition("</h")
        title = html.unescape(re.sub(r"<[^>]+>", "", title)).strip().rstrip("¶").strip()
        out[title] = body
    return out


def _modules():
    from eap.v1 import federation_pb2, node_api_pb2, types_pb2

    return [federation_pb2, node_api_pb2, types_pb2]


def test_the_reference_covers_every_rpc_message_field_and_enum(site):
    for module in _modules():
        fd = module.DESCRIPTOR
        stem = Path(fd.name).stem
        page = (site / "reference" / stem / "index.html").read_text(encoding="utf-8")
        sections = _sections(page)
        for service in fd.services_by_name.values():
            table = sections[service.name]
            for method in service.methods:
                row = re.search(rf"<code>{method.name}</code>.*?</tr>", table, re.S)
                assert row, f"{stem}: rpc {service.name}.{method.name} missing"
                assert method.input_type.name in row.group(0)
                assert method.output_type.name in row.group(0)
        for message in fd.message_types_by_name.values():
            body = sections.get(message.name)
            assert body is not None, f"{stem}: message {message.name} missing"
            for field in message.fields:
                row = re.search(
                    rf"<code>{field.name}</code></td>\s*<td>.*?</td>\s*<td>"
                    rf"{field.number}</td>",
                    body,
                    re.S,
                )
                assert row, f"{stem}: field {message.name}.{field.name} missing"
        for enum in fd.enum_types_by_name.values():
            body = sections.get(enum.name)
            assert body is not None, f"{stem}: enum {enum.name} missing"
            for value in enum.values:
                assert f"<code>{value.name}</code>" in body, f"{enum.name}.{value.name}"


def test_reference_shows_the_proto_comments(site):
    """Comments reach the page: a field's, an rpc's and a file header's."""
    page = html.unescape((site / "reference" / "node_api" / "index.html").read_text())
    text = re.sub(r"<[^>]+>", "", page)
    assert "Every mutating call carries request_id" in text  # the file header
    assert "Claims (retires) a whole bundle" in text  # an rpc comment
    assert "Ed25519 signature (64 bytes) by the account's holder key" in text  # a field comment


def test_every_page_is_in_the_nav_and_readme_links_resolve(site):
    import yaml

    config = yaml.safe_load((ROOT / "mkdocs.yml").read_text())

    def pages(nav):
        for item in nav:
            for value in item.values():
                yield from pages(value) if isinstance(value, list) else [value]

    in_nav = set(pages(config["nav"]))
    on_disk = {p.relative_to(ROOT / "docs").as_posix() for p in (ROOT / "docs").glob("*.md")}
    assert on_disk <= in_nav, f"pages missing from mkdocs.yml nav: {on_disk - in_nav}"
    readme = (ROOT / "README.md").read_text()
    for target in re.findall(r"\]\(([^)#\s]+)", readme) + re.findall(r"`(docs/[^`]+)`", readme):
        if "://" in target:
            continue
        assert (ROOT / target).exists(), f"README links to missing {target}"
