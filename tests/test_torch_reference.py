"""test_torch_reference.py - the PyTorch reference and the exporter, checked without the engine.

The engine's parity tests trust pytransformer.torch_reference as the oracle, so here it is checked
against things that do not share its code: padded batches against single sequences, greedy output
against its own teacher-forced argmax, the sinusoid tables against the paper's formula in float64,
and the exported tensors against FORMAT.md's name list and a float64 NumPy forward pass written
from FORMAT.md alone.
"""
import math

import numpy as np
import pytest
import torch

from pytransformer import export
from pytransformer.export import load_checkpoint
from pytransformer.torch_reference import (ReferenceTransformer, init_seeded,
                                           save_checkpoint)

from model_configs import PARITY_CONFIGS

CONFIG_NAMES = sorted(PARITY_CONFIGS)
# float32 logits of O(1-4) size: batched and single runs differ only by summation order.
BATCH_ATOL = 1e-5
BATCH_RTOL = 1e-5
# float32 torch against the float64 NumPy forward pass.
NUMPY_ATOL = 1e-4


def full_config(name, **overrides):
    return ReferenceTransformer({**PARITY_CONFIGS[name], **overrides}).config


def random_batch(config, seed, batch=5, length=11):
    """Source ids [B, S] padded with pad_id, lengths including 1 and the full length."""
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, length + 1, (batch,), generator=generator)
    lengths[0], lengths[1] = length, 1
    src = torch.randint(0, config["src_vocab_size"], (batch, length), generator=generator)
    for row, n in enumerate(lengths.tolist()):
        src[row, n:] = config["pad_id"]
    return src, lengths


@pytest.fixture(scope="module", params=CONFIG_NAMES)
def seeded(request):
    return request.param, init_seeded(PARITY_CONFIGS[request.param], seed=1234)


# ---- the config list itself

def test_parity_configs_cover_the_features():
    configs = [ReferenceTransformer(c).config for c in PARITY_CONFIGS.values()]
    assert len(configs) >= 5
    for key, values in [("norm_placement", {"post", "pre"}),
                        ("activation", {"relu", "gelu", "gelu_tanh", "silu"}),
                        ("positional_encoding", {"sinusoidal", "learned"}),
                        ("sinusoidal_layout", {"interleaved", "halves"}),
                        ("tie_output", {True, False}), ("shared_embeddings", {True, False}),
                        ("output_bias", {True, False}), ("attention_bias", {True, False}),
                        ("embedding_norm", {True, False}), ("scale_embeddings", {True, False})]:
        assert {c[key] for c in configs} >= values, key
    assert any(c["d_model"] == 96 and c["num_heads"] == 3 and c["ffn_dim"] == 200 for c in configs)
    assert any(c["src_vocab_size"] != c["tgt_vocab_size"] for c in configs)
    assert any(c["position_offset"] > 0 and c["positional_encoding"] == "sinusoidal"
               for c in configs)
    for c in configs:
        assert 32 <= c["d_model"] <= 96 and c["max_positions"] == 64
        assert c["encoder_layers"] == c["decoder_layers"] == 2
        assert 20 <= c["src_vocab_size"] <= 60 and 20 <= c["tgt_vocab_size"] <= 60


def test_unsupported_features_raise():
    base = PARITY_CONFIGS["paper_post_relu"]
    for overrides in ({"norm_type": "rms_norm"}, {"ffn_gated": True},
                      {"attention_bias": True, "ffn_bias": False}):
        with pytest.raises(NotImplementedError):
            ReferenceTransformer({**base, **overrides})
    with pytest.raises(ValueError, match="unknown config keys"):
        ReferenceTransformer({**base, "dropout": 0.1})
    with pytest.raises(ValueError, match="eos_id"):
        ReferenceTransformer({**base, "eos_id": base["tgt_vocab_size"]})


# ---- the reference model

