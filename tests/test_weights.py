"""Tests for the weights layer: safetensors reader/writer, config validation, model directories.

Pure NumPy + pytest: nothing here needs the compiled kernels or torch.
"""

import json
import mmap
import os

import numpy as np
import pytest

from pytransformer import safetensors as st
from pytransformer.config import FORMAT_VERSION, ModelConfig, expected_tensors
from pytransformer.errors import WeightsError
from pytransformer.safetensors import (float32_to_bf16, read_safetensors, read_safetensors_header,
                                       read_safetensors_with_header, to_float32,
                                       write_safetensors)
from pytransformer.weights import CONFIG_FILE, WEIGHTS_FILE, load_weights, read_config, save

# ---------------------------------------------------------------------------------------------
# helpers


def raw_file(path, header, data=b"", header_len=None):
    """Write a safetensors-like file byte by byte; header is a JSON-able object or raw bytes."""
    body = header if isinstance(header, bytes) else json.dumps(header).encode()
    n = len(body) if header_len is None else header_len
    path.write_bytes(n.to_bytes(8, "little") + body + data)
    return path


def entry(dtype, shape, begin, end):
    return {"dtype": dtype, "shape": shape, "data_offsets": [begin, end]}


def is_mapped(array):
    """True when the array's memory is a view of an mmap (walks the .base chain)."""
    base = array
    while isinstance(base, np.ndarray):
        base = base.base
    return isinstance(base, memoryview) and isinstance(base.obj, mmap.mmap)


def raises(match_words, func, *args, **kwargs):
    """Call func expecting WeightsError whose message contains every word in match_words."""
    with pytest.raises(WeightsError) as info:
        func(*args, **kwargs)
    message = str(info.value)
    for word in match_words:
        assert word in message, f"{word!r} not in error message: {message}"
    return message


TINY = dict(d_model=8, num_heads=2, encoder_layers=2, decoder_layers=1, ffn_dim=12,
            src_vocab_size=13, tgt_vocab_size=11, eos_id=2, decoder_start_id=2)


def tiny_config(**overrides):
    return dict(TINY, **overrides)


def random_tensors(config, seed=0):
    rng = np.random.default_rng(seed)
    cfg = config if isinstance(config, ModelConfig) else ModelConfig(**config)
    return {name: rng.standard_normal(shape).astype(np.float32)
            for name, shape in expected_tensors(cfg).items()}


def config_dict(**overrides):
    d = {"format": "pytransformer", "format_version": FORMAT_VERSION, **TINY}
    d.update(overrides)
    return d


# ---------------------------------------------------------------------------------------------
# safetensors: round trips


def test_round_trip_all_dtypes(tmp_path):
    rng = np.random.default_rng(1)
    tensors = {
        "f64": rng.standard_normal((3, 5)),
        "f32": rng.standard_normal((7, 4)).astype(np.float32),
        "f16": rng.standard_normal((5,)).astype(np.float16),
        "i64": np.arange(-3, 3, dtype=np.int64).reshape(2, 3),
        "i32": np.array([1, -2, 3], dtype=np.int32),
        "i16": np.array([-7], dtype=np.int16),
        "i8": np.array([-128, 127], dtype=np.int8),
        "u8": np.array([0, 255, 7], dtype=np.uint8),
        "bool": np.array([[True, False], [False, True]]),
        "scalar": np.array(2.5, dtype=np.float32),
        "empty": np.zeros((0, 4), dtype=np.float32),
        "big_endian": np.arange(6, dtype=">f4").reshape(2, 3),
        "fortran": np.asfortranarray(rng.standard_normal((3, 4)).astype(np.float32)),
    }
    path = tmp_path / "t.safetensors"
    write_safetensors(path, tensors, metadata={"note": "hi"})
    header, loaded = read_safetensors_with_header(path)
    assert header.metadata == {"note": "hi"}
    assert set(loaded) == set(tensors)
    for name, array in tensors.items():
        got = loaded[name]
        assert got.shape == array.shape, name
        assert got.dtype == array.dtype.newbyteorder("="), name
        np.testing.assert_array_equal(got, array, err_msg=name)
    assert header.tensors["big_endian"].dtype == "F32"
    assert header.tensors["bool"].dtype == "BOOL"
    # header padded to a multiple of 8, and every tensor aligned to its item size
    assert header.data_start % 8 == 0
    for name, info in header.tensors.items():
        assert (header.data_start + info.begin) % st.DTYPES[info.dtype].itemsize == 0, name


