"""test_hf.py - Hugging Face directories (MarianMT, BART, mBART, M2M100/NLLB, T5 v1.0 and v1.1) against transformers.

For each family a small seeded model is built from a transformers config object, saved with
save_pretrained to a temporary directory (nothing is downloaded) and loaded with
pytransformer.load: teacher-forced logits within LOGITS_ATOL, greedy tokens identical to
generate(num_beams=1, do_sample=False) on 30+ sources, batched with padding and one by one,
with each family's decoder start, forced BOS/EOS and suppressed tokens. Then: an opus-mt-en-de
sized Marian, half-precision and sharded checkpoints, pytorch_model.bin conversion, tokenizers,
and the errors for what is not supported.
"""
import json
import os
import warnings

import numpy as np
import pytest
import torch
import transformers
from transformers import (BartConfig, BartForConditionalGeneration, M2M100Config,
                          M2M100ForConditionalGeneration, MarianConfig, MarianMTModel, MBartConfig,
                          MBartForConditionalGeneration, T5Config, T5ForConditionalGeneration)

import pytransformer
from pytransformer import export, hf, hf_torch
from conftest import LOGITS_ATOL

transformers.logging.set_verbosity_error()
warnings.filterwarnings("ignore", module="transformers")

N_SOURCES = 32
MAX_NEW = 16
VOCAB = 101

_BART_SIZES = dict(vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
                   encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
                   decoder_ffn_dim=64, max_position_embeddings=64, init_std=0.3)


def _marian(strong=False):
    return MarianMTModel(MarianConfig(**_BART_SIZES, pad_token_id=VOCAB - 1, eos_token_id=0,
                                      decoder_start_token_id=VOCAB - 1, forced_eos_token_id=0,
                                      activation_function="swish", scale_embedding=True))


def _marian_separate(strong=False):
    # opus-mt models with their own target vocabulary: separate tables, tied output
    cfg = MarianConfig(**dict(_BART_SIZES, init_std=0.6 if strong else 0.3), decoder_vocab_size=77,
                       share_encoder_decoder_embeddings=False, pad_token_id=76, eos_token_id=0,
                       decoder_start_token_id=76, forced_eos_token_id=0, activation_function="swish",
                       scale_embedding=True)
    return MarianMTModel(cfg)


def _bart(strong=False):
    return BartForConditionalGeneration(BartConfig(**_BART_SIZES, forced_eos_token_id=2))


def _mbart(strong=False):
    return MBartForConditionalGeneration(MBartConfig(**_BART_SIZES, scale_embedding=True,
                                                     decoder_start_token_id=2, forced_eos_token_id=2))


def _m2m100(strong=False):
    return M2M100ForConditionalGeneration(M2M100Config(**_BART_SIZES, activation_function="relu",
                                                       encoder_layerdrop=0.0, decoder_layerdrop=0.0))


def _t5(strong=False):
    return T5ForConditionalGeneration(T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=64, num_layers=2,
        num_decoder_layers=2, relative_attention_num_buckets=8, relative_attention_max_distance=20,
        decoder_start_token_id=0, feed_forward_proj="relu", initializer_factor=3.0 if strong else 1.0))


def _flan_t5(strong=False):
    # v1.1 / flan-T5: gated GELU, untied head, no output scale, heads x d_kv != d_model
    # (flan-t5-small has 6 heads of 64 on 512), more encoder than decoder layers
    model = T5ForConditionalGeneration(T5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=6, d_ff=48, num_layers=3,
        num_decoder_layers=2, relative_attention_num_buckets=16, relative_attention_max_distance=24,
        decoder_start_token_id=0, feed_forward_proj="gated-gelu", tie_word_embeddings=False,
        initializer_factor=3.0 if strong else 1.0))
    # transformers 5 ties lm_head to the embeddings at construction; real v1.1 files hold their
    # own head, and transformers keeps it when it differs from the embeddings
    with torch.no_grad():
        model.lm_head.weight = torch.nn.Parameter(torch.randn(VOCAB, 32) * (2.0 if strong else 1.0))
    return model


