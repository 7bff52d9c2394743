"""pytransformer.text - text in, text out: a character vocabulary shipped in the model directory.

A model directory may hold `vocab.json` next to config.json:

    {"type": "characters",
     "tokens": ["<pad>", "</s>", "<s>", " ", ",", "-", ".", "/", "0", ...],
     "pad_id": 0, "eos_id": 1, "decoder_start_id": 2,
     "max_new_tokens": 12,
     "normalize": {"lowercase": true, "collapse_spaces": true, "strip": true}}

Token id i is tokens[i]. The ids named by pad_id / eos_id / decoder_start_id (and any other
entry longer than one character) are special tokens: they never appear in text. Every other
entry is exactly one character, and source text is encoded one character per token.
`max_new_tokens` (optional) is the default output budget of `translate`. `normalize` (optional,
all false by default) is applied to the text before encoding: `lowercase` folds case,
`collapse_spaces` turns every run of spaces into one, `strip` drops spaces at both ends. The
shipped dates model uses all three, so "SAT  21 NOV 2026 " and "sat 21 nov 2026" are the same
input to it; the model itself never has to learn case or spacing.

`translate()` encodes, sorts the inputs by length into batches (so little padding is computed),
decodes greedily with Model.generate and returns the outputs in input order.
"""
import json
import os

import numpy as np

VOCAB_FILE = "vocab.json"
MAX_VOCAB_BYTES = 1 << 20
DEFAULT_BATCH_SIZE = 64


class UnknownCharacterError(ValueError):
    """A character of the input is not in the model's vocabulary."""


def _describe(ch):
    return f"{ch!r} (U+{ord(ch):04X})"