def test_f32_tensors_are_read_only_memory_mapped_views(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"a": np.ones((64, 32), np.float32), "b": np.zeros(3, np.float16)})
    loaded = read_safetensors(path)
    a = loaded["a"]
    assert is_mapped(a) and is_mapped(loaded["b"])
    assert not a.flags.writeable and a.flags.c_contiguous and a.flags.aligned
    with pytest.raises(ValueError):
        a[0, 0] = 2.0


def test_unaligned_tensor_is_copied_and_correct(tmp_path):
    values = np.arange(6, dtype="<f4")
    body = json.dumps({"x": entry("F32", [2, 3], 0, 24)}).encode()
    body += b" " * ((1 - 8 - len(body)) % 4)  # data starts 1 byte past a multiple of 4
    path = raw_file(tmp_path / "u.safetensors", body, values.tobytes())
    assert (8 + len(body)) % 4 == 1
    x = read_safetensors(path)["x"]
    assert x.flags.aligned and not is_mapped(x)
    np.testing.assert_array_equal(x, values.reshape(2, 3))


def test_f16_and_bf16_conversion(tmp_path):
    rng = np.random.default_rng(2)
    f32 = rng.standard_normal((4, 6)).astype(np.float32)
    bf16_bits = float32_to_bf16(f32)
    path = tmp_path / "h.safetensors"
    write_safetensors(path, {"h": f32.astype(np.float16), "b": bf16_bits}, dtypes={"b": "BF16"})
    header, loaded = read_safetensors_with_header(path)
    assert header.tensors["b"].dtype == "BF16" and loaded["b"].dtype == np.uint16
    np.testing.assert_array_equal(loaded["b"], bf16_bits)

    h = to_float32(loaded["h"], "F16")
    assert h.dtype == np.float32
    np.testing.assert_array_equal(h, f32.astype(np.float16).astype(np.float32))
    b = to_float32(loaded["b"], "BF16")
    assert b.dtype == np.float32
    np.testing.assert_allclose(b, f32, rtol=2**-8)
    # widening is exact: bf16 values are float32 values with the low 16 bits zero
    np.testing.assert_array_equal(b.view(np.uint32) & 0xFFFF, 0)
    assert to_float32(loaded["h"][:0], "F16").shape == (0, 6)


def test_bf16_rounding_is_nearest_even():
    largest = np.finfo(np.float32).max  # rounds up to infinity in bfloat16
    cases = np.array([1.0, -2.0, np.inf, -np.inf, largest, 3.3895314e38], dtype=np.float32)
    bits = float32_to_bf16(cases)
    np.testing.assert_array_equal(bits, [0x3F80, 0xC000, 0x7F80, 0xFF80, 0x7F80, 0x7F7F])
    tie_down = np.array([0x3F808000], dtype=np.uint32).view(np.float32)  # halfway, even below
    tie_up = np.array([0x3F818000], dtype=np.uint32).view(np.float32)    # halfway, odd below
    assert float32_to_bf16(tie_down)[0] == 0x3F80
    assert float32_to_bf16(tie_up)[0] == 0x3F82
    nan = float32_to_bf16(np.array([np.nan], np.float32))
    assert np.isnan(to_float32(nan, "BF16")).all()


def test_header_only_read(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"w": np.zeros((2, 3), np.float32)}, metadata={"k": "v"})
    header = read_safetensors_header(path)
    assert header.metadata == {"k": "v"}
    assert header.tensors["w"] == st.TensorInfo("F32", (2, 3), 0, 24)