# name -> (builder, generation settings set on generation_config before saving).
# builder(strong=True) gives larger weights, so greedy paths depend on the source (small random
# models repeat one token); those models are ill-conditioned, float32 roundoff in either
# implementation then reaches 1e-3 on logits of size 30-140 (both equally far from a float64
# run), so logits are compared on builder(strong=False) and tokens on builder(strong=True).
FAMILIES = {
    "marian": (_marian, {"bad_words_ids": [[VOCAB - 1]]}),     # opus-mt bans the pad token
    "marian_separate_vocab": (_marian_separate, {}),
    "bart": (_bart, {"forced_bos_token_id": 0}),               # as bart-large
    "mbart": (_mbart, {}),
    # fairseq positions skip pad tokens in transformers, pytransformer numbers every token: pad is
    # suppressed so a generated pad never feeds back (real text never contains it). NLLB forces
    # the target language as the first token.
    "m2m100": (_m2m100, {"forced_bos_token_id": 7, "suppress_tokens": [1]}),
    "t5": (_t5, {}),
    "flan_t5": (_flan_t5, {}),
}


def _perturb(model, seed):
    """Random inits leave LayerNorm at (1, 0) and biases at 0; spread them so every tensor
    matters, and give T5's output head weight so greedy paths vary with the source."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "layer_norm" in name or "layernorm" in name:
                p.add_(torch.randn(p.shape, generator=g) * 0.2)
            elif name.endswith("bias"):
                p.normal_(0.0, 0.2, generator=g)
        if hasattr(model, "final_logits_bias"):
            model.final_logits_bias.normal_(0.0, 0.5, generator=g)


def _pick_eos(model, srcs, cfg_eos_ids):
    """A token the random model produces often but not at once, so sequences end at varied steps."""
    ids, mask = _batch(srcs, model.config.pad_token_id)
    with torch.no_grad():
        # min_new_tokens keeps the configured EOS out; a forced EOS may still end the last step
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=8, min_new_tokens=8,
                             num_beams=1, do_sample=False).numpy()
    counts = np.bincount(out[:, 2:8].ravel(), minlength=model.config.vocab_size)
    counts[list(cfg_eos_ids)] = 0
    return int(np.argmax(counts))


def _batch(srcs, pad):
    lens = [len(s) for s in srcs]
    ids = np.full((len(srcs), max(lens)), pad, dtype=np.int64)
    for i, s in enumerate(srcs):
        ids[i, :len(s)] = s
    mask = (np.arange(ids.shape[1])[None, :] < np.array(lens)[:, None]).astype(np.int64)
    return torch.from_numpy(ids), torch.from_numpy(mask)


def _sources(n, vocab, avoid, seed, max_len=20):
    """Random sources (lengths 1 .. max_len, both ends included) without the special ids."""
    rng = np.random.default_rng(seed)
    allowed = np.setdiff1d(np.arange(vocab), list(avoid))
    lengths = np.concatenate([[1, max_len], rng.integers(1, max_len + 1, size=n - 2)])
    return [rng.choice(allowed, size=int(k)) for k in lengths]


def _hf_generate(model, srcs, max_new):
    """transformers' greedy tokens after the decoder start, cut after the first EOS."""
    ids, mask = _batch(srcs, model.config.pad_token_id)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new,
                             num_beams=1, do_sample=False).numpy()
    eos = model.generation_config.eos_token_id
    return [hf_torch.strip_generated(row[1:], eos, model.config.pad_token_id) for row in out]


def _build_pair(name, strong, tmp_path_factory):
    """(transformers model, pytransformer model, sources) for one family."""
    build, gen_settings = FAMILIES[name]
    seed = sum(map(ord, name))
    torch.manual_seed(seed)
    ref = build(strong).eval()
    _perturb(ref, seed)
    cfg = ref.config
    special = {cfg.pad_token_id, cfg.decoder_start_token_id, 0, 1, 2}
    srcs = _sources(N_SOURCES, min(cfg.vocab_size, getattr(cfg, "decoder_vocab_size", None) or VOCAB),
                    special, seed)
    eos = _pick_eos(ref, srcs[:8], special)
    gc = ref.generation_config
    gc.eos_token_id = eos
    if gc.forced_eos_token_id is not None:
        gc.forced_eos_token_id = eos
    for key, value in gen_settings.items():
        setattr(gc, key, value)
    cfg.eos_token_id = eos
    path = tmp_path_factory.mktemp(name)
    ref.save_pretrained(path)
    return ref, pytransformer.load(path), srcs


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def family_both(request, tmp_path_factory):
    """{"strong": (name, transformers model, pytransformer model, sources), "mild": the same with
    initialiser-sized weights}."""
    name = request.param
    return {"strong": (name,) + _build_pair(name, True, tmp_path_factory),
            "mild": (name,) + _build_pair(name, False, tmp_path_factory)}


