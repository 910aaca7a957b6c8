#!/usr/bin/env python3
"""Independent reference for the tokenizer tests: Hugging Face's tokenizers
and transformers compute the token ids and chat renderings that the C++ code
must reproduce.  Run by the tests with the test venv's Python.

  hf_reference.py gguf  MODEL.gguf REQUEST.json OUT.json
      transformers loads the GGUF (gguf_file=); ids for each text, decoded
      text, and apply_chat_template renderings.
  hf_reference.py chat REQUEST.json OUT.json
      renders each conversation with the reference Jinja chat templates
      below through transformers' apply_chat_template.
  hf_reference.py nfc OUT.json
      pairs [text, unicodedata.normalize("NFC", text)] covering every code
      point NFC changes, every canonical decomposition, Hangul jamo and
      random runs of combining marks.
  hf_reference.py auto DIR REQUEST.json OUT.json
      AutoTokenizer.from_pretrained(DIR) (a directory of exported tokenizer
      files): ids with and without special tokens, decoded text, and the
      chat renderings.
  hf_reference.py train KIND DIR REQUEST.json OUT.json
      trains a tiny byte-level BPE of the given style (gpt2,
      gpt2_prefix_space, llama3, qwen2, smollm) with tokenizers' BpeTrainer, saves DIR/tokenizer.json, and
      writes the ids of each text.

REQUEST.json: {"texts": [...], "chats": [{"messages": [...],
"add_generation_prompt": bool}, ...]}
"""
import json
import os
import sys

LLAMA3_SPLIT = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}|"
                r" ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2_SPLIT = LLAMA3_SPLIT.replace(r"\p{N}{1,3}", r"\p{N}")

# Varied text for training: prose, code, numbers, several scripts.
CORPUS = [
    "The quick brown fox jumps over the lazy dog. It's the dog's day; they've said so.",
    "We'll see what you'd do. I'm sure they're right, aren't they? DON'T SHOUT.",
    "def train(model, data):\n    for step, batch in enumerate(data):\n        loss = model(batch)\n",
    "    return loss.item()  # report\n\n\nif __name__ == '__main__':\n\ttrain(m, d)\n",
    "Numbers: 1, 12, 123, 1234, 2024-01-02, 3.14159, 1e-5, 0x1F, 100000 tokens.",
    "Café, naïve, résumé, déjà vu, Straße, smörgåsbord, façade, jalapeño.",
    "東京は日本の首都です。你好，世界！今日はいい天気ですね。",
    "مرحبا بالعالم، كيف حالك اليوم؟ Привет, мир! Γειά σου Κόσμε! नमस्ते दुनिया",
    "Emoji: 👍 👍🏽 👨‍👩‍👧‍👦 🏳️‍🌈 🎉🎉 and symbols ©®™ €£¥ ±×÷ → ⇒ ∀∃∈",
    "<p class=\"x\">Hello &amp; welcome</p>\r\n<br/>\r\n{\"key\": [1, 2, 3], \"ok\": true}",
]


# The chat templates of the model families, as their model cards ship them.
CHAT_TEMPLATES = {
    "llama2": {
        "bos": "<s>", "eos": "</s>",
        "source": (
            "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}"
            "{% set system_message = messages[0]['content'] %}{% else %}"
            "{% set loop_messages = messages %}{% set system_message = false %}{% endif %}"
            "{% for message in loop_messages %}"
            "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
            "{% endif %}{% if loop.index0 == 0 and system_message != false %}"
            "{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
            "{% else %}{% set content = message['content'] %}{% endif %}"
            "{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
            "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}"
            "{% endif %}{% endfor %}"),
    },
    "llama3": {
        "bos": "<|begin_of_text|>", "eos": "<|end_of_text|>",
        "source": (
            "{% set loop_messages = messages %}{% for message in loop_messages %}"
            "{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'"
            "+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}"
            "{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}"
            "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}"
            "{% endif %}"),
    },
    "mistral": {
        "bos": "<s>", "eos": "</s>",
        "source": (
            "{{ bos_token }}{% for message in messages %}"
            "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}"
            "{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}"
            "{% endif %}{% if message['role'] == 'user' %}{{ '[INST] ' + message['content'] + ' [/INST]' }}"
            "{% elif message['role'] == 'assistant' %}{{ message['content'] + eos_token}}"
            "{% else %}{{ raise_exception('Only user and assistant roles are supported!') }}"
            "{% endif %}{% endfor %}"),
    },
    "chatml": {  # Qwen2-Instruct's: a default system prompt, escaped newlines
        "bos": "", "eos": "<|im_end|>",
        "source": (
            "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
            "{{ '<|im_start|>system\\nYou are a helpful assistant.<|im_end|>\\n' }}{% endif %}"
            "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
            "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"),
    },
}


