"""Describers: exemplar reports of one feature -> a short radiological description.

`extractive` (default, offline, deterministic) states the single statement of the training reports (one finding with
its presence and side, or one finding-free sentence) that best predicts where the feature fires, in the reports' own
words.
`transformers:PATH` and `openai:URL[#model]` ask an LLM with a versioned prompt.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import time
import urllib.error
import urllib.request
from collections import Counter
from typing import Optional, Sequence
from urllib.parse import urlparse

from ..data.reports import normalize_deid, normalize_sentence, split_sentences
from ..errors import UserError, loading
from ..labeler import SECTION_OF, is_normal, label_mentions
from ..outputs import atomic_write

logger = logging.getLogger(__name__)
PROMPT_VERSION = "saerad-describe-v1"
PROMPT = """You are a radiologist. A feature of a chest X-ray model fires strongly on the studies whose FINDINGS are \
listed under ACTIVE, and not on those under CONTRAST. Write the one radiological finding that the ACTIVE reports share \
and the CONTRAST reports lack, as one to three short sentences in the style of a chest X-ray report, stating \
laterality and severity only where the ACTIVE reports agree. Write only the sentences.

ACTIVE:
{active}

CONTRAST:
{contrast}
"""
_KEYWORD_SECTIONS = [
    (r"catheter|tube|line|pacemaker|pacer|wire|device|clip|stent|port|lead", "devices"),
    (r"pleura|effusion|pneumothora|costophrenic", "pleura"),
    (r"heart|cardiac|cardio|mediastin|aort|hilar|hila", "heart/mediastinum"),
    (r"bone|rib|spine|spinal|osseous|vertebra|clavicle|fracture|degenerative|scoliosis|kyphosis|sternotomy", "bones"),
    (r"lung|pulmonary|airspace|opaci|nodule|granuloma|atelecta|consolidat|edema|inflat|emphysema|interstitial",
     "lungs"),
]


def tag_description(description: str) -> tuple[list[dict], str]:
    """The labeler's findings of a description (one per observation, strongest status) and its anatomical section."""
    rank = {"negative": 0, "uncertain": 1, "positive": 2}
    best: dict = {}
    for m in label_mentions(description):
        if m["label"] not in best or rank[m["status"]] > rank[best[m["label"]]["status"]]:
            best[m["label"]] = m
    findings = [{k: m[k] for k in ("label", "status", "laterality", "severity")} for m in best.values()]
    sections = [SECTION_OF[f["label"]] for f in findings if f["label"] != "No Finding"]
    if sections:
        return findings, Counter(sections).most_common(1)[0][0]
    lowered = description.lower()
    section = next((s for pattern, s in _KEYWORD_SECTIONS if re.search(pattern, lowered)), "other")
    return findings, section


def _statements(sentence: str) -> frozenset:
    """What a sentence states, one statement each: a labeler finding (label, presence, side), or, without findings,
    the sentence's normalised text."""
    found = {(m["label"], m["status"] != "negative", m["laterality"] or "") for m in label_mentions(sentence)}
    return frozenset(("finding", f) for f in found) if found else frozenset([("text", normalize_sentence(sentence))])


NO_FINDING = ("finding", ("No Finding", True, ""))
NORMAL_SENTENCE = "No acute cardiopulmonary abnormality."


def _normal(statements: set) -> bool:
    """Whether a report's statements make its CheXpert labels No Finding, without labelling it again."""
    return is_normal(s[0] for kind, s in statements if kind == "finding" and s[1])


class Corpus:
    """Sentences and single statements of every report, with document frequencies, for contrastive scoring."""

    def __init__(self, reports: Sequence[str]):
        self.sentences: list[list[tuple[str, frozenset, bool]]] = []  # (sentence, statements, free of de-id tokens)
        self.statements: list[set] = []  # single statements (one finding, or one finding-free sentence) per report
        self.statement_df: Counter = Counter()
        memo: dict = {}
        for report in reports:
            items = []
            for raw in split_sentences(report or "", deid=False):
                sentence = normalize_deid(raw)
                if not re.search(r"[A-Za-z]", sentence):
                    continue
                if sentence not in memo:
                    memo[sentence] = _statements(sentence)
                items.append((sentence, memo[sentence], not re.search(r"X{2,}|_{2,}", raw)))
            self.sentences.append(items)
            stated = set().union(*(statements for _, statements, _ in items)) - {NO_FINDING}
            if _normal(stated):  # a report states No Finding when it states nothing abnormal
                stated.add(NO_FINDING)
            self.statements.append(stated)
            self.statement_df.update(stated)
        self.n = max(1, len(reports))