@pytest.fixture
def family(family_both):
    """Larger weights, for tokens."""
    return family_both["strong"]


@pytest.fixture
def family_mild(family_both):
    """Initialiser-sized weights, for logits."""
    return family_both["mild"]


def test_teacher_forced_logits_match_transformers(family_mild):
    name, ref, model, srcs = family_mild
    rng = np.random.default_rng(5)
    batch = srcs[:8]
    ids, mask = _batch(batch, ref.config.pad_token_id)
    tgt = rng.integers(3, model.config.tgt_vocab_size - 1, size=(len(batch), 11))
    tgt[:, 0] = model.config.decoder_start_id
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.from_numpy(tgt)).logits.numpy()
    got = model.forward(batch, tgt)
    assert got.shape == want.shape
    err = float(np.abs(got - want).max())
    print(f"{name}: max |logit difference| {err:.3g} (logits up to {np.abs(want).max():.3g})")
    assert err <= LOGITS_ATOL, f"{name}: max |logit difference| {err:.3g}"


def test_greedy_matches_transformers_batched_and_alone(family):
    name, ref, model, srcs = family
    want = _hf_generate(ref, srcs, MAX_NEW)
    batched = model.generate(srcs, MAX_NEW)
    for i, (w, b) in enumerate(zip(want, batched)):
        assert list(b) == w, f"{name}: source {i} batched: {list(b)} != transformers {w}"
    for i, s in enumerate(srcs):
        assert list(model.generate([s], MAX_NEW)[0]) == want[i], f"{name}: source {i} alone"
    # transformers' own batch invariance, on a few (its generate() costs ~0.3 s a call)
    for i in (0, 1, 5):
        assert _hf_generate(ref, [srcs[i]], MAX_NEW)[0] == want[i], f"{name}: transformers alone {i}"
    # the test means something: outputs vary, some stop at EOS before the limit, some run to it
    eos = model.config.eos_id
    lengths = [len(w) for w in want]
    assert len({tuple(w) for w in want}) >= 4, f"{name}: outputs barely depend on the source"
    forced_eos = model.forced_eos_id is not None
    assert any(w[-1] == eos and len(w) < MAX_NEW for w in want), f"{name}: no early EOS"
    if not forced_eos:
        assert any(lengths[i] == MAX_NEW and want[i][-1] != eos for i in range(len(want)))
    if model.forced_bos_id is not None:
        assert all(w[0] == model.forced_bos_id for w in want)


def test_greedy_with_output_screen_matches_transformers(family):
    """Every family (T5's output scale, forced BOS/EOS, suppressed ids, final logits bias) with the
    8-bit screen of the output projection forced on: the same tokens as transformers, in
    batches of up to 4 (the screened sizes) and alone."""
    name, ref, model, srcs = family
    want = _hf_generate(ref, srcs, MAX_NEW)
    assert model.output_screen is None and model.set_output_screen(True)
    try:
        got = [list(t) for i in range(0, len(srcs), 4) for t in model.generate(srcs[i:i + 4], MAX_NEW)]
        alone = [list(model.generate([s], MAX_NEW)[0]) for s in srcs[:6]]
    finally:
        model.set_output_screen(False)
    for i, (g, w) in enumerate(zip(got, want)):
        assert g == w, f"{name}: source {i} with the screen: {g} != transformers {w}"
    assert alone == want[:6], f"{name}: alone with the screen"


