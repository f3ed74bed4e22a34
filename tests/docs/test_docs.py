"""The README and docs/ as one guide a newcomer can walk: links that resolve, a short README that starts with the two
commands, every cited notes section present, no path outside the repository, every setting documented."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from pydantic import AliasChoices

from shared.ops import access
from shared.settings import Settings
from shared.telemetry import setup as telemetry_setup

REPO = Path(__file__).resolve().parents[2]
README = REPO / "README.md"
DOCS = REPO / "docs"
PROTOCOL_NOTES = DOCS / "protocol-notes.md"
DOMAIN_NOTES = DOCS / "domain-notes.md"
CONFIGURATION = DOCS / "configuration.md"

# Not part of the repository: local tools, caches and what the tests and the demo write.
SKIPPED_DIRS = {".git", ".venv", "node_modules", ".azurite", "__pycache__", ".mypy_cache", ".ruff_cache",
                ".pytest_cache", "dist", ".azure"}
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
INLINE_CODE = re.compile(r"`+[^`]*`+")
# A citation: the page's name, then section numbers (``§2.12, §2.9``, ``§2-§3``, ``section 4.2``), possibly after a
# line break inside a comment or docstring.
CITATION = re.compile(r"(protocol|domain)-notes\.md`*((?:[\s#/*,\-\u2013§]|and|sections?|\d|\.(?=\d))*)")
SECTION_NUMBER = re.compile(r"(?:§\s*|sections?\s+)(\d+(?:\.\d+)?)")
NOTES_SECTION = re.compile(r"^#{2,3}\s+(\d+(?:\.\d+)?)[.\s]")


def markdown_pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def outside_code(text: str) -> Iterator[str]:
    """The lines of a Markdown text that are not inside a fenced code block."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = INLINE_CODE.sub(lambda m: m.group(0).strip("`"), heading)
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", text)  # a link in a heading keeps only its text
    text = re.sub(r"[^\w\- ]", "", text.lower())
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    seen: dict[str, int] = {}
    found: set[str] = set()
    for line in outside_code(page.read_text(encoding="utf-8")):
        match = HEADING.match(line)
        if not match:
            continue
        base = slug(match.group(2))
        count = seen.get(base, 0)
        seen[base] = count + 1
        found.add(base if count == 0 else f"{base}-{count}")
    return found


def relative_links(page: Path) -> list[str]:
    targets: list[str] = []
    for line in outside_code(page.read_text(encoding="utf-8")):
        for target in LINK.findall(INLINE_CODE.sub("", line)):
            if not re.match(r"^[a-z][a-z0-9+.-]*:", target, re.IGNORECASE):  # http:, https:, mailto: ...
                targets.append(target)
    return targets


def repository_files() -> Iterator[Path]:
    for path in sorted(REPO.rglob("*")):
        if path.is_file() and not SKIPPED_DIRS.intersection(path.relative_to(REPO).parts):
            try:
                text = path.read_text(encoding="utf-8")
            except (UnicodeDecodeError, OSError):
                continue  # binary (docs/dashboard.png)
            if "\0" not in text:
                yield path


def repository_texts() -> Iterator[tuple[Path, str]]:
    for path in repository_files():
        yield path, path.read_text(encoding="utf-8")


def notes_sections(page: Path) -> set[str]:
    return {m.group(1) for line in outside_code(page.read_text(encoding="utf-8"))
            if (m := NOTES_SECTION.match(line))}


def cited_sections(kind: str) -> dict[str, list[str]]:
    """Section number -> the files citing it, for ``docs/<kind>-notes.md §N``."""
    cited: dict[str, list[str]] = {}
    for path, text in repository_texts():
        for match in CITATION.finditer(text):
            if match.group(1) != kind:
                continue
            for number in SECTION_NUMBER.findall(match.group(2)):
                cited.setdefault(number, []).append(str(path.relative_to(REPO)))
    return cited


def test_every_relative_link_in_the_docs_names_a_file_that_exists() -> None:
    broken = [f"{page.relative_to(REPO)}: {target}" for page in markdown_pages() for target in relative_links(page)
              if (path := target.split("#", 1)[0]) and not (page.parent / path).exists()]
    assert broken == []


def test_every_link_anchor_in_the_docs_names_a_heading_of_its_page() -> None:
    broken = []
    for page in markdown_pages():
        for target in relative_links(page):
            if "#" not in target:
                continue
            path, anchor = target.split("#", 1)
            linked = (page.parent / path).resolve() if path else page
            if linked.suffix == ".md" and anchor not in anchors(linked):
                broken.append(f"{page.relative_to(REPO)}: {target}")
    assert broken == []


def test_the_readme_is_under_250_lines() -> None:
    assert len(README.read_text(encoding="utf-8").splitlines()) < 250


def test_the_readme_starts_with_the_two_commands() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    title, blank, fence, demo, test, close = lines[:6]
    assert title.startswith("# ") and blank == "" and fence == "```bash" and close == "```"
    assert demo.startswith("./dev demo ") and test.startswith("./dev test ")


def test_the_readme_contents_lead_to_the_operations_guide_then_deployment() -> None:
    text = README.read_text(encoding="utf-8")
    contents = text[text.index("## Contents"):]
    assert contents.index("(docs/operations.md)") < contents.index("(docs/deployment.md)")
    assert "operations guide, then deployment" in contents


def test_every_cited_protocol_notes_section_exists() -> None:
    cited = cited_sections("protocol")
    assert cited, "no citation of docs/protocol-notes.md found: the pattern is broken"
    missing = {number: files for number, files in cited.items() if number not in notes_sections(PROTOCOL_NOTES)}
    assert missing == {}


def test_every_cited_domain_notes_section_exists() -> None:
    cited = cited_sections("domain")
    assert cited, "no citation of docs/domain-notes.md found: the pattern is broken"
    missing = {number: files for number, files in cited.items() if number not in notes_sections(DOMAIN_NOTES)}
    assert missing == {}


def test_the_protocol_notes_keep_the_section_numbers_of_their_source() -> None:
    expected = {"0", "1", "1.1", "1.2", "1.3", "2", *(f"2.{n}" for n in range(1, 15)), "3", *(f"3.{n}" for n in range(1, 9)),
                "4", *(f"4.{n}" for n in range(1, 6)), "5", "5.1", "5.2", "5.3", "6", "6.1", "6.2", "6.3", "7", "8"}
    assert expected <= notes_sections(PROTOCOL_NOTES)


def test_the_domain_notes_keep_the_section_numbers_of_their_source() -> None:
    assert {str(n) for n in range(1, 12)} <= notes_sections(DOMAIN_NOTES)


def test_nothing_in_the_repository_refers_to_a_path_outside_it() -> None:
    # Spelt in pieces so that this file does not match itself.
    outside = re.compile("|".join([r"\.\./" + "shared", r"/work/" + "shared", r"(?<![\w-])" + "protocols" + r"\.md",
                                   "loyalty-" + r"domain\.md", "loyalty-" + r"maps\.json", "design-" + "sketch"]))
    found = [f"{path.relative_to(REPO)}:{n}: {line.strip()}" for path, text in repository_texts()
             for n, line in enumerate(text.splitlines(), 1) if outside.search(line)]
    assert found == []


def test_every_setting_in_settings_py_is_in_the_configuration_table() -> None:
    names: list[str] = []
    for field in Settings.model_fields.values():
        alias = field.validation_alias
        if isinstance(alias, AliasChoices):
            names.extend(str(choice) for choice in alias.choices)
        else:
            names.append(str(alias))
    table = CONFIGURATION.read_text(encoding="utf-8")
    assert len(names) == len(Settings.model_fields) + 1  # SYNC_STORAGE_CONNECTION or AzureWebJobsStorage
    assert [name for name in names if f"`{name}`" not in table] == []


def test_the_settings_read_outside_settings_py_are_in_the_configuration_table() -> None:
    names = [access.AUTH_SETTING, access.GROUP_SETTING, access.ROLE_SETTING, access.AZURE_SITE,
             access.EASY_AUTH_ENABLED, telemetry_setup.CONNECTION_STRING, telemetry_setup.AUTHENTICATION_STRING]
    table = CONFIGURATION.read_text(encoding="utf-8")
    assert [name for name in names if f"`{name}`" not in table] == []