class CharTokenizer:
    """One token per character; special tokens (pad, eos, decoder start) are never produced by encode."""

    NORMALIZE_KEYS = ("lowercase", "collapse_spaces", "strip")

    def __init__(self, tokens, pad_id, eos_id, decoder_start_id, max_new_tokens=None, normalize=None,
                 source="vocab"):
        self.source = source
        normalize = dict(normalize or {})
        bad = sorted(set(normalize) - set(self.NORMALIZE_KEYS))
        if bad or not all(isinstance(v, bool) for v in normalize.values()):
            raise ValueError(f"{source}: 'normalize' takes the booleans {list(self.NORMALIZE_KEYS)}, "
                             f"got {normalize!r}")
        self.normalize = {k: normalize.get(k, False) for k in self.NORMALIZE_KEYS}
        if not isinstance(tokens, list) or not tokens or not all(isinstance(t, str) and t for t in tokens):
            raise ValueError(f"{source}: 'tokens' must be a non-empty list of non-empty strings")
        specials = {"pad_id": pad_id, "eos_id": eos_id, "decoder_start_id": decoder_start_id}
        for key, value in specials.items():
            if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value < len(tokens):
                raise ValueError(f"{source}: {key} = {value!r} is not a token id in [0, {len(tokens)})")
        if max_new_tokens is not None and (isinstance(max_new_tokens, bool) or not isinstance(max_new_tokens, int)
                                           or max_new_tokens < 1):
            raise ValueError(f"{source}: max_new_tokens must be a positive integer, got {max_new_tokens!r}")
        self.tokens = list(tokens)
        self.pad_id, self.eos_id, self.decoder_start_id = pad_id, eos_id, decoder_start_id
        self.max_new_tokens = max_new_tokens
        self.special_ids = set(specials.values()) | {i for i, t in enumerate(tokens) if len(t) != 1}
        self.char_to_id = {}
        for i, t in enumerate(tokens):
            if i in self.special_ids:
                continue
            if t in self.char_to_id:
                raise ValueError(f"{source}: character {_describe(t)} appears twice (ids {self.char_to_id[t]} and {i})")
            self.char_to_id[t] = i

    def __len__(self):
        return len(self.tokens)

    @property
    def alphabet(self):
        return "".join(sorted(self.char_to_id))

    def normalized(self, text):
        """The text the model sees (after the vocabulary's normalisation rules)."""
        n = self.normalize
        if n["lowercase"]:
            text = text.lower()
        if n["collapse_spaces"]:
            while "  " in text:
                text = text.replace("  ", " ")
        if n["strip"]:
            text = text.strip(" ")
        return text

    def encode(self, text, index=None):
        """Token ids of `text` (normalised), one per character; UnknownCharacterError names the
        first unknown character."""
        ids = []
        text = self.normalized(text)
        lookup = self.char_to_id
        for pos, ch in enumerate(text):
            i = lookup.get(ch)
            if i is None:
                where = f"input {index + 1}" if index is not None else "the input"
                raise UnknownCharacterError(
                    f"unknown character {_describe(ch)} at position {pos + 1} of {where} {text!r}; "
                    f"the model knows only these characters: {self.alphabet!r}")
            ids.append(i)
        return ids

    def decode(self, ids):
        """Text of generated ids: stops at eos, leaves out special tokens."""
        chars = []
        for i in ids:
            i = int(i)
            if i == self.eos_id:
                break
            if i in self.special_ids or not 0 <= i < len(self.tokens):
                continue
            chars.append(self.tokens[i])
        return "".join(chars)

    def to_dict(self):
        d = {"type": "characters", "tokens": self.tokens, "pad_id": self.pad_id, "eos_id": self.eos_id,
             "decoder_start_id": self.decoder_start_id}
        if self.max_new_tokens is not None:
            d["max_new_tokens"] = self.max_new_tokens
        if any(self.normalize.values()):
            d["normalize"] = dict(self.normalize)
        return d

    def save(self, model_dir):
        """Write <model_dir>/vocab.json."""
        os.makedirs(model_dir, exist_ok=True)
        path = os.path.join(model_dir, VOCAB_FILE)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(), f, ensure_ascii=False, indent=1)
            f.write("\n")
        return path

    @classmethod
    def from_dict(cls, d, source="vocab"):
        if not isinstance(d, dict):
            raise ValueError(f"{source}: expected a JSON object")
        allowed = {"type", "tokens", "pad_id", "eos_id", "decoder_start_id", "max_new_tokens", "normalize"}
        unknown = sorted(set(d) - allowed)
        if unknown:
            raise ValueError(f"{source}: unknown keys {unknown}")
        if d.get("type") != "characters":
            raise ValueError(f"{source}: 'type' must be \"characters\", got {d.get('type')!r}")
        missing = [k for k in ("tokens", "pad_id", "eos_id", "decoder_start_id") if k not in d]
        if missing:
            raise ValueError(f"{source}: missing keys {missing}")
        normalize = d.get("normalize")
        if normalize is not None and not isinstance(normalize, dict):
            raise ValueError(f"{source}: 'normalize' must be a JSON object")
        return cls(d["tokens"], d["pad_id"], d["eos_id"], d["decoder_start_id"], d.get("max_new_tokens"),
                   normalize, source=source)

    @classmethod
    def characters(cls, alphabet, max_new_tokens=None, normalize=None):
        """A vocabulary of <pad>, </s>, <s> followed by the characters of `alphabet`."""
        chars = sorted(set(alphabet))
        return cls(["<pad>", "</s>", "<s>"] + chars, 0, 1, 2, max_new_tokens, normalize)


def load_tokenizer(model_dir):
    """The tokenizer of a model directory (from vocab.json), or None when it has none."""
    path = os.path.join(os.fspath(model_dir), VOCAB_FILE)
    if not os.path.isfile(path):
        return None
    with open(path, "rb") as f:
        raw = f.read(MAX_VOCAB_BYTES + 1)
    if len(raw) > MAX_VOCAB_BYTES:
        raise ValueError(f"{path}: larger than {MAX_VOCAB_BYTES} bytes; not a vocabulary file")
    try:
        d = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: not valid UTF-8 JSON ({e})") from None
    return CharTokenizer.from_dict(d, source=path)


