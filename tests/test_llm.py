"""The LLM describers: prompt, cleaning, the guard (with scripted answers), fallback, the backends, and SmolLM2 run
for real on one feature. No test asserts that a small model's description is right."""

import json
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from saerad.interpret.corpus import Corpus, Feature
from saerad.interpret.describe import make_describer, tag_description
from saerad.interpret.llm import (
    EXAMPLES,
    PROMPT_VERSION,
    LLMDescriber,
    OpenAIDescriber,
    TransformersDescriber,
    build_prompt,
    clean,
    guard,
    snippets,
)

EFFUSION = ["There is a small left pleural effusion. The heart is normal.", "Small left pleural effusion persists.",
            "Left pleural effusion is small. No pneumothorax."]
NORMAL = ["The lungs are clear.", "Lungs are clear. Heart size is normal.", "No acute findings.",
          "The lungs are clear. No effusion."]
CORPUS = Corpus(EFFUSION + NORMAL * 3)
EFFUSION_ROWS = [0, 1, 2]


class Scripted(LLMDescriber):
    """A backend that answers from a script, so the guard is tested on exactly the answers a model might give."""

    def __init__(self, answers):
        self.answers, self.prompts = list(answers), []

    def complete(self, prompts):
        self.prompts += prompts
        return [self.answers.pop(0) for _ in prompts]


def _describe(answer, truncated=False, rows=EFFUSION_ROWS):
    describer = Scripted([(answer, truncated)])
    (description,) = describer(CORPUS, [Feature(0, rows, rows)])
    return description, describer.prompts[0]


def test_a_supported_one_sentence_answer_is_kept():
    description, prompt = _describe(" Small left pleural effusion.\n")
    assert (description.text, description.source, description.rejected) == ("Small left pleural effusion.", "llm",
                                                                             None)


@pytest.mark.parametrize("answer,reason", [
    ("Small right pleural effusion.", "states right Pleural Effusion (positive), which no exemplar"),  # wrong side
    ("There is a large pneumothorax.", "states Pneumothorax (positive), which no exemplar"),  # invented
    ("The chest X-ray model fires strongly on studies whose findings are listed under ACTIVE.", "repeats the prompt"),
    ('Reports: "Small left pleural effusion."', "repeats the prompt"),
    ("Small left pleural effusion. The heart is enlarged. Lungs are clear.", "not one sentence"),
    ("The heart is enlarged.", "repeats the prompt"),  # a worked example's answer the exemplars do not give
    ("", "no answer"),
])
def test_the_guard_replaces_a_failing_answer_with_the_extractive_description_and_says_why(answer, reason):
    description, _ = _describe(answer)
    assert description.source == "extractive_fallback" and description.rejected.startswith(reason)
    assert "effusion" in description.text.lower()  # the extractive description of these exemplars
    assert {f["label"] for f in tag_description(description.text)[0]} == {"Pleural Effusion"}


def test_a_negative_or_finding_free_answer_needs_the_exemplars_to_say_so():
    assert guard("No pneumothorax.", CORPUS, [2]) is None  # exemplar 2 says it
    assert guard("No pneumothorax.", CORPUS, [0]).startswith("states Pneumothorax (negative)")
    assert guard("No acute cardiopulmonary abnormality.", CORPUS, [3, 4]) is None  # normal exemplars
    assert guard("No acute cardiopulmonary abnormality.", CORPUS, EFFUSION_ROWS).startswith("repeats the prompt")
    assert guard("No acute disease.", CORPUS, EFFUSION_ROWS).startswith("states No Finding")
    assert guard("Stable appearance since prior.", CORPUS, EFFUSION_ROWS) is None
    assert guard("Unchanged.", CORPUS, EFFUSION_ROWS) == "not a radiological statement"


def test_clean_drops_a_sentence_cut_off_by_the_token_limit_and_keeps_the_first_line():
    assert clean("Small left effusion. And the CONTR", truncated=True) == "Small left effusion."
    assert clean("Small left effusion\nReports: ...") == "Small left effusion."
    assert clean('"- small left effusion."') == "Small left effusion."
    assert clean("Small left effusion and", truncated=True) == ""


def test_the_prompt_quotes_the_exemplar_sentences_that_state_a_finding():
    quotes = snippets(CORPUS, EFFUSION_ROWS)
    assert quotes[0] == "Small left pleural effusion persists." or "effusion" in quotes[0].lower()
    assert "The heart is normal." not in quotes and all("effusion" in q.lower() for q in quotes)
    prompt = build_prompt(quotes)
    assert prompt.endswith("\nDescription:") and prompt.count("Description:") == len(EXAMPLES) + 1
    assert json.dumps(quotes[0]) in prompt.rsplit("Reports:", 1)[1]
    assert snippets(CORPUS, [3, 4]) and all("clear" in q or "normal" in q for q in snippets(CORPUS, [3, 4]))


@pytest.mark.parametrize("text,section", [
    ("The report is unchanged in this portion, with support from the prior.", "other"),
    ("A left chest port is seen.", "devices"),
    ("Sternotomy wires are intact.", "devices"),
])
def test_sections_match_whole_device_words(text, section):
    assert tag_description(text)[1] == section