def test_writer_is_atomic_and_rejects_bad_input(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"a": np.ones(2, np.float32)})
    raises(["'c'", "complex"], write_safetensors, path, {"c": np.ones(2, np.complex64)})
    raises(["'a'", "BF16"], write_safetensors, path, {"a": np.ones(2, np.float32)},
           dtypes={"a": "BF16"})
    raises(["__metadata__"], write_safetensors, path, {"__metadata__": np.ones(1)})
    raises(["metadata"], write_safetensors, path, {"a": np.ones(1)}, metadata={"k": 1})
    # failed writes leave the old file intact and no temporary files behind
    np.testing.assert_array_equal(read_safetensors(path)["a"], [1, 1])
    assert os.listdir(tmp_path) == ["t.safetensors"]


# ---------------------------------------------------------------------------------------------
# safetensors: hostile files


def test_file_too_small(tmp_path):
    path = tmp_path / "s.safetensors"
    path.write_bytes(b"\x01\x00")
    raises([str(path), "too small"], read_safetensors, path)
    raises([str(path), "too small"], read_safetensors_header, path)


def test_header_length_beyond_file(tmp_path):
    path = raw_file(tmp_path / "h.safetensors", {}, header_len=10**6)
    raises([str(path), "header length 1000000", "exceeds the file size"], read_safetensors, path)
    path = raw_file(tmp_path / "h2.safetensors", {}, header_len=2**64 - 1)
    raises(["exceeds the file size"], read_safetensors_header, path)


def test_header_length_above_limit(tmp_path, monkeypatch):
    monkeypatch.setattr(st, "MAX_HEADER_BYTES", 16)
    path = raw_file(tmp_path / "h.safetensors", {"x": entry("F32", [1], 0, 4)}, b"\0" * 4)
    raises(["exceeds the limit"], read_safetensors, path)


def test_truncated_data(tmp_path):
    path = tmp_path / "t.safetensors"
    write_safetensors(path, {"weight": np.ones((10, 10), np.float32)})
    path.write_bytes(path.read_bytes()[:-4])
    raises([str(path), "'weight'", "outside the data section"], read_safetensors, path)


@pytest.mark.parametrize("offsets", [[0, 100], [8, 4], [-4, 0], [2**70, 2**70 + 4]])
def test_offsets_out_of_bounds(tmp_path, offsets):
    hdr = {"w": {"dtype": "F32", "shape": [1], "data_offsets": offsets}}
    path = raw_file(tmp_path / "o.safetensors", hdr, b"\0" * 8)
    raises(["'w'", "data_offsets"], read_safetensors, path)


def test_overlapping_tensors(tmp_path):
    hdr = {"first": entry("F32", [2], 0, 8), "second": entry("F32", [2], 4, 12)}
    path = raw_file(tmp_path / "o.safetensors", hdr, b"\0" * 12)
    raises(["'first'", "'second'", "overlap"], read_safetensors, path)
    # an empty tensor sitting inside another's bytes holds nothing, so it is not an overlap
    hdr = {"first": entry("F32", [2], 0, 8), "empty": entry("F32", [0], 4, 4)}
    path = raw_file(tmp_path / "e.safetensors", hdr, b"\0" * 8)
    assert read_safetensors(path)["empty"].shape == (0,)


@pytest.mark.parametrize("dtype", ["float32", "F8_E4M3", "f32", 4, None])
def test_unknown_dtype(tmp_path, dtype):
    hdr = {"w": {"dtype": dtype, "shape": [1], "data_offsets": [0, 4]}}
    path = raw_file(tmp_path / "d.safetensors", hdr, b"\0" * 4)
    raises(["'w'", "dtype"], read_safetensors, path)


def test_shape_size_mismatch(tmp_path):
    path = raw_file(tmp_path / "m.safetensors", {"w": entry("F32", [2, 3], 0, 20)}, b"\0" * 24)
    raises(["'w'", "needs 24 bytes", "span 20"], read_safetensors, path)


@pytest.mark.parametrize("shape", [[-1, 2], [True, 4], [2.0], "4", [[2]], [0, 2**60]])
def test_bad_shape(tmp_path, shape):
    hdr = {"w": {"dtype": "F32", "shape": shape, "data_offsets": [0, 0]}}
    path = raw_file(tmp_path / "s.safetensors", hdr)
    raises(["'w'", "shape"], read_safetensors, path)


