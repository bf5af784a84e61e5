"""Sphinx extension: the search index holds Chinese words as well as English ones.

The book is English with the Chinese name of every key term beside it. Sphinx's Chinese
search language (`html_search_language: zh` in _config.yml) stems the English words as the
English language does and segments Chinese text with `jieba`; without jieba it indexes no
Chinese at all, so the build stops here if jieba is missing. jieba's general dictionary does not
know terms such as 反向传播, and cuts them into 反向 / 传播 only; every Chinese name in the
glossary is added to its dictionary, so that a search finds both the whole term (反向传播) and
its parts (梯度 inside 梯度下降).
"""
import logging
import re
from pathlib import Path

CJK_RUN = re.compile(r"[\u3400-\u9fff]+")


def glossary_terms(glossary: Path) -> set[str]:
    """Every run of Chinese characters in the glossary (names, variants, the documents' terms)."""
    return set(CJK_RUN.findall(glossary.read_text(encoding="utf-8")))


def add_glossary_words(app, config):
    if config.html_search_language != "zh":
        return
    try:
        import jieba
    except ImportError as error:
        raise RuntimeError("html_search_language is 'zh' but jieba is not installed: "
                           "pip install -r requirements.txt") from error
    jieba.setLogLevel(logging.WARNING)
    glossary = Path(app.srcdir) / "book" / "glossary.md"
    for word in sorted(glossary_terms(glossary)):
        if len(word) > 1:
            jieba.add_word(word)


def setup(app):
    app.connect("config-inited", add_glossary_words)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