def _tiny_causal_lm(path):
    import torch
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    tok = Tokenizer(models.WordLevel(unk_token="[UNK]"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    words = "reports description small left pleural effusion heart normal lungs clear"
    tok.train_from_iterator([words, "Planted sign is seen ."], trainers.WordLevelTrainer(special_tokens=["[UNK]",
                                                                                                         "[EOS]"]))
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", eos_token="[EOS]")
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_positions=1024, n_embd=16, n_layer=1, n_head=2)
    GPT2LMHeadModel(config).save_pretrained(path)
    tokenizer.save_pretrained(path)


def test_transformers_describer_batches_prompts_and_is_deterministic(tmp_path):
    _tiny_causal_lm(tmp_path / "lm")
    describer = TransformersDescriber(str(tmp_path / "lm"), max_new_tokens=6, batch_size=2)
    features = [Feature(0, EFFUSION_ROWS, EFFUSION_ROWS), Feature(1, [3, 4], [3, 4]), Feature(2, [5, 6], [5, 6])]
    first, again = describer(CORPUS, features), describer(CORPUS, features)
    assert [d.text for d in first] == [d.text for d in again] and len(first) == 3
    assert all(d.source in ("llm", "extractive_fallback") and d.text for d in first)  # never an unguarded answer


class _ChatServer(BaseHTTPRequestHandler):
    requests: list = []
    fail_first = 1

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).requests.append({"path": self.path, "body": body, "auth": self.headers.get("Authorization")})
        if type(self).fail_first > 0:
            type(self).fail_first -= 1
            self.send_response(503)
            self.end_headers()
            return
        payload = json.dumps({"choices": [{"message": {"content": "Small left pleural effusion."},
                                           "finish_reason": "stop"}]})
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(payload.encode())

    def log_message(self, *args):
        pass


def test_openai_describer_request_retries_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    server = HTTPServer(("127.0.0.1", 0), _ChatServer)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    feature = [Feature(0, EFFUSION_ROWS, EFFUSION_ROWS)]
    try:
        url = f"http://127.0.0.1:{server.server_port}/v1"
        describer = OpenAIDescriber(url, "tiny-model", backoff=0.01, cache_dir=str(tmp_path / "cache"))
        (answer,) = describer(CORPUS, feature)
        assert (answer.text, answer.source) == ("Small left pleural effusion.", "llm")
        assert len(_ChatServer.requests) == 2  # one 503, then the answer
        request = _ChatServer.requests[-1]
        assert request["path"] == "/v1/chat/completions" and request["auth"] == "Bearer sk-test"
        assert request["body"]["model"] == "tiny-model" and request["body"]["temperature"] == 0
        assert "Small left pleural effusion persists." in request["body"]["messages"][-1]["content"]
        again = OpenAIDescriber(url, "tiny-model", cache_dir=str(tmp_path / "cache"))
        assert again(CORPUS, feature)[0].text == "Small left pleural effusion."
        assert len(_ChatServer.requests) == 2  # served from the cache
        cached = json.loads(next((tmp_path / "cache").glob("*.json")).read_text())
        assert cached["prompt_version"] == PROMPT_VERSION
    finally:
        server.shutdown()


def test_openai_describer_gives_up_with_a_clear_error(tmp_path):
    describer = OpenAIDescriber("http://127.0.0.1:9/v1", retries=1, backoff=0.01, cache_dir=str(tmp_path), timeout=2)
    with pytest.raises(ValueError, match="no usable answer after 2 tries"):
        describer(CORPUS, [Feature(0, [0], [0])])


def test_credentialed_text_to_a_remote_endpoint_is_warned_about(tmp_path, caplog):
    import logging

    with caplog.at_level(logging.WARNING, logger="saerad.interpret.llm"):
        OpenAIDescriber("https://llm.example.org/v1", cache_dir=str(tmp_path), credentialed=True)
        OpenAIDescriber("http://localhost:8000/v1", cache_dir=str(tmp_path), credentialed=True)
        OpenAIDescriber("https://llm.example.org/v1", cache_dir=str(tmp_path), credentialed=False)
    warnings = [r.getMessage() for r in caplog.records]
    assert len(warnings) == 1 and "llm.example.org" in warnings[0] and "data use agreement" in warnings[0]


def test_a_folder_with_several_gguf_files_is_refused(tmp_path):
    (tmp_path / "a.gguf").write_bytes(b"x")
    (tmp_path / "b.gguf").write_bytes(b"x")
    with pytest.raises(ValueError, match="holds 2 GGUF files"):
        make_describer(f"transformers:{tmp_path}")


@pytest.mark.slow
def test_smollm2_gguf_describes_a_feature_end_to_end_and_loads_from_its_cache_the_second_time(monkeypatch):
    """The real model on real-looking text: the plumbing, the guard and determinism, not the description's worth."""
    import json as _json

    import transformers

    from saerad.interpret.llm import dequantised, installed_smollm2

    pytest.importorskip("gguf")
    first = make_describer("transformers:smollm2")
    first.max_new_tokens = 24
    features = [Feature(0, EFFUSION_ROWS, EFFUSION_ROWS), Feature(1, [3, 4, 5], [3, 4, 5])]
    out = first(CORPUS, features)
    assert len(out) == 2 and all(d.text and d.source in ("llm", "extractive_fallback") for d in out)
    for feature, d in zip(features, out):
        assert d.source == "extractive_fallback" or guard(d.text, CORPUS, feature.rows) is None
        if d.source == "extractive_fallback":
            assert d.rejected and d.answer is not None
    cached = dequantised(installed_smollm2())  # the folder the first load made: plain safetensors weights
    assert (cached / "model.safetensors").exists()
    assert "quantization_config" not in _json.loads((cached / "config.json").read_text())

    loads = []
    original = transformers.AutoModelForCausalLM.from_pretrained
    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained",
                        lambda *a, **kw: loads.append(kw.get("gguf_file")) or original(*a, **kw))
    second = make_describer("transformers:smollm2")
    second.max_new_tokens = 24
    assert loads == [None]  # loaded from the cached folder, not dequantised again
    assert [d.text for d in second(CORPUS, features)] == [d.text for d in out]  # greedy: the same answers