def test_finished_rows_leave_the_batch_without_changing_tokens(family, monkeypatch):
    """Greedy decoding moves the unfinished rows into a smaller state once enough rows have reached
    EOS (decoding.DROP_FINISHED_SHARE): tokens and scores must be bitwise those of decoding with every
    row kept to the end, whether rows leave at every EOS or not at all, and the rows must really leave
    (counted); under a cache limit with no room for the copy they stay."""
    from pytransformer import decoding
    name, ref, model, srcs = family
    batch = srcs[:24]
    calls = []
    real_keep = decoding.DecoderState.keep

    def counting_keep(self, model_, rows):
        calls.append((self.step, self.batch, len(rows)))
        return real_keep(self, model_, rows)
    monkeypatch.setattr(decoding.DecoderState, "keep", counting_keep)
    results = {}
    for share in (2.0, 0.0, decoding.DROP_FINISHED_SHARE):
        monkeypatch.setattr(decoding, "DROP_FINISHED_SHARE", share)
        calls.clear()
        toks, scores = model.generate(batch, MAX_NEW, return_scores=True)
        plain = model.generate(batch, MAX_NEW)
        results[share] = (toks, scores, plain, list(calls))
    kept_all, every, default = results[2.0], results[0.0], results[decoding.DROP_FINISHED_SHARE]
    assert not kept_all[3], "no row may leave with a share above 1"
    assert every[3] and all(b > n for _, b, n in every[3]), f"{name}: rows never left the batch"
    # the default policy drops rows exactly when, at some step before the last two, a share of the
    # batch has reached EOS
    eos = model.config.eos_id
    ended = [len(t) for t in kept_all[2] if len(t) and t[-1] == eos]
    expect = any(sum(n <= step + 1 for n in ended) >= decoding.DROP_FINISHED_SHARE * len(batch)
                 for step in range(MAX_NEW - 2))
    assert bool(default[3]) == expect, f"{name}: drops {default[3]} with EOS at {sorted(ended)}"
    for other in (every, default):
        for a, b in zip(kept_all[0] + kept_all[2], other[0] + other[2]):
            np.testing.assert_array_equal(a, b)
        for a, b in zip(kept_all[1], other[1]):
            np.testing.assert_array_equal(a, b)
    # no room under the limit for a second, smaller state: nothing moves, tokens unchanged
    monkeypatch.setattr(decoding, "DROP_FINISHED_SHARE", 0.0)
    need = decoding.estimate_bytes(model.config, len(batch), max(len(s) for s in batch), MAX_NEW)
    monkeypatch.setattr(decoding, "_cache_limit", need)
    calls.clear()
    limited = model.generate(batch, MAX_NEW)
    assert not calls
    for a, b in zip(kept_all[2], limited):
        np.testing.assert_array_equal(a, b)


def test_family_settings_are_read(family):
    name, ref, model, _ = family
    cfg, gc = model.config, ref.generation_config
    assert cfg.decoder_start_id == gc.decoder_start_token_id
    assert cfg.eos_id == gc.eos_token_id and cfg.pad_id == ref.config.pad_token_id
    assert model.forced_eos_id == gc.forced_eos_token_id
    assert model.forced_bos_id == gc.forced_bos_token_id
    expected = {"marian": ("post", "sinusoidal"), "marian_separate_vocab": ("post", "sinusoidal"),
                "bart": ("post", "learned"), "mbart": ("pre", "learned"),
                "m2m100": ("pre", "sinusoidal"), "t5": ("pre", "relative"), "flan_t5": ("pre", "relative")}
    assert (cfg.norm_placement, cfg.positional_encoding) == expected[name]
    if name == "flan_t5":
        assert cfg.ffn_gated and not cfg.tie_output and cfg.output_scale == 1.0
        assert cfg.activation == "gelu_tanh" and cfg.norm_type == "rms_norm"
        assert cfg.attention_dim == 48 != cfg.d_model
    if name == "t5":
        assert cfg.tie_output and cfg.output_scale == pytest.approx(32 ** -0.5)
    if name == "marian_separate_vocab":
        assert not cfg.shared_embeddings and cfg.tgt_vocab_size == 77


def test_max_new_tokens_and_min_new_tokens(family):
    """min_new_tokens keeps EOS away, forced EOS (when the family has it) ends at the limit."""
    name, ref, model, srcs = family
    ids, mask = _batch(srcs[:6], ref.config.pad_token_id)
    with torch.no_grad():
        out = ref.generate(input_ids=ids, attention_mask=mask, max_new_tokens=6, min_new_tokens=4,
                           num_beams=1, do_sample=False).numpy()
    eos = model.config.eos_id
    want = [hf_torch.strip_generated(r[1:], eos, ref.config.pad_token_id) for r in out]
    got = model.generate(srcs[:6], 6, min_new_tokens=4)
    assert [list(g) for g in got] == want


# ---------------------------------------------------------------------------------------------
# opus-mt-en-de size

@pytest.fixture(scope="module")
def opus_size(tmp_path_factory):
    torch.manual_seed(0)
    cfg = MarianConfig(vocab_size=58101, decoder_vocab_size=58101, d_model=512, encoder_layers=6,
                       decoder_layers=6, encoder_attention_heads=8, decoder_attention_heads=8,
                       encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
                       activation_function="swish", scale_embedding=True, pad_token_id=58100,
                       eos_token_id=0, decoder_start_token_id=58100, forced_eos_token_id=0,
                       init_std=0.05)
    ref = MarianMTModel(cfg).eval()
    _perturb(ref, 1)
    ref.generation_config.bad_words_ids = [[58100]]
    path = tmp_path_factory.mktemp("opus_mt_en_de_size")
    ref.save_pretrained(path)
    return ref, pytransformer.load(path)