def check_compatible(tokenizer, config, where="model"):
    """Raise ValueError when the vocabulary does not fit the model's embedding tables / special ids."""
    n = len(tokenizer)
    if n > config.src_vocab_size or n > config.tgt_vocab_size:
        raise ValueError(f"{where}: vocab.json has {n} tokens but the model's vocabularies hold "
                         f"{config.src_vocab_size} (source) / {config.tgt_vocab_size} (target)")
    if tokenizer.eos_id != config.eos_id or tokenizer.decoder_start_id != config.decoder_start_id:
        raise ValueError(f"{where}: vocab.json special ids (eos {tokenizer.eos_id}, start "
                         f"{tokenizer.decoder_start_id}) differ from config.json (eos {config.eos_id}, "
                         f"start {config.decoder_start_id})")


def require_tokenizer(model):
    tok = getattr(model, "tokenizer", None)
    if tok is None:
        where = getattr(model, "path", None) or "this model"
        raise ValueError(f"{where} has no vocabulary ({VOCAB_FILE}), so it cannot take text; "
                         f"add a {VOCAB_FILE} to the model directory, or call Model.generate with token ids")
    return tok


def default_max_new_tokens(model, tokenizer, source_ids):
    if tokenizer.max_new_tokens is not None:
        return tokenizer.max_new_tokens
    longest = max((len(s) for s in source_ids), default=1)
    return max(1, min(model.config.max_positions, 2 * longest + 16))


def translate(model, texts, max_new_tokens=None, batch_size=None, progress=None):
    """Translate a list of strings with greedy decoding; returns a list of strings in the same order.

    Inputs are grouped by length into batches of `batch_size` (default 64). An empty string gives an
    empty output without running the model. `progress(done, total)` is called after each batch.
    """
    if isinstance(texts, str):
        raise TypeError("translate takes a list of strings; for one text write translate([text])")
    texts = list(texts)
    for i, t in enumerate(texts):
        if not isinstance(t, str):
            raise TypeError(f"input {i + 1} is {type(t).__name__}, not str")
    tok = require_tokenizer(model)
    if batch_size is None:
        batch_size = DEFAULT_BATCH_SIZE
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive integer, got {batch_size!r}")
    ids = [tok.encode(t, index=i) for i, t in enumerate(texts)]   # every error before any work
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(model, tok, ids)
    outputs = [""] * len(texts)
    order = sorted((i for i in range(len(ids)) if ids[i]), key=lambda i: len(ids[i]))
    done = len(texts) - len(order)
    for start in range(0, len(order), batch_size):
        chunk = order[start:start + batch_size]
        generated = model.generate([np.asarray(ids[i], dtype=np.int64) for i in chunk], max_new_tokens)
        for i, seq in zip(chunk, generated):
            outputs[i] = tok.decode(seq)
        done += len(chunk)
        if progress is not None:
            progress(done, len(texts))
    return outputs


def shipped_model_dir():
    """Directory of the model that ships with pytransformer (the dates model): inside the installed
    package (pytransformer/shipped/dates) or, in a source checkout, weights/dates."""
    here = os.path.dirname(os.path.abspath(__file__))
    candidates = [os.path.join(here, "shipped", "dates"),
                  os.path.join(os.path.dirname(here), "weights", "dates")]
    for c in candidates:
        if os.path.isfile(os.path.join(c, "config.json")):
            return c
    return candidates[0]


def dates_data():
    """The seeded date generator that trained and tests the shipped model (weights/dates_data.py,
    installed as pytransformer.shipped.dates_data)."""
    try:
        from .shipped import dates_data as module          # installed package
        return module
    except ImportError:
        pass
    import importlib.util
    import sys
    name = "pytransformer._dates_data"
    if name in sys.modules:
        return sys.modules[name]
    here = os.path.dirname(os.path.abspath(__file__))
    path = os.path.join(os.path.dirname(here), "weights", "dates_data.py")
    if not os.path.isfile(path):
        raise ImportError("the date generator (dates_data.py) is not installed with this pytransformer")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module