def test_padded_batch_equals_one_by_one(seeded):
    name, model = seeded
    config = model.config
    src, lengths = random_batch(config, seed=7)
    generator = torch.Generator().manual_seed(8)
    tgt = torch.randint(0, config["tgt_vocab_size"], (src.shape[0], 9), generator=generator)
    tgt[:, 0] = config["decoder_start_id"]
    with torch.no_grad():
        batched = model(src, lengths, tgt)
        memory, padding = model.encode(src, lengths)
        for row, n in enumerate(lengths.tolist()):
            alone = model(src[row:row + 1, :n], torch.tensor([n]), tgt[row:row + 1])
            torch.testing.assert_close(batched[row], alone[0], atol=BATCH_ATOL, rtol=BATCH_RTOL)
            # Padded encoder rows are zeroed, and padding is masked as documented.
            assert torch.all(memory[row, n:] == 0)
            assert padding[row].tolist() == [i >= n for i in range(src.shape[1])]
    assert torch.isfinite(batched).all()
    # The padding value must not matter.
    src_other = src.clone()
    src_other[padding] = (config["pad_id"] + 3) % config["src_vocab_size"]
    with torch.no_grad():
        torch.testing.assert_close(model(src_other, lengths, tgt), batched, atol=0, rtol=0)
    # Batched greedy decoding equals decoding each sequence alone.
    batched_tokens = model.greedy(src, lengths, max_new_tokens=12)
    for row, n in enumerate(lengths.tolist()):
        alone = model.greedy(src[row:row + 1, :n], torch.tensor([n]), max_new_tokens=12)[0]
        assert batched_tokens[row].tolist() == alone.tolist()


def check_greedy_against_teacher_forcing(model, src, lengths, tokens, max_new, min_new):
    config = model.config
    eos = config["eos_id"]
    for row, out in enumerate(tokens):
        assert out.dtype == torch.int64 and out.dim() == 1
        steps = out.tolist()
        assert 1 <= len(steps) <= max_new
        assert eos not in steps[:-1]
        if steps[-1] != eos:
            assert len(steps) == max_new
        else:
            assert len(steps) > min_new
        prefix = torch.tensor([[config["decoder_start_id"]] + steps[:-1]])
        with torch.no_grad():
            logits = model(src[row:row + 1], lengths[row:row + 1], prefix)[0]
        logits[:min_new, eos] = float("-inf")
        assert logits.argmax(dim=-1).tolist() == steps


def test_greedy_is_argmax_of_teacher_forced_output(seeded):
    name, model = seeded
    src, lengths = random_batch(model.config, seed=11, batch=6)
    tokens = model.greedy(src, lengths, max_new_tokens=15)
    check_greedy_against_teacher_forcing(model, src, lengths, tokens, 15, 0)


def test_greedy_stops_at_eos_and_min_new_tokens_delays_it():
    # eos_id does not change the weights, so promote a token the model is known to emit
    # mid-sequence to eos and check both stopping and its suppression.
    name = "pre_gelu_learned_separate"
    model = init_seeded(PARITY_CONFIGS[name], seed=5)
    src, lengths = random_batch(model.config, seed=3, batch=6)
    free = model.greedy(src, lengths, max_new_tokens=15)
    row = max(range(len(free)), key=lambda r: len(set(free[r].tolist())))
    steps = free[row].tolist()
    position = next(i for i in range(1, len(steps)) if steps[i] not in steps[:i])
    eos = steps[position]
    model = init_seeded({**PARITY_CONFIGS[name], "eos_id": eos}, seed=5)
    stopped = model.greedy(src, lengths, max_new_tokens=15)
    assert stopped[row].tolist() == steps[:position + 1]
    check_greedy_against_teacher_forcing(model, src, lengths, stopped, 15, 0)
    delayed = model.greedy(src, lengths, max_new_tokens=15, min_new_tokens=position + 2)
    assert delayed[row].tolist()[:position + 1] != stopped[row].tolist()
    assert eos not in delayed[row].tolist()[:position + 2]
    check_greedy_against_teacher_forcing(model, src, lengths, delayed, 15, position + 2)
    # max_new_tokens == 0 yields empty outputs.
    assert [t.tolist() for t in model.greedy(src, lengths, max_new_tokens=0)] == [[]] * 6