def test_opus_mt_size_logits_and_greedy(opus_size):
    ref, model = opus_size
    srcs = _sources(5, 58100, {0, 58100}, seed=3, max_len=14)
    ids, mask = _batch(srcs, 58100)
    tgt = np.random.default_rng(4).integers(1, 58100, size=(len(srcs), 6))
    tgt[:, 0] = 58100
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.from_numpy(tgt)).logits.numpy()
    err = float(np.abs(model.forward(srcs, tgt) - want).max())
    print(f"opus-mt-en-de size: max |logit difference| {err:.3g}")
    assert err <= LOGITS_ATOL
    want_tokens = _hf_generate(ref, srcs, 10)
    assert [list(t) for t in model.generate(srcs, 10)] == want_tokens
    for s, w in zip(srcs[:2], want_tokens[:2]):
        assert list(model.generate([s], 10)[0]) == w


# ---------------------------------------------------------------------------------------------
# checkpoint variants

def _small_marian(seed=0):
    torch.manual_seed(seed)
    ref = _marian().eval()
    _perturb(ref, seed)
    return ref


def _logits_both(ref, model, seed=0):
    srcs = _sources(4, VOCAB, {0, VOCAB - 1}, seed, max_len=9)
    ids, mask = _batch(srcs, ref.config.pad_token_id)
    tgt = np.random.default_rng(seed).integers(1, VOCAB - 1, size=(4, 5))
    tgt[:, 0] = ref.config.decoder_start_token_id
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.from_numpy(tgt)).logits.numpy()
    return model.forward(srcs, tgt), want


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_half_precision_checkpoints_load_as_float32(tmp_path, dtype):
    ref = _small_marian()
    ref.to(dtype).save_pretrained(tmp_path)
    with open(tmp_path / "config.json") as f:
        assert json.load(f)["dtype"] in ("float16", "bfloat16")
    model = pytransformer.load(tmp_path)
    assert model.config.d_model == 32
    # the reference: the same rounded weights, run in float32
    ref32 = MarianMTModel.from_pretrained(tmp_path, dtype=torch.float32).eval()
    got, want = _logits_both(ref32, model)
    assert np.abs(got - want).max() <= LOGITS_ATOL


def test_sharded_checkpoint(tmp_path):
    ref = _small_marian(1)
    ref.save_pretrained(tmp_path, max_shard_size="40KB")
    assert (tmp_path / "model.safetensors.index.json").exists()
    assert not (tmp_path / "model.safetensors").exists()
    got, want = _logits_both(ref, pytransformer.load(tmp_path))
    assert np.abs(got - want).max() <= LOGITS_ATOL


def test_pytorch_bin_needs_export_then_loads(tmp_path):
    ref = _small_marian(2)
    ref.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(pytransformer.WeightsError, match="pytransformer export"):
        pytransformer.load(tmp_path)
    out = export.convert_pytorch_checkpoint(tmp_path)
    assert out == str(tmp_path / "model.safetensors")
    got, want = _logits_both(ref, pytransformer.load(tmp_path))
    assert np.abs(got - want).max() <= LOGITS_ATOL


def test_pytorch_bin_without_torch_says_so(tmp_path, monkeypatch):
    ref = _small_marian(2)
    ref.save_pretrained(tmp_path)
    os.remove(tmp_path / "model.safetensors")
    (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
    import importlib.util
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torch" else real_find_spec(name, *a))
    with pytest.raises(pytransformer.WeightsError, match="needs PyTorch, which is not installed"):
        pytransformer.load(tmp_path)


def test_old_style_untied_t5_config(tmp_path):
    """Configs written before transformers 5 mark T5 v1.1 by tie_word_embeddings: false and hold
    a separate lm_head; pytransformer reads that as untied and unscaled, as transformers does."""
    torch.manual_seed(3)
    ref = _flan_t5().eval()
    ref.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file
    sd = load_file(tmp_path / "model.safetensors")
    sd["lm_head.weight"] = torch.randn(VOCAB, 32) * 0.5
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    c = json.loads((tmp_path / "config.json").read_text())
    c.pop("scale_decoder_outputs")
    c["tie_word_embeddings"] = False
    (tmp_path / "config.json").write_text(json.dumps(c))
    ref = T5ForConditionalGeneration.from_pretrained(tmp_path).eval()
    model = pytransformer.load(tmp_path)
    assert not model.config.tie_output and model.config.output_scale == 1.0
    srcs = _sources(3, VOCAB, {0, 1}, 0, max_len=7)
    ids, mask = _batch(srcs, 0)
    tgt = np.array([[0, 5, 9, 4]] * 3)
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.from_numpy(tgt)).logits.numpy()
    assert np.abs(model.forward(srcs, tgt) - want).max() <= LOGITS_ATOL


