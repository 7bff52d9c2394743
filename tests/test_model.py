"""test_model.py - whole encoder-decoder models against the PyTorch reference (torch.nn layers).

For every config in model_configs.PARITY_CONFIGS: a seeded reference model is exported with
pytransformer.export.from_torch, loaded with pytransformer.load, and compared: teacher-forced
logits, greedy tokens on 50+ random sources (batched and one by one), cached vs uncached
decoding, batch composition and thread-count invariance, and the bad inputs users will send.
"""
import numpy as np
import pytest
import torch

import pytransformer
from pytransformer import export, torch_reference
from conftest import LOGITS_ATOL, with_threads
from model_configs import PARITY_CONFIGS

N_SOURCES = 50
MAX_NEW = 12


@pytest.fixture(scope="module", params=sorted(PARITY_CONFIGS))
def pair(request, tmp_path_factory):
    """(config name, reference module, loaded pytransformer Model)."""
    cfg = PARITY_CONFIGS[request.param]
    ref = torch_reference.init_seeded(cfg, seed=sum(map(ord, request.param)))
    ref.eval()
    path = tmp_path_factory.mktemp(request.param)
    export.from_torch(ref, path)
    return request.param, ref, pytransformer.load(path)


def random_sources(cfg, n, seed, max_len=None):
    rng = np.random.default_rng(seed)
    max_len = max_len or cfg["max_positions"]
    lengths = np.concatenate([[1, max_len], rng.integers(1, max_len + 1, size=n - 2)])
    return [rng.integers(0, cfg["src_vocab_size"], size=int(n_)).astype(np.int64) for n_ in lengths]