@pytest.mark.parametrize("bad", [
    {"dtype": "F32", "shape": [1]},
    {"dtype": "F32", "shape": [1], "data_offsets": [0, 4], "extra": 1},
    {"dtype": "F32", "shape": [1], "data_offsets": [0, True]},
    {"dtype": "F32", "shape": [1], "data_offsets": [0]},
    [0, 4],
])
def test_malformed_entry(tmp_path, bad):
    path = raw_file(tmp_path / "e.safetensors", {"w": bad}, b"\0" * 4)
    raises(["'w'"], read_safetensors, path)


@pytest.mark.parametrize("header", [b"[]", b'"x"', b"12", b"null", b"{\"a\": ", b"\xff\xfe{}",
                                    b'{"w": {}, "w": {}}', b"[" * 100000])
def test_header_not_a_json_object(tmp_path, header):
    path = raw_file(tmp_path / "j.safetensors", header)
    raises([str(path), "header"], read_safetensors, path)


def test_garbage_bytes(tmp_path):
    rng = np.random.default_rng(3)
    for i in range(20):
        path = tmp_path / f"g{i}.safetensors"
        path.write_bytes(rng.integers(0, 256, size=int(rng.integers(0, 200)), dtype=np.uint8)
                         .tobytes())
        raises([str(path)], read_safetensors, path)
    # plausible length, garbage body
    path = raw_file(tmp_path / "g.safetensors", bytes(range(256))[:40])
    raises([str(path)], read_safetensors, path)


def test_bad_metadata(tmp_path):
    path = raw_file(tmp_path / "m.safetensors", {"__metadata__": {"k": 1}})
    raises(["__metadata__"], read_safetensors, path)


def test_missing_file(tmp_path):
    raises(["nope.safetensors"], read_safetensors, tmp_path / "nope.safetensors")


# ---------------------------------------------------------------------------------------------
# config


def test_config_defaults_and_round_trip():
    config = ModelConfig.from_dict(config_dict())
    assert config.activation == "relu" and config.norm_placement == "post"
    assert config.bos_id is None and config.layer_norm_eps == 1e-5
    assert config.head_dim == 4 and config.position_rows == 1024
    d = config.to_dict()
    assert list(d)[:2] == ["format", "format_version"]
    assert ModelConfig.from_dict(json.loads(json.dumps(d))) == config
    assert ModelConfig.from_dict(config_dict(layer_norm_eps=1)).layer_norm_eps == 1.0