def test_long_sequences(family_mild, family):
    """Sources and targets near the position limit (64); for T5 past the relative distances
    (20 and 24), into the logarithmic and the last buckets."""
    name, ref, model, _ = family_mild
    cfg = model.config
    srcs = _sources(3, cfg.tgt_vocab_size, {0, 1, 2, cfg.pad_id}, 9, max_len=60)
    ids, mask = _batch(srcs, cfg.pad_id)
    tgt = np.random.default_rng(1).integers(3, cfg.tgt_vocab_size - 1, size=(3, 50))
    tgt[:, 0] = cfg.decoder_start_id
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.from_numpy(tgt)).logits.numpy()
    err = float(np.abs(model.forward(srcs, tgt) - want).max())
    print(f"{name} long: max |logit difference| {err:.3g}")
    assert err <= LOGITS_ATOL
    _, ref, model, _ = family
    assert [list(t) for t in model.generate(srcs, 40, min_new_tokens=36)] == \
        _hf_generate_min(ref, srcs, 40, 36)


def _hf_generate_min(model, srcs, max_new, min_new):
    ids, mask = _batch(srcs, model.config.pad_token_id)
    with torch.no_grad():
        out = model.generate(input_ids=ids, attention_mask=mask, max_new_tokens=max_new,
                             min_new_tokens=min_new, num_beams=1, do_sample=False).numpy()
    eos = model.generation_config.eos_token_id
    return [hf_torch.strip_generated(row[1:], eos, model.config.pad_token_id) for row in out]


def test_relative_buckets_match_transformers():
    from transformers.models.t5.modeling_t5 import T5Attention
    from pytransformer.model import relative_position_buckets
    rel = np.arange(-3000, 3000)
    for buckets, distance in ((32, 128), (8, 20), (16, 24), (64, 256)):
        for bidirectional in (True, False):
            want = T5Attention._relative_position_bucket(torch.from_numpy(rel), bidirectional, buckets, distance)
            got = relative_position_buckets(rel, bidirectional, buckets, distance)
            assert np.array_equal(got, want.numpy()), (buckets, distance, bidirectional)


def test_fairseq_sinusoids_match_transformers():
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100SinusoidalPositionalEmbedding
    from pytransformer.model import sinusoidal_table
    want = M2M100SinusoidalPositionalEmbedding.get_embedding(300, 64, padding_idx=None).numpy()
    got = sinusoidal_table(298, 64, 2, "fairseq")
    assert np.abs(got - want[2:]).max() < 5e-5   # transformers rounds to float32 before sin/cos


# ---------------------------------------------------------------------------------------------
# errors

