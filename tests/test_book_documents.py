"""Every program of the course's source documents is reproduced, as written, in the book.

The five source documents (Chinese articles) sit beside the repository in ``shared/seeds/``
(``../shared/seeds`` from the repository root). The test extracts every fenced code block from
them and looks for it among the fenced blocks of the book's sources (``book/*.md``, any chapter).
Lines are compared after normalising whitespace (indentation and runs of blanks); blank lines are
ignored. A line of the document that carries a ``#`` comment may be followed in the book by a
translation of that comment, so ``# 定义网络模型 — define the network model`` reproduces
``# 定义网络模型``; everything else must be identical, in the same order, with nothing in between.
"""
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FENCE = re.compile(r"^(?P<indent>[ \t]*)(?P<fence>`{3,}|~{3,})(?P<info>[^\n`]*)$")


def find_seeds():
    """shared/seeds in the repository's parent folder or any folder above it (worktrees sit deeper)."""
    for folder in ROOT.parents:
        seeds = folder / "shared" / "seeds"
        if seeds.is_dir() and any(seeds.glob("*.txt")):
            return seeds
    return None


SEEDS = find_seeds()


def fenced_blocks(text):
    """The contents of every fenced code block of a Markdown text, as lists of lines."""
    blocks, lines, opened = [], [], None
    for line in text.splitlines():
        match = FENCE.match(line)
        if opened is None:
            if match:
                opened, lines = match.group("fence"), []
        elif match and match.group("fence").startswith(opened[0]) and len(match.group("fence")) >= len(opened) \
                and not match.group("info").strip():
            blocks.append(lines)
            opened = None
        else:
            lines.append(line)
    return blocks


def normalized(lines):
    """Non-blank lines with indentation removed and inner runs of whitespace collapsed."""
    return [" ".join(line.split()) for line in lines if line.strip()]


def reproduces(book_line, document_line):
    if book_line == document_line:
        return True
    # the document's comment kept, its translation appended
    return "#" in document_line and book_line.startswith(document_line + " ")


def reproduced_in(document_block, book_blocks):
    return any(len(block) == len(document_block) and all(map(reproduces, block, document_block))
               for block in book_blocks)


def document_code_blocks():
    if SEEDS is None:
        return []
    found = []
    for path in sorted(SEEDS.glob("*.txt")):
        for number, block in enumerate(fenced_blocks(path.read_text(encoding="utf-8")), start=1):
            lines = normalized(block)
            if lines:
                found.append(pytest.param(lines, id=f"{path.stem[:3]}-block{number}-{lines[0][:30]}"))
    return found


BOOK_BLOCKS = [normalized(block) for page in sorted((ROOT / "book").glob("*.md"))
               for block in fenced_blocks(page.read_text(encoding="utf-8"))]


def test_the_source_documents_are_found_and_hold_code():
    if SEEDS is None:
        pytest.skip("the source documents (shared/seeds/*.txt beside the repository) are not on this machine")
    assert len(document_code_blocks()) >= 13, "fewer code blocks than the five documents hold: extraction broke"


@pytest.mark.parametrize("document_block", document_code_blocks() or
                         [pytest.param(None, marks=pytest.mark.skip(
                             reason="the source documents (shared/seeds/*.txt beside the repository) are absent"))])
def test_every_code_block_of_the_documents_is_in_the_book(document_block):
    found = reproduced_in(document_block, BOOK_BLOCKS)
    assert found, (
        "this program of the source documents is not reproduced verbatim in any fenced block of book/*.md "
        "(whitespace normalised; a comment may be followed by its translation):\n  " + "\n  ".join(document_block[:6]))


def test_matching_rejects_a_changed_line():
    document = ["model = Net()", "x = F.relu(self.fc1(x)) # 注释"]
    assert reproduced_in(document, [["model = Net()", "x = F.relu(self.fc1(x)) # 注释 — a comment"]])
    assert not reproduced_in(document, [["model = Net()", "x = F.relu(self.fc2(x)) # 注释"]])
    assert not reproduced_in(document, [["model = Net()"]])
    assert not reproduced_in(["model = Net()"], [["model = Net() # added"]])