def test_seeded_weights_give_varied_outputs(seeded):
    name, model = seeded
    src, lengths = random_batch(model.config, seed=21, batch=8)
    src[:, 0] = torch.arange(8) % model.config["src_vocab_size"]  # all sources differ
    tokens = model.greedy(src, lengths, max_new_tokens=10)
    assert len({tuple(t.tolist()) for t in tokens}) >= 3, f"{name}: {tokens}"
    tgt = torch.full((8, 1), model.config["decoder_start_id"])
    with torch.no_grad():
        logits = model(src, lengths, tgt)
    assert 0.3 < float(logits.std()) < 10


def test_seeded_init_is_deterministic():
    config = PARITY_CONFIGS["odd_sizes_gelu_tanh_halves"]
    first = init_seeded(config, seed=99).state_dict()
    second = init_seeded(config, seed=99).state_dict()
    other = init_seeded(config, seed=100).state_dict()
    assert first.keys() == second.keys()
    for key in first:
        assert torch.equal(first[key], second[key]), key
    assert any(not torch.equal(first[k], other[k]) for k in first)


def test_tied_and_shared_parameters_are_one_tensor():
    model = init_seeded(PARITY_CONFIGS["bart_like"], seed=0)
    assert model.output.weight is model.src_embedding.weight
    assert model.tgt_embedding is model.src_embedding
    model = init_seeded(PARITY_CONFIGS["pre_gelu_learned_separate"], seed=0)
    assert model.output.weight is not model.tgt_embedding.weight
    assert model.tgt_embedding is not model.src_embedding


def test_checkpoint_roundtrip(tmp_path):
    for name in ("bart_like", "pre_silu_nobias"):
        model = init_seeded(PARITY_CONFIGS[name], seed=4)
        path = tmp_path / f"{name}.pt"
        save_checkpoint(model, path)
        loaded = load_checkpoint(path)
        assert loaded.config == model.config
        src, lengths = random_batch(model.config, seed=2)
        tgt = torch.full((src.shape[0], 3), model.config["decoder_start_id"])
        with torch.no_grad():
            torch.testing.assert_close(loaded(src, lengths, tgt), model(src, lengths, tgt),
                                       atol=0, rtol=0)
        if model.config["tie_output"]:
            assert loaded.output.weight is loaded.tgt_embedding.weight


# ---- sinusoidal positions