def _write_config(tmp_path, **overrides):
    ref = _small_marian()
    ref.save_pretrained(tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    c.update(overrides)
    (tmp_path / "config.json").write_text(json.dumps(c))


@pytest.mark.parametrize("overrides, words", [
    ({"model_type": "pegasus"}, ["model_type", "'pegasus'", "not supported"]),
    ({"activation_function": "quick_gelu"}, ["activation", "'quick_gelu'"]),
    ({"decoder_attention_heads": 2}, ["decoder_attention_heads", "encoder_attention_heads"]),
    ({"architectures": ["MarianForCausalLM"]}, ["'MarianForCausalLM'"]),
    ({"eos_token_id": [0, 5]}, ["eos_token_id", "several"]),
])
def test_unsupported_configs_are_named(tmp_path, overrides, words):
    _write_config(tmp_path, **overrides)
    if "eos_token_id" in overrides:
        os.remove(tmp_path / "generation_config.json")
    with pytest.raises(pytransformer.WeightsError) as info:
        pytransformer.load(tmp_path)
    for w in words:
        assert w in str(info.value), str(info.value)


def test_config_without_model_type_says_what_it_lacks(tmp_path):
    """A Hugging Face config.json whose model_type was deleted is read as a pytransformer config;
    the error must say that it is neither, and that it looks like a Hugging Face one."""
    _write_config(tmp_path)
    c = json.loads((tmp_path / "config.json").read_text())
    del c["model_type"]
    (tmp_path / "config.json").write_text(json.dumps(c))
    with pytest.raises(pytransformer.WeightsError) as info:
        pytransformer.load(tmp_path)
    for w in ("'format'", "model_type", "Hugging Face", "looks like one"):
        assert w in str(info.value), str(info.value)


def _add_extra_gate(sd):
    sd["model.encoder.layers.0.extra_gate.weight"] = torch.zeros(3)


def _drop_fc2_bias(sd):
    del sd["model.decoder.layers.1.fc2.bias"]


@pytest.mark.parametrize("edit, name", [(_add_extra_gate, "extra_gate"),
                                        (_drop_fc2_bias, "model.decoder.layers.1.fc2.bias")])
def test_unknown_or_missing_tensor_is_named(tmp_path, edit, name):
    ref = _small_marian()
    ref.save_pretrained(tmp_path)
    from safetensors.torch import load_file, save_file
    sd = load_file(tmp_path / "model.safetensors")
    edit(sd)
    save_file(sd, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(pytransformer.WeightsError, match=name):
        pytransformer.load(tmp_path)


def test_describe_and_detection(tmp_path):
    ref = _small_marian()
    ref.save_pretrained(tmp_path)
    assert hf.is_hf_directory(tmp_path)
    info = hf.describe(tmp_path)
    assert info["family"] == "marian" and info["config"]["d_model"] == 32
    assert info["generation"]["forced_eos_id"] == 0
    assert not hf.is_hf_directory(tmp_path / "nope")


def test_compare_with_transformers_helper(tmp_path):
    ref = _small_marian(4)
    ref.save_pretrained(tmp_path)
    report = hf_torch.compare_with_transformers(tmp_path, _sources(6, VOCAB, {0, VOCAB - 1}, 2, 9),
                                          max_new_tokens=8)
    assert report["max_logit_diff"] <= LOGITS_ATOL and report["greedy_mismatches"] == []


# ---------------------------------------------------------------------------------------------
# tokenizers

_TEXTS = ["the cat sat on the mat", "a dog ran", "the mat sat on a cat and a dog", "cat",
          "on the dog ran the cat sat", "unknownword the"]


def _word_level_tokenizer_json(path, pad, eos):
    from tokenizers import Tokenizer, models, pre_tokenizers, processors, decoders
    words = sorted({w for t in _TEXTS[:-1] for w in t.split()})
    vocab = {"<pad>": pad, "</s>": eos, "<unk>": 2}
    for w in words:
        vocab[w] = len(vocab) + 10
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.add_special_tokens(["<pad>", "</s>", "<unk>"])
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", eos)])
    tok.decoder = decoders.WordPiece(prefix="##")
    tok.save(str(path / "tokenizer.json"))


def test_tokenizer_json_round_trip_and_generation(tmp_path):
    torch.manual_seed(11)
    ref = _t5().eval()
    _perturb(ref, 11)
    ref.save_pretrained(tmp_path)
    _word_level_tokenizer_json(tmp_path, pad=0, eos=1)
    from transformers import PreTrainedTokenizerFast
    their_tok = PreTrainedTokenizerFast(tokenizer_file=str(tmp_path / "tokenizer.json"),
                                        pad_token="<pad>", eos_token="</s>", unk_token="<unk>")
    model = pytransformer.load(tmp_path)
    tok = model.tokenizer
    assert isinstance(tok, hf.FastTokenizer)
    for text in _TEXTS:
        assert tok.encode(text) == their_tok(text)["input_ids"]
    # end to end on ids: encode -> generate -> decode equals transformers' pipeline
    batch = their_tok(_TEXTS, return_tensors="pt", padding=True)
    with torch.no_grad():
        out = ref.generate(**batch, max_new_tokens=6, num_beams=1, do_sample=False)
    want = their_tok.batch_decode(out, skip_special_tokens=True)
    got = [tok.decode(t) for t in model.generate([tok.encode(t) for t in _TEXTS], 6)]
    assert got == want


def _train_spm(path, prefix):
    import sentencepiece as spm
    corpus = path / f"{prefix}.txt"
    corpus.write_text("\n".join(_TEXTS * 20) + "\n")
    spm.SentencePieceTrainer.train(input=str(corpus), model_prefix=str(path / prefix), vocab_size=30,
                                   model_type="unigram", minloglevel=2, hard_vocab_limit=False)
    return path / f"{prefix}.model"


@pytest.mark.filterwarnings("ignore:Recommended. pip install sacremoses")
def test_marian_sentencepiece_tokenizer_matches_transformers(tmp_path):
    import shutil
    ref = _small_marian(5)
    ref.save_pretrained(tmp_path)
    model_file = _train_spm(tmp_path, "spm")
    shutil.copy(model_file, tmp_path / "source.spm")
    shutil.copy(model_file, tmp_path / "target.spm")
    import sentencepiece as spm
    sp = spm.SentencePieceProcessor(model_file=str(model_file))
    pieces = [sp.id_to_piece(i) for i in range(sp.get_piece_size()) if sp.id_to_piece(i) not in ("<unk>", "<s>", "</s>")]
    vocab = {"</s>": 0, "<unk>": 1}
    for p in pieces:
        vocab[p] = len(vocab)
    for i in range(len(vocab), VOCAB - 1):   # ids the model may produce: one piece each
        vocab[f"\u2581w{i}"] = i
    vocab["<pad>"] = VOCAB - 1
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    from transformers import MarianTokenizer
    their = MarianTokenizer(vocab=str(tmp_path / "vocab.json"), source_spm=str(tmp_path / "source.spm"),
                            target_spm=str(tmp_path / "target.spm"))
    model = pytransformer.load(tmp_path)
    assert isinstance(model.tokenizer, hf.MarianTokenizer)
    for text in _TEXTS + [">>de<< the cat"]:
        assert model.tokenizer.encode(text) == their(text)["input_ids"], text
    ids = [model.tokenizer.encode(t) for t in _TEXTS]
    for seq in model.generate(ids, 8):
        assert model.tokenizer.decode(seq) == their.decode(list(seq), skip_special_tokens=True)


def test_missing_tokenizer_package_is_named(tmp_path, monkeypatch):
    ref = _small_marian()
    ref.save_pretrained(tmp_path)
    _word_level_tokenizer_json(tmp_path, pad=VOCAB - 1, eos=0)
    import builtins
    real_import = builtins.__import__

    def no_tokenizers(name, *args, **kwargs):
        if name == "tokenizers" or name.startswith("tokenizers."):
            raise ImportError("No module named 'tokenizers'")
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tokenizers)
    model = pytransformer.load(tmp_path)
    assert model.tokenizer is None
    with pytest.raises(ImportError, match="pip install tokenizers"):
        model.translate(["the cat"])
    assert len(model.generate([[5, 6, 0]], 4)[0]) >= 1   # the id-level API still works


def test_mt5_is_t5_v11(tmp_path):
    from transformers import MT5Config, MT5ForConditionalGeneration
    torch.manual_seed(6)
    ref = MT5ForConditionalGeneration(MT5Config(
        vocab_size=VOCAB, d_model=32, d_kv=8, num_heads=4, d_ff=48, num_layers=2,
        decoder_start_token_id=0)).eval()
    ref.save_pretrained(tmp_path)
    assert hf.describe(tmp_path)["config"]["output_scale"] == 1.0   # mT5 never scales
    report = hf_torch.compare_with_transformers(tmp_path, _sources(6, VOCAB, {0, 1}, 3, 12), max_new_tokens=8)
    assert report["max_logit_diff"] <= LOGITS_ATOL and report["greedy_mismatches"] == []


# ---------------------------------------------------------------------------------------------
# the command line on Hugging Face directories

def test_cli_info_verify_export_on_hf_directory(tmp_path, capsys):
    from pytransformer.__main__ import main
    ref = _small_marian(4)
    ref.save_pretrained(tmp_path)
    assert main(["info", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "Hugging Face marian directory" in out and "model.safetensors" in out and "isa:" in out
    assert main(["verify", str(tmp_path), "-n", "6", "--max-new-tokens", "6"]) == 0
    out = capsys.readouterr().out
    assert "6/6 sequences identical" in out and "OK" in out
    # a directory with only pytorch_model.bin: `pytransformer export DIR` writes model.safetensors once
    os.remove(tmp_path / "model.safetensors")
    torch.save(ref.state_dict(), tmp_path / "pytorch_model.bin")
    assert main(["export", str(tmp_path)]) == 0
    got, want = _logits_both(ref, pytransformer.load(tmp_path))
    assert np.abs(got - want).max() <= LOGITS_ATOL
