"""test_dates.py - the shipped dates model: generator sanity, held-out accuracy, parity with PyTorch, size."""
import datetime
import os
import re

import numpy as np
import pytest
import torch

import pytransformer
from pytransformer.text import dates_data, load_tokenizer, shipped_model_dir
from pytransformer.torch_reference import from_model_dir

from conftest import with_threads

DATES = dates_data()
MODEL_DIR = shipped_model_dir()


@pytest.fixture(scope="module")
def model():
    m = pytransformer.load(MODEL_DIR)
    if m.tokenizer is None:          # until load() attaches the vocabulary itself
        m.tokenizer = load_tokenizer(MODEL_DIR)
    return m


@pytest.fixture(scope="module")
def heldout():
    return DATES.heldout()


@pytest.fixture(scope="module")
def engine_tokens(model, heldout):
    """Greedy tokens of pytransformer for the 2,000 held-out dates, batched.

    One thread: tokens are bitwise the same for any thread count (the determinism contract, tested
    elsewhere), and on a loaded 2-core machine one thread is several times faster here."""
    tok = model.tokenizer
    srcs = [tok.encode(t) for t, _ in heldout]
    return with_threads(1, lambda: [o for i in range(0, len(srcs), 250)
                                    for o in model.generate(srcs[i:i + 250], tok.max_new_tokens)])


@pytest.fixture(scope="module")
def engine_outputs(model, engine_tokens):
    return [model.tokenizer.decode(o) for o in engine_tokens]


# ---------------------------------------------------------------- the generator

def _numeric_date(text):
    """Independent reading of the numeric forms (None for word forms)."""
    s = text.strip()
    m = re.fullmatch(r"(?:[A-Za-z]+\.?,? *)?(\d{1,2})\. *(\d{1,2})\. *(\d{2}|\d{4})", s)
    if m:
        d, mo, y = m.groups()
    else:
        m = re.fullmatch(r"(?:[A-Za-z]+\.?,? *)?(\d{1,2})/(\d{1,2})/(\d{2}|\d{4})", s)
        if m:
            mo, d, y = m.groups()
        else:
            m = re.fullmatch(r"(?:[A-Za-z]+\.?,? *)?(\d{4})-(\d{1,2})-(\d{1,2})", s)
            if not m:
                return None
            y, mo, d = m.groups()
    year = int(y) if len(y) == 4 else DATES.expand_two_digit_year(int(y))
    return datetime.date(year, int(mo), int(d))


def test_generator_pairs_are_valid_dates_and_match_their_text():
    pairs = DATES.generate(5000, seed=123, distinct=False)
    numeric = 0
    for text, iso in pairs:
        date = datetime.date.fromisoformat(iso)                 # a valid calendar date
        assert datetime.date(1900, 1, 1) <= date <= datetime.date(2099, 12, 31)
        lower = text.lower()
        for i, name in enumerate(DATES.WEEKDAYS):               # a weekday, if named, is the true one
            abbreviations = [a.lower() for a in DATES.WEEKDAY_ABBREVIATIONS[i]]
            if re.match(rf"\s*({name.lower()}|{'|'.join(abbreviations)})\b", lower):
                assert date.weekday() == i, (text, iso)
        parsed = _numeric_date(text)
        if parsed is not None:
            numeric += 1
            assert parsed == date, (text, iso)
        else:                                                   # word forms name the right month
            month = DATES.MONTHS[date.month - 1].lower()
            assert any(a.lower() in lower for a in [month] + DATES.MONTH_ABBREVIATIONS[date.month - 1])
            assert str(date.day) in text
            assert str(date.year) in text or f"{date.year % 100:02d}" in text
    assert 1000 < numeric < 4000                                # both families are well represented


def test_two_digit_years_stay_in_their_window():
    assert DATES.expand_two_digit_year(50) == 1950 and DATES.expand_two_digit_year(99) == 1999
    assert DATES.expand_two_digit_year(0) == 2000 and DATES.expand_two_digit_year(49) == 2049
    for text, iso in DATES.generate(3000, seed=5, distinct=False):
        year = int(iso[:4])
        if not 1950 <= year <= 2049:
            assert iso[:4] in text, (text, iso)                  # only four-digit years outside the window


def test_heldout_is_distinct_and_never_trained_on(heldout):
    texts = [t for t, _ in heldout]
    assert len(texts) == 2000 and len(set(texts)) == 2000
    stream = DATES.training_stream(0)
    trained = {next(stream)[0] for _ in range(20000)}
    assert not trained & set(texts)
    assert not {t for t, _ in DATES.validation()} & set(texts)


def test_heldout_covers_the_required_forms(heldout):
    texts = [t for t, _ in heldout]
    checks = {
        "day month year": r"^\s*(\w+\.?,?\s+)?(the\s+)?\d+\w*\s+(of\s+)?[a-z]{3}",
        "month day year": r"^\s*(\w+\.?,?\s+)?[a-z]{3,9}\.?\s+(the\s+)?\d",
        "ordinal": r"\d(st|nd|rd|th)\b", "the ... of": r"\bthe\b.*\bof\b",
        "abbreviated month with dot": r"\b(jan|feb|mar|apr|jun|jul|aug|sep|sept|oct|nov|dec)\.",
        "weekday": r"^\s*(mon|tue|wed|thu|fri|sat|sun)", "comma": r",",
        "dots": r"^\s*\d{1,2}\.\d{1,2}\.\d{2,4}\s*$", "slashes": r"\d/\d{1,2}/\d",
        "dashes": r"\d{4}-\d{1,2}-\d", "two-digit year": r"\s\d{2}\s*$", "extra spaces": r"\S  +\S",
    }
    for name, pattern in checks.items():
        assert any(re.search(pattern, t.lower()) for t in texts), name
    assert any(t.isupper() for t in texts) and any(t.islower() for t in texts)
    assert any(t != t.upper() and t != t.lower() and t != t.title() for t in texts)


