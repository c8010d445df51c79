"""Turn Debian man pages into the markdown/plain-text documents of the quality benchmark.

The documents under `docs/` were made with this script from man pages shipped in Debian
packages (bookworm). To rebuild them:

    mkdir /tmp/qdebs && cd /tmp/qdebs
    apt-get download chrony cron logrotate mbpoll mosquitto nut-client nut-server \
        smartmontools watchdog
    for f in *.deb; do dpkg -x "$f" root; done
    apt-get install mandoc
    python -m tests.bench.quality.convert_manpages /tmp/qdebs/root

Each man page is rendered by `mandoc -T html` (which understands every man(7) dialect the
generators use: DocBook, asciidoc, asciidoctor, hand-written roff) and the HTML is turned into
markdown: man sections become `##` headings, subsections `###`, and each tagged option or
directive (`.TP`, `.IP` with a bold tag) becomes a heading one level below the section it is
in, so that the retriever can cite "mosquitto.conf(5) > General Options > autosave_interval".
Inline formatting is dropped (the documents are read by a retriever, not a person), examples
stay as fenced code blocks. A `.txt` target is rendered as plain text instead (`mandoc -T utf8`
with overstrike removed, like `man | col -b`).
"""

from __future__ import annotations

import argparse
import gzip
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path

HERE = Path(__file__).resolve().parent
DOCS = HERE / "docs"

# (package, man page path inside the extracted package, output file name)
SOURCES: tuple[tuple[str, str, str], ...] = (
    ("mosquitto", "usr/share/man/man5/mosquitto.conf.5.gz", "mosquitto-conf.md"),
    ("chrony", "usr/share/man/man5/chrony.conf.5.gz", "chrony-conf.md"),
    ("smartmontools", "usr/share/man/man5/smartd.conf.5.gz", "smartd-conf.md"),
    ("nut-client", "usr/share/man/man5/upsmon.conf.5.gz", "upsmon-conf.md"),
    ("nut-server", "usr/share/man/man5/ups.conf.5.gz", "ups-conf.md"),
    ("nut-server", "usr/share/man/man8/apcsmart.8.gz", "apcsmart.md"),
    ("logrotate", "usr/share/man/man8/logrotate.8.gz", "logrotate.md"),
    ("watchdog", "usr/share/man/man5/watchdog.conf.5.gz", "watchdog-conf.md"),
    ("mbpoll", "usr/share/man/man1/mbpoll.1.gz", "mbpoll.md"),
    ("cron", "usr/share/man/man5/crontab.5.gz", "crontab-5.txt"),
)

_VOID = frozenset({"br", "hr", "img", "meta", "col", "wbr", "input", "link"})
_BR = "\x00"  # stands for <br/> until a paragraph is assembled
_MAX_LEVEL = 6


@dataclass
class Node:
    tag: str
    attrs: dict[str, str] = field(default_factory=dict)
    children: list[Node | str] = field(default_factory=list)

    @property
    def classes(self) -> set[str]:
        return set(self.attrs.get("class", "").split())


class _TreeBuilder(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.root = Node("root")
        self._stack = [self.root]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        node = Node(tag, {k: v or "" for k, v in attrs})
        self._stack[-1].children.append(node)
        if tag not in _VOID:
            self._stack.append(node)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self._stack[-1].children.append(Node(tag, {k: v or "" for k, v in attrs}))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self._stack) - 1, 0, -1):
            if self._stack[i].tag == tag:
                del self._stack[i:]
                return

    def handle_data(self, data: str) -> None:
        self._stack[-1].children.append(data)


def parse_html(text: str) -> Node:
    builder = _TreeBuilder()
    builder.feed(text)
    builder.close()
    return builder.root


_INLINE = frozenset({"b", "i", "a", "span", "code", "em", "strong", "small", "sub", "sup", "br"})


def _raw_text(node: Node | str) -> str:
    if isinstance(node, str):
        return node
    if node.tag == "br":
        return _BR
    return "".join(_raw_text(c) for c in node.children)


def _inline(parts: list[Node | str]) -> str:
    """Text of inline content: whitespace collapsed, <br/> kept as a line break."""
    raw = "".join(_raw_text(p) for p in parts)
    lines = [" ".join(seg.split()) for seg in raw.split(_BR)]
    return "\n".join(line for line in lines if line).strip()


def _pre(node: Node) -> str:
    raw = _raw_text(node)
    # mandoc puts <br/> on a line of its own inside <pre>: the newlines already break the lines.
    raw = raw.replace("\n" + _BR + "\n", "\n").replace(_BR, "\n")
    return raw.strip("\n")