@pytest.mark.parametrize("overrides, words", [
    ({"vocab_size": 3}, ["unknown", "'vocab_size'"]),
    ({"activation": "tanh"}, ["'activation'", "'tanh'"]),
    ({"norm_type": "batch_norm"}, ["'norm_type'", "'batch_norm'"]),
    ({"norm_placement": "middle"}, ["'norm_placement'"]),
    ({"positional_encoding": "rope"}, ["'positional_encoding'", "'rope'"]),
    ({"sinusoidal_layout": "mixed"}, ["'sinusoidal_layout'"]),
    ({"num_heads": 3}, ["'num_heads'", "3", "d_model 8"]),
    ({"format_version": FORMAT_VERSION + 1}, ["'format_version'", "newer", "upgrade"]),
    ({"format_version": FORMAT_VERSION + 1, "new_key": 1}, ["newer"]),
    ({"format_version": 0}, ["'format_version'"]),
    ({"format_version": "1"}, ["'format_version'"]),
    ({"format": "hf"}, ["'format'", "'hf'"]),
    ({"d_model": True}, ["'d_model'", "True"]),
    ({"d_model": 8.0}, ["'d_model'"]),
    ({"d_model": 0}, ["'d_model'"]),
    ({"encoder_layers": 0}, ["'encoder_layers'"]),
    ({"decoder_layers": 10**6}, ["'decoder_layers'"]),
    ({"ffn_dim": -1}, ["'ffn_dim'"]),
    ({"src_vocab_size": 2**40}, ["'src_vocab_size'"]),
    ({"eos_id": False}, ["'eos_id'", "False"]),
    ({"eos_id": 11}, ["'eos_id'", "11"]),
    ({"pad_id": -1}, ["'pad_id'"]),
    ({"pad_id": None}, ["'pad_id'"]),
    ({"bos_id": 12}, ["'bos_id'", "12"]),
    ({"bos_id": True}, ["'bos_id'"]),
    ({"decoder_start_id": 11}, ["'decoder_start_id'", "tgt_vocab_size"]),
    ({"shared_embeddings": 1}, ["'shared_embeddings'", "1"]),
    ({"shared_embeddings": True}, ["'shared_embeddings'", "13", "11"]),
    ({"tie_output": "yes"}, ["'tie_output'"]),
    ({"ffn_gated": True, "format_version": 1}, ["'ffn_gated'", "format_version 2"]),
    ({"layer_norm_eps": 0.0}, ["'layer_norm_eps'"]),
    ({"layer_norm_eps": float("nan")}, ["'layer_norm_eps'"]),
    ({"layer_norm_eps": True}, ["'layer_norm_eps'"]),
    ({"layer_norm_eps": 10**400}, ["'layer_norm_eps'"]),
    ({"layer_norm_eps": "1e-5"}, ["'layer_norm_eps'"]),
    ({"position_offset": -2}, ["'position_offset'"]),
    ({"max_positions": 0}, ["'max_positions'"]),
    ({"d_model": 9, "num_heads": 3}, ["'d_model'", "even", "9"]),
])
def test_config_rejects(overrides, words):
    raises(words, ModelConfig.from_dict, config_dict(**overrides), source="cfg.json")
    assert "cfg.json" in raises([], ModelConfig.from_dict, config_dict(**overrides),
                                source="cfg.json")


def test_config_missing_keys():
    for key in ["format", "format_version", "d_model", "eos_id", "decoder_start_id"]:
        d = config_dict()
        del d[key]
        raises(["missing", repr(key)], ModelConfig.from_dict, d)
    raises(["JSON object"], ModelConfig.from_dict, [1, 2])


def test_config_accepts_valid_variants():
    ModelConfig.from_dict(config_dict(d_model=6, num_heads=3, positional_encoding="learned"))
    ModelConfig.from_dict(config_dict(shared_embeddings=True, src_vocab_size=11, bos_id=0))
    with pytest.raises(Exception):  # frozen
        ModelConfig(**TINY).d_model = 4


def test_expected_tensors_follow_the_config():
    base = expected_tensors(ModelConfig(**TINY))
    per_enc, per_dec = 4 * 2 + 2 + 4 + 2, 2 * (4 * 2 + 2) + 4 + 2
    assert len(base) == 2 + 2 * per_enc + per_dec
    assert base["encoder.layers.1.ffn.fc1.weight"] == (12, 8)
    assert base["decoder.layers.0.ffn.fc2.weight"] == (8, 12)
    assert base["decoder.layers.0.cross_attn.v_proj.bias"] == (8,)
    assert "output.weight" not in base and "encoder.positions.weight" not in base

    cfg = ModelConfig(**dict(TINY, src_vocab_size=11, shared_embeddings=True, tie_output=False,
                             output_bias=True, norm_type="rms_norm", attention_bias=False,
                             ffn_bias=False, positional_encoding="learned", position_offset=2,
                             max_positions=16, embedding_norm=True, encoder_final_norm=True,
                             decoder_final_norm=True))
    shapes = expected_tensors(cfg)
    assert "tgt_embedding.weight" not in shapes
    assert shapes["output.weight"] == (11, 8) and shapes["output.bias"] == (11,)
    assert shapes["encoder.positions.weight"] == (18, 8)
    assert shapes["decoder.positions.weight"] == (18, 8)
    for name in ("encoder.embedding_norm.weight", "decoder.embedding_norm.weight",
                 "encoder.final_norm.weight", "decoder.final_norm.weight"):
        assert shapes[name] == (8,)
    assert not any(name.endswith(".bias") for name in shapes if name != "output.bias")
    assert cfg.num_parameters() == sum(int(np.prod(s)) for s in shapes.values())