def padded(seqs, pad):
    lens = np.array([len(s) for s in seqs])
    ids = np.full((len(seqs), lens.max()), pad, dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
    return ids, lens


def test_teacher_forced_logits_match_torch(pair):
    name, ref, model = pair
    cfg = ref.config
    rng = np.random.default_rng(7)
    srcs = random_sources(cfg, 6, 3, max_len=20)
    ids, lens = padded(srcs, cfg["pad_id"])
    tgt = rng.integers(0, cfg["tgt_vocab_size"], size=(len(srcs), 9))
    tgt[:, 0] = cfg["decoder_start_id"]
    with torch.no_grad():
        want = ref.forward(torch.from_numpy(ids), torch.from_numpy(lens), torch.from_numpy(tgt)).numpy()
    got = model.forward(srcs, tgt)
    assert got.shape == want.shape == (len(srcs), 9, cfg["tgt_vocab_size"])
    err = np.abs(got - want).max()
    assert err <= LOGITS_ATOL, f"{name}: max |logit difference| {err:.3g}"
    assert np.abs(want).max() > 0.5, "degenerate reference logits: the comparison would prove little"


def test_greedy_tokens_match_torch_batched_and_alone(pair):
    name, ref, model = pair
    cfg = ref.config
    srcs = random_sources(cfg, N_SOURCES, 11)
    ids, lens = padded(srcs, cfg["pad_id"])
    want = ref.greedy(torch.from_numpy(ids), torch.from_numpy(lens), MAX_NEW)
    want = [w.numpy() for w in want]
    batched = model.generate(srcs, MAX_NEW)
    mismatched = [i for i, (g, w) in enumerate(zip(batched, want)) if not np.array_equal(g, w)]
    assert not mismatched, f"{name}: batched greedy differs from torch on sources {mismatched[:5]}"
    for i, s in enumerate(srcs):
        alone = model.generate([s], MAX_NEW)[0]
        np.testing.assert_array_equal(alone, want[i], err_msg=f"{name}: source {i} decoded alone")
    # the outputs must vary with the input, or the comparison proves little
    assert len({tuple(w) for w in want}) >= 5


def test_greedy_with_output_screen_matches_torch(pair):
    """The same comparison with the 8-bit screen of the output projection forced on (these
    vocabularies are below the size that gets one by default): batches of up to 4 and alone."""
    name, ref, model = pair
    cfg = ref.config
    srcs = random_sources(cfg, 20, 13)
    ids, lens = padded(srcs, cfg["pad_id"])
    want = [w.numpy() for w in ref.greedy(torch.from_numpy(ids), torch.from_numpy(lens), MAX_NEW)]
    assert model.output_screen is None and model.set_output_screen(True)
    try:
        got = [t for i in range(0, len(srcs), 4) for t in model.generate(srcs[i:i + 4], MAX_NEW)]
        got += [model.generate([s], MAX_NEW)[0] for s in srcs[:5]]
    finally:
        model.set_output_screen(False)
    for i, (g, w) in enumerate(zip(got, want + want[:5])):
        np.testing.assert_array_equal(g, w, err_msg=f"{name}: source {i % len(srcs)} with the screen")


def test_alone_equals_in_padded_batch_bitwise(pair):
    name, ref, model = pair
    srcs = random_sources(ref.config, 7, 5, max_len=30)
    toks, scores = model.generate(srcs, MAX_NEW, return_scores=True)
    for i in (0, 3, 6):
        t1, s1 = model.generate([srcs[i]], MAX_NEW, return_scores=True)
        np.testing.assert_array_equal(t1[0], toks[i])
        np.testing.assert_array_equal(s1[0], scores[i])


@pytest.mark.parametrize("packing", ["packed", "padded"])
def test_encoder_token_rows_alone_equal_in_padded_batch(pair, packing, monkeypatch):
    """The encoder runs only the token rows of a padded batch when enough of it is padding (the
    rows are compacted, attention scatters them back): every token row, and the cross-attention keys
    and values made from it, must be bitwise those of its sequence encoded alone, padding rows zero,
    whichever way the batch ran; and the two ways must give the same tokens."""
    from pytransformer import model as model_module
    name, ref, model = pair
    monkeypatch.setattr(model_module._PackedRows, "PACK_MIN_PAD_SHARE", 0.0 if packing == "packed" else 1.01)
    srcs = random_sources(ref.config, 6, 31, max_len=24)
    memory, lens = model.encode(srcs)
    B, S, _ = memory.shape
    assert (lens < S).any(), "the batch must hold padding"
    cross = model.cross_kv(memory, B, S, lens)
    for i, s in enumerate(srcs):
        alone, _ = model.encode([s])
        np.testing.assert_array_equal(memory[i, :len(s)], alone[0], err_msg=f"{name}: source {i}")
        assert not memory[i, len(s):].any(), f"{name}: padding rows of source {i} are not zero"
        cross_alone = model.cross_kv(alone, 1, len(s), np.array([len(s)]))
        for layer, (kv, kv_alone) in enumerate(zip(cross, cross_alone)):
            np.testing.assert_array_equal(kv[:, i, :, :len(s)], kv_alone[:, 0], err_msg=f"{name}: layer {layer}")
    assert np.abs(memory).max() > 0.1, "degenerate encoder output: the comparison would prove little"
    tokens = model.generate(srcs, MAX_NEW)
    monkeypatch.setattr(model_module._PackedRows, "PACK_MIN_PAD_SHARE", 1.01 if packing == "packed" else 0.0)
    for got, want in zip(model.generate(srcs, MAX_NEW), tokens):
        np.testing.assert_array_equal(got, want)


def test_cached_decoding_equals_uncached(pair):
    """Greedy with the KV cache equals re-running the whole decoder on each prefix (forward())."""
    name, ref, model = pair
    cfg = ref.config
    srcs = random_sources(cfg, 5, 21, max_len=25)
    cached = model.generate(srcs, 8, min_new_tokens=8)
    for s, toks in zip(srcs, cached):
        prefix = [cfg["decoder_start_id"]]
        for step in range(8):
            logits = model.forward([s], np.array([prefix]))[0, -1]
            logits[cfg["eos_id"]] = -np.inf
            prefix.append(int(np.argmax(logits)))
        np.testing.assert_array_equal(toks, prefix[1:])


def test_decode_step_logits_close_to_forward(pair):
    name, ref, model = pair
    cfg = ref.config
    srcs = random_sources(cfg, 3, 8, max_len=12)
    tgt = np.random.default_rng(2).integers(0, cfg["tgt_vocab_size"], size=(3, 6))
    tgt[:, 0] = cfg["decoder_start_id"]
    full = model.forward(srcs, tgt)
    state = model.start_decoding(srcs, 6)
    for t in range(6):
        step = model.decode_step(state, tgt[:, t].astype(np.int32))
        np.testing.assert_allclose(step, full[:, t], atol=1e-5, rtol=0)


def test_scores_are_log_probabilities(pair):
    name, ref, model = pair
    cfg = ref.config
    srcs = random_sources(cfg, 3, 9, max_len=10)
    toks, scores = model.generate(srcs, 5, min_new_tokens=5, return_scores=True)
    for s, t, sc in zip(srcs, toks, scores):
        prefix = np.concatenate([[cfg["decoder_start_id"]], t])[None, :-1]
        logits = model.forward([s], prefix)[0].astype(np.float64)
        logits[:, cfg["eos_id"]] = -np.inf
        lse = np.log(np.exp(logits - logits.max(1, keepdims=True)).sum(1)) + logits.max(1)
        np.testing.assert_allclose(sc, logits[np.arange(5), t] - lse, atol=1e-5)
        assert np.all(sc <= 0)


def test_min_new_tokens_matches_torch(pair):
    name, ref, model = pair
    cfg = ref.config
    srcs = random_sources(cfg, 8, 13, max_len=15)
    ids, lens = padded(srcs, cfg["pad_id"])
    want = ref.greedy(torch.from_numpy(ids), torch.from_numpy(lens), 10, min_new_tokens=6)
    got = model.generate(srcs, 10, min_new_tokens=6)
    for g, w in zip(got, want):
        np.testing.assert_array_equal(g, w.numpy())
        assert len(g) >= 6 and cfg["eos_id"] not in g[:6]


def test_threads_bitwise_identical(pair):
    name, ref, model = pair
    srcs = random_sources(ref.config, 6, 17, max_len=40)
    t1, s1 = with_threads(1, model.generate, srcs, MAX_NEW, return_scores=True)
    t2, s2 = with_threads(2, model.generate, srcs, MAX_NEW, return_scores=True)
    for a, b in zip(t1, t2):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(s1, s2):
        np.testing.assert_array_equal(a, b)


def test_padded_array_input_equals_list_input(pair):
    name, ref, model = pair
    cfg = ref.config
    srcs = random_sources(cfg, 4, 19, max_len=9)
    ids, lens = padded(srcs, cfg["pad_id"])
    a = model.generate(srcs, 6)
    b = model.generate(ids, 6, lengths=lens)
    for x, y in zip(a, b):
        np.testing.assert_array_equal(x, y)


def _decoder_linears(model):
    out = []
    for layer in model.decoder_layers:
        for attn in (layer.self_attn, layer.cross_attn):
            out += [x for x in (attn.q, attn.kv, attn.qkv, attn.out) if x is not None]
        out += [layer.ffn.fc1, layer.ffn.fc2]
    return out


def test_huge_pages_put_decoder_weights_in_an_arena(tmp_path):
    """load() (huge_pages=True, the default): a model with more than K.ARENA_MIN_BYTES of
    decoder-layer weights packs them into one WeightArena, and its screen's 8-bit copy into another
    when that is large; the encoder's and the output projection's packed weights go to an arena
    advised against huge pages; the results are those of the same model packed into ordinary
    arrays (huge_pages=False), to the bit."""
    from pytransformer import _kernels as K
    from pytransformer.config import ModelConfig, expected_tensors
    config = dict(format="pytransformer", format_version=1, d_model=256, num_heads=4, encoder_layers=3,
                  decoder_layers=3, ffn_dim=1024, src_vocab_size=300, tgt_vocab_size=301, activation="relu",
                  norm_placement="post", positional_encoding="sinusoidal", max_positions=64,
                  tie_output=False, output_bias=True, pad_id=0, eos_id=2, decoder_start_id=1)
    rng = np.random.default_rng(5)
    tensors = {n: (rng.standard_normal(s) / np.sqrt(s[-1])).astype(np.float32)
               for n, s in expected_tensors(ModelConfig.from_dict(config)).items()}
    pytransformer.save(tmp_path, config, tensors)
    model = pytransformer.load(tmp_path)
    assert model.huge_pages
    arena = model.weight_arena
    assert arena is not None and arena.chunks == 1   # the reservation bounds every packed weight
    assert arena.taken == sum(x.packed.nbytes for x in _decoder_linears(model))
    assert all(x.packed.data.ctypes.data % K.ARENA_ALIGN == 0 for x in _decoder_linears(model))
    assert arena.huge and not model.small_page_arena.huge
    encoder_linears = [x for layer in model.encoder_layers
                       for x in (layer.attn.qkv, layer.attn.out, layer.ffn.fc1, layer.ffn.fc2)]
    assert model.small_page_arena.taken == sum(x.packed.nbytes for x in encoder_linears + [model.output])
    plain = pytransformer.load(tmp_path, huge_pages=False)
    assert plain.weight_arena is None and plain.small_page_arena is None and not plain.huge_pages
    srcs = [[5, 6, 7, 8, 9, 3], [11, 12]]
    for a, b in zip(model.generate(srcs, 8, return_scores=True), plain.generate(srcs, 8, return_scores=True)):
        for x, y in zip(a, b):
            np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(model.forward(srcs[:1], [[1, 4, 5]]), plain.forward(srcs[:1], [[1, 4, 5]]))


def test_small_models_use_no_arena(tmp_path):
    cfg = PARITY_CONFIGS["pre_gelu_learned_separate"]
    export.from_torch(torch_reference.init_seeded(cfg, seed=1), tmp_path)
    assert pytransformer.load(tmp_path, huge_pages=True).weight_arena is None


@pytest.mark.parametrize("bad", ["yes", 1, None])
def test_huge_pages_must_be_a_bool(learned_model, bad):
    with pytest.raises(TypeError, match="huge_pages must be True or False"):
        pytransformer.load(learned_model[1].path, huge_pages=bad)


# ---------------------------------------------------------------- bad input
@pytest.fixture(scope="module")
def learned_model(tmp_path_factory):
    cfg = PARITY_CONFIGS["pre_gelu_learned_separate"]
    ref = torch_reference.init_seeded(cfg, seed=1)
    path = tmp_path_factory.mktemp("learned")
    export.from_torch(ref, path)
    return cfg, pytransformer.load(path)


def test_bad_generate_inputs(learned_model):
    cfg, model = learned_model
    V = cfg["src_vocab_size"]
    with pytest.raises(ValueError, match=rf"token id {V} out of range for source vocab of {V} \(sequence 1, position 2\)"):
        model.generate([[1, 2], [3, 4, V]], 4)
    with pytest.raises(ValueError, match="token id -3"):
        model.generate([[-3]], 4)
    with pytest.raises(ValueError, match="empty batch"):
        model.generate([], 4)
    with pytest.raises(ValueError, match="source sequence 1 is empty"):
        model.generate([[1], []], 4)
    with pytest.raises(ValueError, match="max_new_tokens must be >= 1"):
        model.generate([[1]], 0)
    with pytest.raises(ValueError, match="min_new_tokens"):
        model.generate([[1]], 3, min_new_tokens=4)
    with pytest.raises(ValueError, match=r"source sequence 0 has 65 tokens, more than the model's 64 positions"):
        model.generate([[1] * 65], 4)
    with pytest.raises(ValueError, match="cannot decode 65 positions"):
        model.generate([[1]], 65)
    with pytest.raises(TypeError, match="integer"):
        model.generate([[1.5, 2.0]], 4)
    with pytest.raises(ValueError, match=r"target vocab of 30"):
        model.forward([[1]], np.array([[cfg["decoder_start_id"], 30]]))