def paper_sinusoid(rows, d, layout):
    """The paper's table in float64: angle(pos, i) = pos / 10000^(2i/d)."""
    table = np.zeros((rows, d))
    for pos in range(rows):
        for i in range(d // 2):
            angle = pos / 10000.0 ** (2.0 * i / d)
            if layout == "interleaved":
                table[pos, 2 * i], table[pos, 2 * i + 1] = math.sin(angle), math.cos(angle)
            else:
                table[pos, i], table[pos, d // 2 + i] = math.sin(angle), math.cos(angle)
    return table


@pytest.mark.parametrize("layout", ["interleaved", "halves"])
@pytest.mark.parametrize("offset", [0, 2])
def test_sinusoidal_table_matches_paper_formula(layout, offset):
    config = {**PARITY_CONFIGS["paper_post_relu"], "sinusoidal_layout": layout,
              "position_offset": offset, "d_model": 64}
    model = ReferenceTransformer(config)
    rows = config["max_positions"] + offset
    expected = paper_sinusoid(rows, 64, layout)
    for positions in (model.encoder_positions, model.decoder_positions):
        table = positions.table.numpy()
        assert table.shape == (rows, 64) and table.dtype == np.float32
        np.testing.assert_allclose(table, expected, rtol=0, atol=1e-6)
        # Position p reads row p + offset.
        x = torch.zeros(1, 5, 64)
        np.testing.assert_array_equal(positions(x)[0].numpy(), table[offset:offset + 5])


# ---- export

def expected_tensor_shapes(config):
    """FORMAT.md's tensor list, written out again here independently of export.py."""
    d, f = config["d_model"], config["ffn_dim"]
    shapes = {"src_embedding.weight": (config["src_vocab_size"], d)}
    if not config["shared_embeddings"]:
        shapes["tgt_embedding.weight"] = (config["tgt_vocab_size"], d)
    if not config["tie_output"]:
        shapes["output.weight"] = (config["tgt_vocab_size"], d)
    if config["output_bias"]:
        shapes["output.bias"] = (config["tgt_vocab_size"],)

    def norm(name):
        shapes[name + ".weight"] = (d,)
        shapes[name + ".bias"] = (d,)  # layer_norm is the only norm type here

    def linear(name, out_dim, in_dim, bias):
        shapes[name + ".weight"] = (out_dim, in_dim)
        if bias:
            shapes[name + ".bias"] = (out_dim,)

    for side in ("encoder", "decoder"):
        if config["positional_encoding"] == "learned":
            shapes[f"{side}.positions.weight"] = (config["max_positions"]
                                                  + config["position_offset"], d)
        if config["embedding_norm"]:
            norm(f"{side}.embedding_norm")
        if config[f"{side}_final_norm"]:
            norm(f"{side}.final_norm")
        attentions = ["self_attn"] + (["cross_attn"] if side == "decoder" else [])
        for i in range(config[f"{side}_layers"]):
            layer = f"{side}.layers.{i}"
            for attn in attentions:
                for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
                    linear(f"{layer}.{attn}.{proj}", d, d, config["attention_bias"])
                norm(f"{layer}.{attn}_norm")
            linear(f"{layer}.ffn.fc1", f, d, config["ffn_bias"])
            linear(f"{layer}.ffn.fc2", d, f, config["ffn_bias"])
            norm(f"{layer}.ffn_norm")
    return shapes


def test_exported_tensors_have_format_names_and_shapes(seeded):
    name, model = seeded
    config, tensors = export.to_tensors(model)
    assert config == model.config
    assert config["format"] == "pytransformer" and config["format_version"] == 1
    assert {k: v.shape for k, v in tensors.items()} == expected_tensor_shapes(config)
    for key, array in tensors.items():
        assert array.dtype == np.float32 and array.flags.c_contiguous, key
        assert np.isfinite(array).all(), key


# A float64 NumPy forward pass over the exported tensors, written from FORMAT.md: it proves
# the name mapping (which norm is which, q/k/v order, tying) and the position offset.

def np_layer_norm(x, tensors, name, eps):
    mean = x.mean(-1, keepdims=True)
    var = ((x - mean) ** 2).mean(-1, keepdims=True)
    return (x - mean) / np.sqrt(var + eps) * tensors[name + ".weight"] + tensors[name + ".bias"]


def np_linear(x, tensors, name):
    y = x @ tensors[name + ".weight"].T
    return y + tensors[name + ".bias"] if name + ".bias" in tensors else y


def np_activation(x, kind):
    if kind == "relu":
        return np.maximum(x, 0)
    if kind == "gelu":
        return 0.5 * x * (1 + np.vectorize(math.erf)(x / math.sqrt(2)))
    if kind == "gelu_tanh":
        return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))
    return x / (1 + np.exp(-x))


def np_attention(x, memory, tensors, name, heads, causal):
    q, k, v = (np_linear(src, tensors, f"{name}.{p}_proj")
               for src, p in ((x, "q"), (memory, "k"), (memory, "v")))
    dh = x.shape[-1] // heads
    out = np.zeros_like(q)
    for h in range(heads):
        cols = slice(h * dh, (h + 1) * dh)
        scores = q[:, cols] @ k[:, cols].T / math.sqrt(dh)
        if causal:
            scores[np.triu(np.ones(scores.shape, dtype=bool), 1)] = -np.inf
        weights = np.exp(scores - scores.max(-1, keepdims=True))
        weights /= weights.sum(-1, keepdims=True)
        out[:, cols] = weights @ v[:, cols]
    return np_linear(out, tensors, f"{name}.out_proj")