# ---------------------------------------------------------------------------------------------
# model directories


def test_save_load_round_trip(tmp_path):
    cfg = tiny_config(activation="gelu", bos_id=0)
    tensors = random_tensors(cfg)
    tensors["src_embedding.weight"] = tensors["src_embedding.weight"].astype(np.float64)
    save(tmp_path / "m", cfg, tensors)
    config, loaded = load_weights(tmp_path / "m")
    assert config == ModelConfig(**cfg)
    assert list(loaded) == list(expected_tensors(config))
    for name, array in tensors.items():
        assert loaded[name].dtype == np.float32
        np.testing.assert_array_equal(loaded[name], array.astype(np.float32), err_msg=name)
        assert is_mapped(loaded[name]), name
    written = json.loads((tmp_path / "m" / CONFIG_FILE).read_text())
    assert written["format"] == "pytransformer" and written["activation"] == "gelu"
    assert read_config(tmp_path / "m") == config
    # saving a ModelConfig and overwriting an existing directory both work
    save(tmp_path / "m", config, random_tensors(cfg, seed=1))
    assert not np.array_equal(load_weights(tmp_path / "m")[1]["src_embedding.weight"],
                              loaded["src_embedding.weight"])


def test_load_converts_f16_and_bf16(tmp_path):
    config = ModelConfig(**TINY)
    tensors = random_tensors(config)
    names = list(tensors)
    stored, dtypes = {}, {}
    for i, name in enumerate(names):
        if i % 3 == 0:
            stored[name] = tensors[name].astype(np.float16)
        elif i % 3 == 1:
            stored[name], dtypes[name] = float32_to_bf16(tensors[name]), "BF16"
        else:
            stored[name] = tensors[name]
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(config.to_dict()))
    write_safetensors(tmp_path / "m" / WEIGHTS_FILE, stored, dtypes=dtypes)
    _, loaded = load_weights(tmp_path / "m")
    for i, name in enumerate(names):
        got = loaded[name]
        assert got.dtype == np.float32 and got.shape == tensors[name].shape
        if i % 3 == 0:
            np.testing.assert_array_equal(got, stored[name].astype(np.float32))
        elif i % 3 == 1:
            np.testing.assert_array_equal(got, to_float32(stored[name], "BF16"))
        else:
            np.testing.assert_array_equal(got, tensors[name])
            assert is_mapped(got)


def _write_model(directory, config, tensors, dtypes=None):
    directory.mkdir(exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config))
    write_safetensors(directory / WEIGHTS_FILE, tensors, dtypes=dtypes)
    return directory


def test_load_rejects_missing_tensor(tmp_path):
    tensors = random_tensors(TINY)
    del tensors["decoder.layers.0.cross_attn.k_proj.weight"]
    path = _write_model(tmp_path / "m", config_dict(), tensors)
    raises(["missing", "'decoder.layers.0.cross_attn.k_proj.weight'", WEIGHTS_FILE],
           load_weights, path)


def test_load_rejects_unexpected_tensor(tmp_path):
    tensors = random_tensors(TINY)
    tensors["encoder.layers.2.ffn.fc1.weight"] = np.zeros((12, 8), np.float32)
    path = _write_model(tmp_path / "m", config_dict(), tensors)
    raises(["unexpected", "'encoder.layers.2.ffn.fc1.weight'"], load_weights, path)


def test_load_rejects_wrong_shape(tmp_path):
    tensors = random_tensors(TINY)
    tensors["encoder.layers.0.ffn.fc1.weight"] = np.zeros((8, 12), np.float32)  # transposed
    path = _write_model(tmp_path / "m", config_dict(), tensors)
    raises(["'encoder.layers.0.ffn.fc1.weight'", "[8, 12]", "[12, 8]"], load_weights, path)