def run_chat(req, out):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast
    result = {}
    for name, spec in CHAT_TEMPLATES.items():
        tok = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel({"x": 0}, "x")),
                                      bos_token=spec["bos"] or None, eos_token=spec["eos"])
        renderings = []
        for chat in req["chats"]:
            try:
                renderings.append(tok.apply_chat_template(
                    chat["messages"], chat_template=spec["source"], tokenize=False,
                    add_generation_prompt=chat["add_generation_prompt"]))
            except Exception:  # the template refused the conversation
                renderings.append(None)
        result[name] = dict(spec, renderings=renderings)
    write(out, result)


def run_nfc(out):
    import random
    import unicodedata
    cases = []
    for cp in range(0x110000):
        if 0xD800 <= cp <= 0xDFFF:
            continue
        c = chr(cp)
        if unicodedata.normalize("NFC", c) != c:
            cases.append(c)
        if unicodedata.decomposition(c) and not unicodedata.decomposition(c).startswith("<"):
            cases.append("x" + unicodedata.normalize("NFD", c) + "y")
    marks = [chr(cp) for cp in range(0x300, 0x370)] + ["\u0591", "\u05b0", "\u093c", "\u0e38",
                                                        "\u1dc0", "\u20d0", "\u302a", "\u3099"]
    bases = ["a", "e", "o", "u", "A", "O", "\u0915", "\u304b", "\u1100", "\uac00", " ", "\u00e9"]
    rng = random.Random(15)
    for _ in range(3000):
        text = "".join(rng.choice(bases) + "".join(rng.choice(marks) for _ in range(rng.randint(0, 3)))
                       for _ in range(rng.randint(1, 4)))
        cases.append(text)
    for l in range(0x1100, 0x1113):
        for v in (0x1161, 0x1175):
            for t in ("", "\u11a8", "\u11c2"):
                cases.append(chr(l) + chr(v) + t)
    write(out, [[text, unicodedata.normalize("NFC", text)] for text in cases])


def request(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def write(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, ensure_ascii=False)


def smollm_pre_tokenizer():
    # What SmolLM2's own tokenizer.json declares.  transformers' GGUF loader
    # ignores tokenizer.ggml.pre and installs a plain ByteLevel instead, which
    # differs only where numbers meet whitespace; we reproduce the model's.
    from tokenizers import pre_tokenizers
    return pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True),
    ])


def run_gguf(model, req, out):
    from tokenizers import Tokenizer
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(model)),
                                        gguf_file=os.path.basename(model))
    plain = tok.backend_tokenizer
    smol = Tokenizer.from_str(plain.to_str())
    smol.pre_tokenizer = smollm_pre_tokenizer()
    result = {"ids": [], "ids_gguf_loader": [], "ids_no_special": [], "decoded": [], "chats": [],
              "chat_ids": []}
    for text in req["texts"]:
        result["ids"].append(smol.encode(text, add_special_tokens=True).ids)
        result["ids_no_special"].append(smol.encode(text, add_special_tokens=False).ids)
        result["ids_gguf_loader"].append(tok(text)["input_ids"])
        result["decoded"].append(smol.decode(result["ids"][-1], skip_special_tokens=False))
    for chat in req.get("chats", []):
        text = tok.apply_chat_template(chat["messages"], tokenize=False,
                                       add_generation_prompt=chat["add_generation_prompt"])
        result["chats"].append(text)
        result["chat_ids"].append(smol.encode(text, add_special_tokens=False).ids)
    write(out, result)