def extractive_description(corpus: Corpus, rows: Sequence[int], firing: Optional[Sequence[int]] = None,
                           prior: float = 2.0, min_rows: int = 2) -> str:
    """The report sentence whose statement best predicts where the feature fires on the corpus: `firing` (every row
    where it fires; default: its exemplar `rows`) against the other rows, by in-sample detection AUROC with the rates
    shrunk toward the corpus rate by `prior` pseudo-rows, in the firing reports' own words."""
    firing = sorted({r for r in (rows if firing is None else firing) if r >= 0})
    n_fire, n_quiet = len(firing), corpus.n - len(firing)
    if n_fire == 0 or n_quiet <= 0:
        return ""
    counts: Counter = Counter()
    for r in firing:
        counts.update(corpus.statements[r])
    best, best_score = None, 0.5
    for statement, c in counts.items():
        if c < min(min_rows, n_fire):
            continue
        base = corpus.statement_df[statement] / corpus.n
        tpr = (c + prior * base) / (n_fire + prior)
        fpr = (corpus.statement_df[statement] - c + prior * base) / (n_quiet + prior)
        score = 0.5 * (1 + tpr - fpr)
        if score > best_score or (score == best_score and best is not None and repr(statement) < repr(best)):
            best, best_score = statement, score
    if best is None:
        return ""
    # Say it with the firing reports' own sentence: one that states only this, else the most common one that states
    # it (sentences that lost a de-id token last, then shorter).
    options: Counter = Counter()
    for r in firing:
        for sentence, statements, clean in corpus.sentences[r]:
            if best in statements:
                options[(len(statements) > 1, not clean, sentence)] += 1
    if not options:  # No Finding, which normal FINDINGS state by saying nothing abnormal
        return NORMAL_SENTENCE
    (_, _, sentence), _ = min(options.items(), key=lambda kv: (kv[0][0], kv[0][1], -kv[1], len(kv[0][2]), kv[0][2]))
    sentence = sentence[0].upper() + sentence[1:]
    return sentence if sentence.endswith((".", "!", "?")) else sentence + "."


class LLMDescriber:
    """Shared prompt building for the LLM describers: exemplar findings against random non-activating ones."""

    def __init__(self, max_examples: int = 12, seed: int = 0):
        self.max_examples, self.seed = max_examples, seed

    def prompt(self, active: Sequence[str], contrast: Sequence[str]) -> str:
        fmt = lambda texts: "\n".join(f"- {t}" for t in texts[: self.max_examples]) or "- (none)"  # noqa: E731
        return PROMPT.format(active=fmt(active), contrast=fmt(contrast))

    @staticmethod
    def clean(text: str) -> str:
        sentences = split_sentences(text.strip().strip('"'))[:3]
        return " ".join(s.lstrip("-* ").strip() for s in sentences)


class TransformersDescriber(LLMDescriber):
    """A local causal LM (any chat model on disk), greedy decoding."""

    def __init__(self, path: str, max_new_tokens: int = 64, **kw):
        super().__init__(**kw)
        from transformers import AutoModelForCausalLM, AutoTokenizer

        with loading(path, "a causal LM"):
            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path).eval()
        self.max_new_tokens = max_new_tokens

    def __call__(self, active: Sequence[str], contrast: Sequence[str]) -> str:
        import torch

        prompt = self.prompt(active, contrast)
        if getattr(self.tokenizer, "chat_template", None):
            ids = self.tokenizer.apply_chat_template([{"role": "user", "content": prompt}], add_generation_prompt=True,
                                                     return_tensors="pt", return_dict=True)
        else:
            ids = self.tokenizer(prompt, return_tensors="pt")
        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id or self.tokenizer.eos_token_id)
        return self.clean(self.tokenizer.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))


class OpenAIDescriber(LLMDescriber):
    """An OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, Azure OpenAI); responses cached on disk."""

    def __init__(self, url: str, model: Optional[str] = None, retries: int = 4, backoff: float = 1.0,
                 cache_dir: Optional[str] = None, timeout: float = 120.0, credentialed: bool = False, **kw):
        from ..paths import cache_dir as default_cache

        super().__init__(**kw)
        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model, self.retries, self.backoff, self.timeout = model or "default", retries, backoff, timeout
        self.cache = default_cache("llm") if cache_dir is None else cache_dir
        os.makedirs(self.cache, exist_ok=True)
        self.api_key = os.environ.get("SAERAD_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        host = urlparse(self.url).hostname or ""
        if credentialed and host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("127."):
            logger.warning("sending report text of a credentialed dataset to %s, which is not local: check that your "
                           "data use agreement allows it (MIMIC-CXR's does not allow third-party services)", host)

    def __call__(self, active: Sequence[str], contrast: Sequence[str]) -> str:
        prompt = self.prompt(active, contrast)
        body = {"model": self.model, "temperature": 0, "max_tokens": 128,
                "messages": [{"role": "user", "content": prompt}]}
        key = hashlib.sha256(json.dumps([PROMPT_VERSION, self.url, body], sort_keys=True).encode()).hexdigest()
        cached = os.path.join(self.cache, f"{key}.json")
        if os.path.exists(cached):
            with open(cached) as f:
                return self.clean(json.load(f)["content"])
        content = self._post(body)
        atomic_write(cached, json.dumps({"prompt_version": PROMPT_VERSION, "content": content}))
        return self.clean(content)

    def _post(self, body: dict) -> str:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
            headers["api-key"] = self.api_key  # Azure OpenAI reads this header
        last = None
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    return json.loads(response.read())["choices"][0]["message"]["content"]
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
                if err.code not in (408, 409, 429) and err.code < 500:
                    break  # a client error will not mend itself
            except (urllib.error.URLError, TimeoutError, ConnectionError, KeyError, json.JSONDecodeError) as err:
                last = str(err)
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise UserError(f"{self.url}: no usable answer after {self.retries + 1} tries ({last})")


def make_describer(name: str, credentialed: bool = False):
    """`extractive`, `transformers:PATH` or `openai:URL[#model]` -> a describer (None for extractive)."""
    if name == "extractive":
        return None
    kind, _, rest = name.partition(":")
    if kind == "transformers" and rest:
        return TransformersDescriber(rest)
    if kind == "openai" and rest:
        url, _, model = rest.partition("#")
        return OpenAIDescriber(url, model or None, credentialed=credentialed)
    raise UserError(f"describer {name!r} not understood; expected extractive, transformers:PATH or openai:URL[#model]")