def _safe_paragraph(text: str) -> str:
    """Keep a paragraph from being read as markdown structure (heading, fence, setext line)."""
    out = []
    for line in text.split("\n"):
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            raise ValueError(f"paragraph line would open a code fence: {line!r}")
        if stripped.startswith("#") or re.fullmatch(r"[=-]+", stripped):
            out.append(" " + stripped)  # a leading space: no heading, no setext underline
        else:
            out.append(line)
    return "\n".join(out)


_LIST_MARKER = re.compile(r"[\u2022\u00b7*+-]|\(?\d+[.)]|\(?[a-z][.)]")


def _is_heading_term(term: str) -> bool:
    """A tag that names something; a bare bullet or item number does not."""
    return any(c.isalnum() for c in term) and not _LIST_MARKER.fullmatch(term)


def _is_blank(child: Node | str) -> bool:
    return isinstance(child, str) and not child.strip()


class MarkdownWriter:
    def __init__(self) -> None:
        self.blocks: list[str] = []

    def heading(self, level: int, text: str) -> None:
        text = " ".join(text.split())
        if not text:
            return
        if level > _MAX_LEVEL:
            self.paragraph(text)
            return
        self.blocks.append("#" * level + " " + text)

    def paragraph(self, text: str) -> None:
        if text.strip():
            self.blocks.append(_safe_paragraph(text))

    def code(self, text: str) -> None:
        if text.strip():
            self.blocks.append("```\n" + text + "\n```")

    def table(self, rows: list[list[str]]) -> None:
        rows = [r for r in rows if any(c for c in r)]
        if not rows:
            return
        width = max(len(r) for r in rows)
        cells = [[c.replace("|", "\\|") for c in r] + [""] * (width - len(r)) for r in rows]
        lines = ["| " + " | ".join(cells[0]) + " |", "|" + " --- |" * width]
        lines += ["| " + " | ".join(r) + " |" for r in cells[1:]]
        self.blocks.append("\n".join(lines))

    def text(self) -> str:
        return "\n\n".join(self.blocks) + "\n"


def _convert_container(node: Node, out: MarkdownWriter, base: int, depth: int) -> None:
    """Render the children of a block container (section, div, dd, li...)."""
    children = node.children
    inline_run: list[Node | str] = []

    def flush() -> None:
        if inline_run:
            out.paragraph(_inline(inline_run))
            inline_run.clear()

    i = 0
    while i < len(children):
        child = children[i]
        if isinstance(child, str) or child.tag in _INLINE:
            inline_run.append(child)
            i += 1
            continue
        flush()
        nxt = i + 1
        while nxt < len(children) and _is_blank(children[nxt]):
            nxt += 1
        follower = children[nxt] if nxt < len(children) else None
        if (
            child.tag == "p"
            and isinstance(follower, Node)
            and follower.tag == "div"
            and "Bd-indent" in follower.classes
        ):
            # A bold tag line followed by an indented body: an option or directive.
            term = _inline(child.children).replace("\n", " ")
            if _is_heading_term(term):
                out.heading(base + depth, term)
                _convert_container(follower, out, base, depth + 1)
            else:
                _convert_container(follower, out, base, depth)
            i = nxt + 1
            continue
        _convert_block(child, out, base, depth)
        i += 1
    flush()


def _convert_block(node: Node, out: MarkdownWriter, base: int, depth: int) -> None:
    tag = node.tag
    if tag == "table" and ({"head", "foot"} & node.classes):
        return
    if tag == "section":
        sub = 3 if "Sh" in node.classes else 4
        _convert_container(node, out, sub, 0)
    elif tag == "h1":
        out.heading(2, _inline(node.children))
    elif tag == "h2":
        out.heading(3, _inline(node.children))
    elif tag == "p":
        out.paragraph(_inline(node.children))
    elif tag == "pre":
        out.code(_pre(node))
    elif tag == "dl":
        # Tags whose body is empty belong to the next tag: logrotate's "postrotate / script /
        # endscript" is three <dt> with one description.
        terms: list[str] = []
        for child in node.children:
            if not isinstance(child, Node):
                continue
            if child.tag == "dt":
                terms.append(_inline(child.children).replace("\n", " "))
            elif child.tag == "dd":
                if not _inline([child]):
                    continue
                term = " ".join(t for t in terms if t)
                if _is_heading_term(term):
                    out.heading(base + depth, term)
                    _convert_container(child, out, base, depth + 1)
                else:
                    _convert_container(child, out, base, depth)
                terms = []
    elif tag in {"ul", "ol"}:
        items = [c for c in node.children if isinstance(c, Node) and c.tag == "li"]
        for n, li in enumerate(items, start=1):
            item = MarkdownWriter()
            _convert_container(li, item, base, depth)
            body = " ".join(" ".join(b.split()) for b in item.blocks)
            out.blocks.append(("- " if tag == "ul" else f"{n}. ") + body)
    elif tag == "table":
        rows: list[list[str]] = []
        for tr in _find_all(node, "tr"):
            cells = [c for c in tr.children if isinstance(c, Node) and c.tag in {"td", "th"}]
            rows.append([_inline(c.children).replace("\n", " ") for c in cells])
        out.table(rows)
    else:  # div, dd, li, root and anything unknown: a container
        _convert_container(node, out, base, depth)