def np_forward(config, tensors, src_ids, tgt_ids):
    t = {k: v.astype(np.float64) for k, v in tensors.items()}
    d, eps, heads = config["d_model"], config["layer_norm_eps"], config["num_heads"]
    scale = math.sqrt(d) if config["scale_embeddings"] else 1.0
    pre = config["norm_placement"] == "pre"
    tgt_table = t["src_embedding.weight" if config["shared_embeddings"] else "tgt_embedding.weight"]

    def embed(side, table, ids):
        x = table[ids] * scale
        rows = np.arange(len(ids)) + config["position_offset"]
        if config["positional_encoding"] == "learned":
            x = x + t[f"{side}.positions.weight"][rows]
        elif config["positional_encoding"] == "sinusoidal":
            table = paper_sinusoid(rows[-1] + 1, d, config["sinusoidal_layout"])
            x = x + table[rows]
        if config["embedding_norm"]:
            x = np_layer_norm(x, t, f"{side}.embedding_norm", eps)
        return x

    def sublayer(x, norm, fn):
        if pre:
            return x + fn(np_layer_norm(x, t, norm, eps))
        return np_layer_norm(x + fn(x), t, norm, eps)

    def ffn(layer):
        return lambda h: np_linear(np_activation(np_linear(h, t, f"{layer}.ffn.fc1"),
                                                 config["activation"]), t, f"{layer}.ffn.fc2")

    x = embed("encoder", t["src_embedding.weight"], src_ids)
    for i in range(config["encoder_layers"]):
        layer = f"encoder.layers.{i}"
        x = sublayer(x, f"{layer}.self_attn_norm",
                     lambda h: np_attention(h, h, t, f"{layer}.self_attn", heads, False))
        x = sublayer(x, f"{layer}.ffn_norm", ffn(layer))
    if config["encoder_final_norm"]:
        x = np_layer_norm(x, t, "encoder.final_norm", eps)
    memory = x

    y = embed("decoder", tgt_table, tgt_ids)
    for i in range(config["decoder_layers"]):
        layer = f"decoder.layers.{i}"
        y = sublayer(y, f"{layer}.self_attn_norm",
                     lambda h: np_attention(h, h, t, f"{layer}.self_attn", heads, True))
        y = sublayer(y, f"{layer}.cross_attn_norm",
                     lambda h: np_attention(h, memory, t, f"{layer}.cross_attn", heads, False))
        y = sublayer(y, f"{layer}.ffn_norm", ffn(layer))
    if config["decoder_final_norm"]:
        y = np_layer_norm(y, t, "decoder.final_norm", eps)
    logits = y @ (tgt_table if config["tie_output"] else t["output.weight"]).T
    return logits + t["output.bias"] if config["output_bias"] else logits


def test_exported_tensors_reproduce_the_reference_in_numpy(seeded):
    name, model = seeded
    config, tensors = export.to_tensors(model)
    generator = torch.Generator().manual_seed(13)
    src = torch.randint(0, config["src_vocab_size"], (1, 9), generator=generator)
    tgt = torch.randint(0, config["tgt_vocab_size"], (1, 7), generator=generator)
    with torch.no_grad():
        expected = model(src, torch.tensor([9]), tgt)[0].numpy()
    got = np_forward(config, tensors, src[0].numpy(), tgt[0].numpy())
    np.testing.assert_allclose(got, expected, rtol=0, atol=NUMPY_ATOL)


def test_export_writes_a_loadable_model_directory(tmp_path):
    from pytransformer.weights import load_weights

    model = init_seeded(PARITY_CONFIGS["pre_gelu_learned_separate"], seed=2)
    export.from_torch(model, tmp_path / "model")
    loaded_config, loaded = load_weights(tmp_path / "model")
    config, tensors = export.to_tensors(model)
    assert loaded.keys() == tensors.keys()
    for key in tensors:
        np.testing.assert_array_equal(np.asarray(loaded[key]), tensors[key])
    for key, value in config.items():
        assert getattr(loaded_config, key) == value, key


def test_main_export_converts_a_checkpoint(tmp_path, capsys):
    from pytransformer.weights import load_weights

    model = init_seeded(PARITY_CONFIGS["marian_like"], seed=3)
    save_checkpoint(model, tmp_path / "model.pt")
    assert export.main_export([str(tmp_path / "model.pt"), str(tmp_path / "out")]) == 0
    _, loaded = load_weights(tmp_path / "out")
    assert loaded.keys() == export.to_tensors(model)[1].keys()
    assert export.main_export([str(tmp_path / "missing.pt"), str(tmp_path / "out2")]) == 1
    assert "error" in capsys.readouterr().err
