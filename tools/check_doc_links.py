#!/usr/bin/env python3
"""Every file the crate's rustdoc pages link to exists: images, pages, sources, static files.

Usage: tools/check_doc_links.py [target/doc]

A README or docs page included in the crate docs can carry links that work on GitHub but not in
rustdoc (`docs/screenshot.png`, `BENCHMARKS.md`); rustdoc does not check those. Links into
another crate's docs are left to docs.rs (`cargo doc --no-deps` does not build them).
"""
import html.parser
import os
import sys
import urllib.parse

root = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/doc")
crate = os.path.join(root, "bevy_marketplace")


class Links(html.parser.HTMLParser):
    def __init__(self):
        super().__init__()
        self.links = []

    def handle_starttag(self, tag, attrs):
        for name, value in attrs:
            if name in ("href", "src") and value:
                self.links.append(value)


missing = []
pages = 0
for folder, _, files in os.walk(crate):
    for file in files:
        if not file.endswith(".html"):
            continue
        pages += 1
        page = os.path.join(folder, file)
        parser = Links()
        with open(page, encoding="utf-8") as text:
            content = text.read()
        ends = [content.find(f'id="{section}"') for section in ("trait-implementations", "synthetic-implementations", "blanket-implementations")]
        ends = [end for end in ends if end >= 0]
        parser.feed(content[: min(ends)] if ends else content)
        for link in parser.links:
            parts = urllib.parse.urlsplit(link)
            if parts.scheme or link.startswith(("#", "//")) or not parts.path:
                continue
            target = os.path.normpath(
                os.path.join(folder, urllib.parse.unquote(parts.path))
            )
            inside = os.path.relpath(target, root).split(os.sep)
            other_crate = inside[0] not in ("bevy_marketplace", "static.files", "src", "search.index", "trait.impl", "type.impl") and not inside[0].endswith((".js", ".html", ".css"))
            if not os.path.exists(target) and not other_crate:
                missing.append(f"{os.path.relpath(page, root)}: {link}")

if pages == 0:
    sys.exit(f"no rustdoc pages under {crate}: run `cargo doc` first")
for line in missing:
    print("missing:", line)
if missing:
    sys.exit(f"{len(missing)} link(s) to missing files in {pages} pages")
print(f"{pages} rustdoc pages, every linked file exists")