def test_load_rejects_non_float_dtype(tmp_path):
    tensors = random_tensors(TINY)
    tensors["src_embedding.weight"] = np.zeros((13, 8), np.int32)
    path = _write_model(tmp_path / "m", config_dict(), tensors)
    raises(["'src_embedding.weight'", "I32"], load_weights, path)
    tensors["src_embedding.weight"] = np.zeros((13, 8), np.float64)
    path = _write_model(tmp_path / "m", config_dict(), tensors)
    raises(["'src_embedding.weight'", "F64"], load_weights, path)


def test_load_rejects_bad_config(tmp_path):
    tensors = random_tensors(TINY)
    path = _write_model(tmp_path / "m", config_dict(activation="swish"), tensors)
    raises([CONFIG_FILE, "'activation'", "'swish'"], load_weights, path)
    (path / CONFIG_FILE).write_text("[1, 2, 3]")
    raises([CONFIG_FILE, "JSON object"], load_weights, path)
    (path / CONFIG_FILE).write_text("{not json")
    raises([CONFIG_FILE, "JSON"], load_weights, path)
    (path / CONFIG_FILE).write_text(json.dumps(config_dict(d_model=True)))
    raises([CONFIG_FILE, "'d_model'"], load_weights, path)
    (path / CONFIG_FILE).write_bytes(b" " * (2 << 20))
    raises([CONFIG_FILE, "larger than"], load_weights, path)


def test_load_rejects_missing_files(tmp_path):
    raises(["not a model directory"], load_weights, tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    raises(["not a model directory"], load_weights, tmp_path / "file")
    (tmp_path / "m").mkdir()
    raises([CONFIG_FILE, "not found"], load_weights, tmp_path / "m")
    (tmp_path / "m" / CONFIG_FILE).write_text(json.dumps(config_dict()))
    raises([WEIGHTS_FILE, "not found"], load_weights, tmp_path / "m")
    (tmp_path / "m" / WEIGHTS_FILE).write_bytes(b"\0" * 3)
    raises([WEIGHTS_FILE, "too small"], load_weights, tmp_path / "m")


def test_save_validates(tmp_path):
    tensors = random_tensors(TINY)
    raises(["'num_heads'"], save, tmp_path / "a", tiny_config(num_heads=3), tensors)
    raises(["'colour'"], save, tmp_path / "a", tiny_config(colour="red"), tensors)
    extra = dict(tensors, **{"output.weight": np.zeros((11, 8), np.float32)})
    raises(["unexpected", "'output.weight'"], save, tmp_path / "a", TINY, extra)
    missing = {k: v for k, v in tensors.items() if k != "tgt_embedding.weight"}
    raises(["missing", "'tgt_embedding.weight'"], save, tmp_path / "a", TINY, missing)
    bad = dict(tensors, **{"src_embedding.weight": np.full((13, 8), np.nan, np.float32)})
    raises(["'src_embedding.weight'", "NaN"], save, tmp_path / "a", TINY, bad)
    ints = dict(tensors, **{"src_embedding.weight": np.zeros((13, 8), np.int64)})
    raises(["'src_embedding.weight'", "int64"], save, tmp_path / "a", TINY, ints)
    assert not (tmp_path / "a").exists()


def test_interoperates_with_the_reference_safetensors_package(tmp_path):
    reference = pytest.importorskip("safetensors.numpy",
                                    reason="cross-check needs the safetensors package")
    rng = np.random.default_rng(4)
    tensors = {"a": rng.standard_normal((3, 4)).astype(np.float32),
               "b": np.arange(5, dtype=np.int64), "c": np.array([True, False]),
               "h": rng.standard_normal(7).astype(np.float16), "s": np.array(3.0, np.float32)}
    reference.save_file(tensors, str(tmp_path / "theirs.safetensors"), metadata={"x": "y"})
    header, ours = read_safetensors_with_header(tmp_path / "theirs.safetensors")
    assert header.metadata == {"x": "y"}
    write_safetensors(tmp_path / "ours.safetensors", tensors)
    theirs = reference.load_file(str(tmp_path / "ours.safetensors"))
    for name, array in tensors.items():
        for got in (ours[name], theirs[name]):
            assert got.shape == array.shape and got.dtype == array.dtype, name
            np.testing.assert_array_equal(got, array, err_msg=name)