# ---------------------------------------------------------------- the model

def test_issue_examples(model):
    examples = ["Saturday, 21st of November 2026", "21 Nov. 2026", "November 21, 2026", "nov 21 26",
                "21.11.2026", "11/21/2026"]
    assert model.translate(examples) == ["2026-11-21"] * len(examples)


def test_more_forms(model):
    cases = {"the 1st of January, 1900": "1900-01-01", "DEC 31 2099": "2099-12-31",
             "2/29/2000": "2000-02-29", "29.02.1904": "1904-02-29", "1999-12-31": "1999-12-31",
             "Tue, 3rd Mar 70": "1970-03-03", "wednesday  the 2nd of june, 49": "2049-06-02",
             "sEpT. 22nd,  1913": "1913-09-22", "4.7.76": "1976-07-04", "2001-1-5": "2001-01-05"}
    assert model.translate(list(cases)) == list(cases.values())


def test_heldout_exact_match_at_least_99_percent(heldout, engine_outputs):
    right = sum(o == iso for o, (_, iso) in zip(engine_outputs, heldout))
    assert right / len(heldout) >= 0.99, f"{right}/{len(heldout)}"


def test_greedy_output_equals_pytorch_on_all_heldout(model, heldout, engine_tokens):
    """The PyTorch reference, run teacher-forced on pytransformer's greedy output, picks every one of
    those tokens as its own argmax (EOS included). That is exactly "PyTorch's greedy decoding gives the
    same output", checked with one batched forward pass instead of one per generated token."""
    ref = from_model_dir(MODEL_DIR)
    tok = model.tokenizer
    mismatches = []
    for i in range(0, len(heldout), 500):
        chunk = [tok.encode(t) for t, _ in heldout[i:i + 500]]
        ours = engine_tokens[i:i + 500]
        lengths = [len(s) for s in chunk]
        src = np.full((len(chunk), max(lengths)), tok.pad_id, dtype=np.int64)
        T = max(len(o) for o in ours)
        tgt = np.full((len(chunk), T), tok.pad_id, dtype=np.int64)
        tgt[:, 0] = tok.decoder_start_id
        for b, (s, o) in enumerate(zip(chunk, ours)):
            src[b, :len(s)] = s
            tgt[b, 1:len(o)] = o[:-1]
        with torch.no_grad():
            picks = ref(torch.from_numpy(src), torch.tensor(lengths), torch.from_numpy(tgt)).argmax(-1).numpy()
        for b, o in enumerate(ours):
            if not np.array_equal(picks[b, :len(o)], o):
                mismatches.append((heldout[i + b][0], tok.decode(o), tok.decode(picks[b])))
    assert not mismatches, mismatches[:5]


def test_pytorch_greedy_decoding_agrees_on_a_sample(model, heldout, engine_outputs):
    """The reference's own greedy loop, on a sample (it re-runs the decoder for every token)."""
    ref = from_model_dir(MODEL_DIR)
    tok = model.tokenizer
    sample = list(range(0, len(heldout), 10))
    chunk = [tok.encode(heldout[i][0]) for i in sample]
    lengths = [len(s) for s in chunk]
    src = np.full((len(chunk), max(lengths)), tok.pad_id, dtype=np.int64)
    for b, s in enumerate(chunk):
        src[b, :len(s)] = s
    outs = ref.greedy(torch.from_numpy(src), torch.tensor(lengths), tok.max_new_tokens)
    assert [tok.decode(o.tolist()) for o in outs] == [engine_outputs[i] for i in sample]


def test_shipped_model_directory():
    files = sorted(os.listdir(MODEL_DIR))
    assert files == ["config.json", "model.safetensors", "vocab.json"]
    size = sum(os.path.getsize(os.path.join(MODEL_DIR, f)) for f in files)
    assert size <= 10 * 1024 * 1024
    cfg = pytransformer.load_weights(MODEL_DIR)[0]
    assert (cfg.norm_placement, cfg.positional_encoding, cfg.activation) == ("post", "sinusoidal", "relu")
    tok = load_tokenizer(MODEL_DIR)
    assert set(DATES.ALPHABET.lower()) <= set(tok.char_to_id)


def test_tokenizer_round_trip_and_errors(model):
    tok = model.tokenizer
    assert tok.decode(tok.encode("2026-11-21") + [tok.eos_id, 5]) == "2026-11-21"
    assert tok.encode("  SAT,  21 NOV  2026 ") == tok.encode("sat, 21 nov 2026")
    with pytest.raises(ValueError, match=r"unknown character 'é' \(U\+00E9\) at position 2"):
        tok.encode("dé")
    with pytest.raises(TypeError, match="list of strings"):
        model.translate("21 Nov 2026")
    assert model.translate(["", "21 Nov 2026"]) == ["", "2026-11-21"]
