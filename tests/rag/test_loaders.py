from __future__ import annotations

from pathlib import Path

import pytest

from gateway.rag.errors import UnreadableDocument, UnsupportedDocument
from gateway.rag.loaders import load_document

DEMO = Path(__file__).resolve().parents[2] / "configs" / "demo-kb"


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def test_markdown_heading_paths_title_and_fences(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "m.md",
        "# Press manual\n\nIntro text.\n\n## Alarms\n\nTable here.\n\n### E203 Pressure low\n\n"
        "Check filter.\n\n```\n# not a heading\n```\n\nSetext\n------\n\nUnder setext.\n",
    )
    doc = load_document(path)
    assert doc.kind == "markdown"
    assert doc.title == "Press manual"
    by_text = {b.text: b.headings for b in doc.blocks}
    assert by_text["Intro text."] == ()
    assert by_text["Table here."] == ("Alarms",)
    assert by_text["Check filter."] == ("Alarms", "E203 Pressure low")
    assert by_text["```\n# not a heading\n```"] == ("Alarms", "E203 Pressure low")
    assert by_text["Under setext."] == ("Setext",)  # a level-2 heading replaces "Alarms"


def test_markdown_with_several_h1_keeps_them_in_paths(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path, "two.md", "# A\n\none\n\n# B\n\ntwo\n"))
    assert doc.title == "two"
    assert [b.headings for b in doc.blocks] == [("A",), ("B",)]


def test_plain_text_underlined_and_caps_headings() -> None:
    doc = load_document(DEMO / "robot-r1-notes.txt")
    assert doc.kind == "text"
    assert doc.title == "Robot R1 - Technician Notes"
    sections = {b.headings for b in doc.blocks}
    assert ("BATTERY",) in sections
    assert ("COMMON FAULTS",) in sections
    battery = next(b for b in doc.blocks if b.headings == ("BATTERY",))
    assert "BAT-R1-3.6V" in battery.text


def test_text_not_utf8_is_decoded_with_a_warning(tmp_path: Path) -> None:
    doc = load_document(write(tmp_path, "latin.txt", "Temp\xe9rature 65 \xb0C".encode("cp1252")))
    assert doc.blocks[0].text == "Température 65 °C"
    assert doc.warnings
    assert "Windows-1252" in doc.warnings[0]


def test_html_structure_scripts_lists_and_tables() -> None:
    doc = load_document(DEMO / "conveyor-c3-guide.html")
    assert doc.kind == "html"
    assert doc.title == "Conveyor C3 - Technician Guide"
    text = "\n".join(b.text for b in doc.blocks)
    assert "pageViews" not in text
    assert "font-family" not in text
    c40 = [b for b in doc.blocks if b.headings == ("Alarm codes", "C-40 Motor overtemperature")]
    assert c40
    assert "PTC thermistor" in c40[0].text
    lockout = [b.text for b in doc.blocks if b.headings == ("Lockout procedure for C3",)]
    assert any(t.startswith("2. Switch off isolator Q31") for t in lockout)
    assert any(
        t == "C-12 | Belt slip detected | Check tension and belt load" for t in text.split("\n")
    )