def run_auto(directory, req, out):
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(directory)
    result = {"class": type(tok).__name__, "ids": [], "ids_no_special": [], "decoded": [],
              "chats": []}
    for text in req["texts"]:
        result["ids"].append(tok(text, add_special_tokens=True)["input_ids"])
        result["ids_no_special"].append(tok(text, add_special_tokens=False)["input_ids"])
        result["decoded"].append(tok.decode(result["ids"][-1], skip_special_tokens=False))
    for chat in req.get("chats", []):
        result["chats"].append(tok.apply_chat_template(
            chat["messages"], tokenize=False, add_generation_prompt=chat["add_generation_prompt"]))
    write(out, result)


def run_train(kind, directory, req, out):
    from tokenizers import (Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers,
                            processors, trainers)
    tok = Tokenizer(models.BPE(ignore_merges=(kind == "llama3")))
    byte_level_split = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    if kind in ("gpt2", "gpt2_prefix_space"):
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=(kind != "gpt2"),
                                                     use_regex=True)
    elif kind == "smollm":
        tok.pre_tokenizer = smollm_pre_tokenizer()
    elif kind in ("llama3", "qwen2"):
        if kind == "qwen2":
            tok.normalizer = normalizers.NFC()
        pattern = LLAMA3_SPLIT if kind == "llama3" else QWEN2_SPLIT
        tok.pre_tokenizer = pre_tokenizers.Sequence([
            pre_tokenizers.Split(Regex(pattern), behavior="isolated", invert=False),
            byte_level_split,
        ])
        specials = ["<|begin_of_text|>", "<|end_of_text|>", "<|eot_id|>"]
    else:
        raise SystemExit("unknown kind " + kind)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=600, min_frequency=1, special_tokens=specials,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
                                  show_progress=False)
    tok.train_from_iterator(CORPUS * 3, trainer=trainer)
    # A non-special added token: matched in text whatever parse_special says.
    tok.add_tokens(["<custom>"])
    if kind == "llama3":
        bos = tok.token_to_id("<|begin_of_text|>")
        tok.post_processor = processors.Sequence([
            processors.ByteLevel(trim_offsets=False),
            processors.TemplateProcessing(single="<|begin_of_text|> $A",
                                          special_tokens=[("<|begin_of_text|>", bos)]),
        ])
    else:
        tok.post_processor = processors.ByteLevel(trim_offsets=False)
    os.makedirs(directory, exist_ok=True)
    tok.save(os.path.join(directory, "tokenizer.json"))
    result = {"ids": [], "ids_no_special": [], "decoded": []}
    for text in req["texts"]:
        ids = tok.encode(text, add_special_tokens=True).ids
        result["ids"].append(ids)
        result["ids_no_special"].append(tok.encode(text, add_special_tokens=False).ids)
        result["decoded"].append(tok.decode(ids, skip_special_tokens=False))
    write(out, result)


def main(argv):
    if len(argv) == 5 and argv[1] == "gguf":
        run_gguf(argv[2], request(argv[3]), argv[4])
    elif len(argv) == 4 and argv[1] == "chat":
        run_chat(request(argv[2]), argv[3])
    elif len(argv) == 3 and argv[1] == "nfc":
        run_nfc(argv[2])
    elif len(argv) == 5 and argv[1] == "auto":
        run_auto(argv[2], request(argv[3]), argv[4])
    elif len(argv) == 6 and argv[1] == "train":
        run_train(argv[2], argv[3], request(argv[4]), argv[5])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
