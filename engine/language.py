"""Which language a text is in, and its content words, for prompts and checks in many languages.

py3langid (a maintained fork of langid.py: a naive Bayes model over byte n-grams, 5 MB, about
0.1 ms per short text once loaded) rather than a hand-written stop-word vote, restricted to the
languages Arbor has worked examples for so a short English text is not called Luxembourgish.
Short texts ("x", "help", "Tokyo") give no reliable answer, so ``detect_language`` says None
for them instead of guessing. Stems come from the Snowball stemmers, so "launch" and "launching",
"Revolution" and "revolutionary" count as the same word when relevance is scored.
"""

from __future__ import annotations

import functools
import re
import threading
from typing import Any

#: Languages detection may answer, and that have worked examples in ``assets/prompts``.
LANGUAGES: dict[str, str] = {
    "en": "English",
    "fr": "French",
    "de": "German",
    "es": "Spanish",
    "it": "Italian",
    "pt": "Portuguese",
    "nl": "Dutch",
}
#: Below this probability the text's language is unknown (None), not a guess.
MIN_CONFIDENCE = 0.9
#: Texts with fewer words than this are too short to tell their language.
MIN_WORDS = 3

_STEMMER_NAMES = {
    "en": "english",
    "fr": "french",
    "de": "german",
    "es": "spanish",
    "it": "italian",
    "pt": "portuguese",
    "nl": "dutch",
}
_WORD = re.compile(r"[^\W\d_]+(?:['’-][^\W\d_]+)*", re.UNICODE)
_lock = threading.Lock()


@functools.cache
def _identifier() -> Any:
    from py3langid.langid import MODEL_FILE, LanguageIdentifier

    identifier = LanguageIdentifier.from_model_file(MODEL_FILE, norm_probs=True)
    identifier.set_languages(list(LANGUAGES))
    return identifier


def words(text: str) -> list[str]:
    """The words of ``text``, case-folded (letters only: numbers and punctuation dropped)."""
    return [w.casefold() for w in _WORD.findall(text)]


def detect_language(text: str) -> str | None:
    """The ISO 639-1 code of ``text``'s language, or None when it is too short or unclear."""
    if len(words(text)) < MIN_WORDS:
        return None
    with _lock:  # the identifier keeps no state per call, but its first load must happen once
        identifier = _identifier()
    language, probability = identifier.classify(text)
    return str(language) if probability >= MIN_CONFIDENCE else None


def language_name(code: str | None) -> str:
    return LANGUAGES.get(code or "", "unknown")


@functools.cache
def _stemmer(language: str) -> Any:
    import snowballstemmer

    return snowballstemmer.stemmer(_STEMMER_NAMES.get(language, "english"))


@functools.cache
def _stopwords(language: str) -> frozenset[str]:
    from assets import asset_path

    path = asset_path("language") / "stopwords.json"
    import json

    table: dict[str, list[str]] = json.loads(path.read_text(encoding="utf-8"))
    return frozenset(table.get(language, []) + table.get("en", []))


def content_words(text: str, language: str | None = None) -> list[str]:
    """The words that carry meaning, in order: stop words (of ``language`` and English) and
    one-letter words left out. ``language`` None means the text's detected language."""
    stop = _stopwords(language or detect_language(text) or "en")
    return [w for w in words(text) if len(w) > 1 and w not in stop]


def content_stems(text: str, language: str | None = None) -> set[str]:
    """Stems of the words that carry meaning (stop words and one-letter words left out).

    ``language`` picks the stemmer and stop words; None means the text's own detected
    language, English when that is unknown.
    """
    language = language or detect_language(text) or "en"
    stop = _stopwords(language)
    stemmer = _stemmer(language)
    return {stemmer.stemWord(w) for w in words(text) if len(w) > 1 and w not in stop}