def make_pdf(pages: list[list[str]], title: str = "Pump P7 manual") -> bytes:
    """A minimal valid PDF (Helvetica text, correct xref offsets), one list of lines per page."""
    n = len(pages)
    font_id = 3 + 2 * n
    info_id = font_id + 1
    objects: dict[int, bytes] = {
        1: b"<< /Type /Catalog /Pages 2 0 R >>",
        2: (
            "<< /Type /Pages /Kids ["
            + " ".join(f"{3 + 2 * i} 0 R" for i in range(n))
            + f"] /Count {n} >>"
        ).encode(),
        font_id: b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>",
        info_id: f"<< /Title ({title}) >>".encode(),
    }
    for i, lines in enumerate(pages):
        page_id, content_id = 3 + 2 * i, 4 + 2 * i
        ops = ["BT", "/F1 12 Tf", "14 TL", "72 720 Td"]
        for line in lines:
            escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
            ops.append(f"({escaped}) Tj T*")
        ops.append("ET")
        stream = "\n".join(ops).encode("latin-1")
        objects[page_id] = (
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] "
            f"/Resources << /Font << /F1 {font_id} 0 R >> >> /Contents {content_id} 0 R >>"
        ).encode()
        objects[content_id] = (
            f"<< /Length {len(stream)} >>\nstream\n".encode() + stream + b"\nendstream"
        )
    out = bytearray(b"%PDF-1.4\n")
    offsets = {}
    for obj_id in sorted(objects):
        offsets[obj_id] = len(out)
        out += f"{obj_id} 0 obj\n".encode() + objects[obj_id] + b"\nendobj\n"
    xref = len(out)
    size = max(objects) + 1
    out += f"xref\n0 {size}\n0000000000 65535 f \n".encode()
    for obj_id in range(1, size):
        out += f"{offsets[obj_id]:010d} 00000 n \n".encode()
    out += f"trailer\n<< /Size {size} /Root 1 0 R /Info {info_id} 0 R >>\n".encode()
    out += f"startxref\n{xref}\n%%EOF\n".encode()
    return bytes(out)


def test_pdf_pages_are_kept(tmp_path: Path) -> None:
    pdf = make_pdf(
        [
            ["Pump P7 start-up", "Open the suction valve before starting."],
            ["Alarm P7-31 seal leak", "Replace mechanical seal MS-40 (part 7731-C)."],
            [],
        ]
    )
    doc = load_document(write(tmp_path, "p7.pdf", pdf))
    assert doc.kind == "pdf"
    assert doc.title == "Pump P7 manual"
    pages = {b.page for b in doc.blocks}
    assert pages == {1, 2}
    page2 = " ".join(b.text for b in doc.blocks if b.page == 2)
    assert "MS-40" in page2
    assert "7731-C" in page2
    assert doc.warnings == ("page 3 has no extractable text (scanned image?)",)


def test_corrupt_pdf_is_a_typed_error(tmp_path: Path) -> None:
    path = write(tmp_path, "bad.pdf", b"%PDF-1.4\nthis is not a pdf at all")
    with pytest.raises(UnreadableDocument) as info:
        load_document(path)
    assert info.value.path == path
    assert str(path) in str(info.value)


def test_csv_one_record_per_block_with_metadata() -> None:
    doc = load_document(DEMO / "maintenance-log.csv")
    assert doc.kind == "csv"
    assert len(doc.blocks) == 40
    assert all(b.atomic for b in doc.blocks)
    second = doc.blocks[1]
    assert second.headings == ("2026-01-07 / P2 (row 2)",)
    assert second.metadata["alarm_or_work_order"] == "E203"
    assert second.metadata["parts"] == "HF-2231-B; OR-85x3"
    assert "action: Hydraulic pressure low" in second.text


def test_csv_semicolon_dialect_and_short_rows(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "log.csv",
        "Date;Asset;Note\n2026-05-01;C3;belt slip; tension reset\n2026-05-02;R1\n\n",
    )
    doc = load_document(path)
    assert [b.headings[0] for b in doc.blocks] == [
        "2026-05-01 / C3 (row 1)",
        "2026-05-02 / R1 (row 2)",
    ]
    assert doc.blocks[0].metadata["extra 1"] == "tension reset"
    assert len(doc.warnings) == 3  # dialect guessed from the header, two ragged rows


def test_unsupported_extension(tmp_path: Path) -> None:
    path = write(tmp_path, "drawing.dwg", b"AC1032")
    with pytest.raises(UnsupportedDocument) as info:
        load_document(path)
    assert info.value.path == path


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("binary.txt", b"\x00\x01\x02\x03"),
        ("empty.md", b"\n\n   \n"),
        ("header-only.csv", b"a,b\n"),
    ],
)
def test_unreadable_documents(tmp_path: Path, name: str, content: bytes) -> None:
    with pytest.raises(UnreadableDocument):
        load_document(write(tmp_path, name, content))


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(UnreadableDocument, match="cannot read"):
        load_document(tmp_path / "gone.md")