def _find_all(node: Node, tag: str) -> list[Node]:
    found: list[Node] = []
    for child in node.children:
        if isinstance(child, Node):
            if child.tag == tag:
                found.append(child)
            found.extend(_find_all(child, tag))
    return found


def _find_class(node: Node, cls: str) -> Node | None:
    for child in node.children:
        if isinstance(child, Node):
            if cls in child.classes:
                return child
            hit = _find_class(child, cls)
            if hit is not None:
                return hit
    return None


def html_to_markdown(html: str, section: str = "") -> str:
    root = parse_html(html)
    title_cell = _find_class(root, "head-ltitle")
    page = _inline(title_cell.children) if title_cell else ""
    if page.endswith("()") and section:
        page = f"{page[:-2]}({section})"
    name_line = ""
    for sh in _find_all(root, "section"):
        h1 = next((c for c in sh.children if isinstance(c, Node) and c.tag == "h1"), None)
        if h1 is not None and _inline(h1.children).upper() == "NAME":
            paras = [c for c in sh.children if isinstance(c, Node) and c.tag == "p"]
            if paras:
                name_line = _inline(paras[0].children).replace("\n", " ")
            break
    out = MarkdownWriter()
    description = re.split(r" [-\u2010\u2013\u2014] ", name_line, maxsplit=1)[-1]
    title = f"{page.lower()}: {description}" if page and description else page or name_line
    out.heading(1, title)
    body = _find_class(root, "manual-text") or root
    _convert_container(body, out, 3, 0)
    return out.text()


def _mandoc(source: Path, output_format: str) -> str:
    mandoc = shutil.which("mandoc")
    if mandoc is None:
        raise SystemExit("mandoc is needed: apt-get install mandoc")
    data = source.read_bytes()
    if source.suffix == ".gz":
        data = gzip.decompress(data)
    options = ["-O", "fragment"] if output_format == "html" else ["-O", "width=78"]
    result = subprocess.run(
        [mandoc, "-T", output_format, *options],
        input=data,
        capture_output=True,
        check=True,
    )
    return result.stdout.decode("utf-8")


def source_notice(roff: str) -> str:
    """The copyright notice a man page carries in roff comments, which rendering drops.

    Some pages (crontab(5), smartd.conf(5)) keep their licence notice in a leading `.\\"`
    comment block or an `.ig` block; the licence asks that it is not removed, so it is carried
    over to the end of the converted document.
    """
    lines = roff.splitlines()
    kept: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        if line.startswith('.\\"'):
            kept.append(line[3:])
        elif line.strip() == ".ig":
            i += 1
            while i < len(lines) and lines[i].strip() != "..":
                kept.append(lines[i])
                i += 1
            break  # the notice block; what follows is macro definitions
        elif line.strip():
            break
        i += 1
    cleaned = [re.sub(r"^\s*(/\*|\*/|\*)?\s?", "", k).rstrip() for k in kept]
    text = "\n".join(c for c in cleaned if c.strip() not in {"", "*/"}).strip()
    if "copyright" not in text.lower():
        return ""
    return "\n".join(c for c in text.splitlines() if not c.startswith("$Id"))


def convert(source: Path, target: Path) -> None:
    data = source.read_bytes()
    roff = (gzip.decompress(data) if source.suffix == ".gz" else data).decode("utf-8", "replace")
    notice = source_notice(roff)
    if target.suffix == ".txt":
        text = re.sub(r".\x08", "", _mandoc(source, "utf8"))
        text = "\n".join(line.rstrip() for line in text.splitlines()).strip("\n") + "\n"
        if notice:
            indented = "\n".join("       " + line for line in notice.splitlines())
            text += f"\nLICENCE NOTICE (from the man page source)\n{indented}\n"
    else:
        section = source.name.removesuffix(".gz").rsplit(".", 1)[-1]
        text = html_to_markdown(_mandoc(source, "html"), section)
        if notice:
            text += f"\n## LICENCE NOTICE (from the man page source)\n\n```\n{notice}\n```\n"
    target.write_text(text, encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("root", type=Path, help="directory the .deb packages were dpkg -x'ed into")
    parser.add_argument("--out", type=Path, default=DOCS)
    args = parser.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    for _package, rel, name in SOURCES:
        source = args.root / rel
        if not source.exists():
            print(f"missing {source}", file=sys.stderr)
            return 1
        target = args.out / name
        convert(source, target)
        print(f"{name}: {target.stat().st_size} bytes from {rel}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
