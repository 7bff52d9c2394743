"""pytransformer.model - the encoder-decoder Transformer: weights packed once, layers as calls into the kernels.

Layering: _kernels (checked C calls) -> this module (layers, encoder, decoder step) -> decoding.py
(the greedy loop). Activations are 2-D float32 arrays of shape (batch * seq, d_model); attention
sees them as (batch, seq, heads, head_dim) strided views, so no transposes are copied.
"""
import math

import numpy as np

from . import _kernels as K
from .config import ModelConfig
from .errors import WeightsError

_NORM_RMS = "rms_norm"


class Linear:
    """y = x W^T + b with W packed once at load; optional fused activation and residual."""

    __slots__ = ("packed", "bias", "out_features")

    def __init__(self, weight, bias=None):
        self.packed = K.pack(weight, transpose=True)
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
        self.out_features = self.packed.n

    @classmethod
    def fused(cls, weights, biases):
        """One GEMM for several projections of the same input (q/k/v): weights stacked on the output axis."""
        w = np.concatenate([np.asarray(x, dtype=np.float32) for x in weights], axis=0)
        b = None if biases[0] is None else np.concatenate(biases).astype(np.float32)
        return cls(w, b)

    def __call__(self, x, act=0, residual=None, out=None):
        return K.gemm(x, self.packed, self.bias, residual, act, out)


class Norm:
    """Layer norm or RMS norm with the fused residual add of the kernels."""

    __slots__ = ("weight", "bias", "eps", "rms")

    def __init__(self, weight, bias, eps, rms):
        self.weight = np.ascontiguousarray(weight, dtype=np.float32)
        self.bias = None if bias is None else np.ascontiguousarray(bias, dtype=np.float32)
        self.eps = float(eps)
        self.rms = rms

    def __call__(self, x, residual=None, sum_out=None, out=None):
        return K.norm(x, self.weight, self.bias, self.eps, self.rms, residual, sum_out, out)


class Attention:
    """Multi-head attention projections; self-attention fuses q/k/v, cross-attention fuses k/v."""

    __slots__ = ("q", "kv", "qkv", "out", "heads", "head_dim", "d_model")

    def __init__(self, t, prefix, cfg, cross):
        d = cfg.d_model
        self.heads = cfg.num_heads
        self.head_dim = d // cfg.num_heads
        self.d_model = d
        b = (lambda n: t[prefix + n + ".bias"]) if cfg.attention_bias else (lambda n: None)
        w = lambda n: t[prefix + n + ".weight"]
        if cross:
            self.q = Linear(w("q_proj"), b("q_proj"))
            self.kv = Linear.fused([w("k_proj"), w("v_proj")], [b("k_proj"), b("v_proj")])
            self.qkv = None
        else:
            self.qkv = Linear.fused([w("q_proj"), w("k_proj"), w("v_proj")],
                                    [b("q_proj"), b("k_proj"), b("v_proj")])
            self.q = self.kv = None
        self.out = Linear(w("out_proj"), b("out_proj"))

    def heads_view(self, x, batch, seq, index):
        """Projection output (batch*seq, n*d), contiguous -> the (batch, seq, heads, head_dim) view of
        its index-th d-wide block (q, k or v); strided, never copied."""
        return x.reshape(batch, seq, -1, self.heads, self.head_dim)[:, :, index]


class FeedForward:
    __slots__ = ("fc1", "fc2", "act")

    def __init__(self, t, prefix, cfg):
        b = (lambda n: t[prefix + n + ".bias"]) if cfg.ffn_bias else (lambda n: None)
        self.fc1 = Linear(t[prefix + "fc1.weight"], b("fc1"))
        self.fc2 = Linear(t[prefix + "fc2.weight"], b("fc2"))
        self.act = K.ACTIVATIONS[cfg.activation]

    def __call__(self, x, residual):
        """residual + fc2(act(fc1(x))); the residual add is fused into the second GEMM (in place)."""
        return self.fc2(self.fc1(x, self.act), residual=residual, out=residual)


def _norm(t, name, cfg):
    rms = cfg.norm_type == _NORM_RMS
    return Norm(t[name + ".weight"], None if rms else t[name + ".bias"], cfg.layer_norm_eps, rms)


class EncoderLayer:
    __slots__ = ("attn", "attn_norm", "ffn", "ffn_norm")

    def __init__(self, t, prefix, cfg):
        self.attn = Attention(t, prefix + "self_attn.", cfg, cross=False)
        self.attn_norm = _norm(t, prefix + "self_attn_norm", cfg)
        self.ffn = FeedForward(t, prefix + "ffn.", cfg)
        self.ffn_norm = _norm(t, prefix + "ffn_norm", cfg)


class DecoderLayer:
    __slots__ = ("self_attn", "self_norm", "cross_attn", "cross_norm", "ffn", "ffn_norm")

    def __init__(self, t, prefix, cfg):
        self.self_attn = Attention(t, prefix + "self_attn.", cfg, cross=False)
        self.self_norm = _norm(t, prefix + "self_attn_norm", cfg)
        self.cross_attn = Attention(t, prefix + "cross_attn.", cfg, cross=True)
        self.cross_norm = _norm(t, prefix + "cross_attn_norm", cfg)
        self.ffn = FeedForward(t, prefix + "ffn.", cfg)
        self.ffn_norm = _norm(t, prefix + "ffn_norm", cfg)


def _sublayer(pre_norm, norm, x, body):
    """Residual wiring around one sub-layer; `body(h, residual)` returns residual + f(h) (fused in its last GEMM).

    post-norm (the paper): x = norm(x + f(x));  pre-norm: x = x + f(norm(x))."""
    if pre_norm:
        return body(norm(x), x)           # body adds f(norm(x)) into x in place
    # f has consumed x (its first GEMM reads it) before the last GEMM writes the sum over it.
    return norm(body(x, x), out=x)


class Model:
    """A loaded encoder-decoder model. Build with pytransformer.load(path)."""

    # Set by pytransformer.load when the model directory ships a vocabulary or tokenizer: an object
    # with encode(text) -> list of source ids and decode(ids) -> text.
    tokenizer = None

    def __init__(self, config: ModelConfig, tensors: dict, path=None):
        self.config = cfg = config
        self.path = path
        t = tensors
        self.pre_norm = cfg.norm_placement == "pre"
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        self.heads = cfg.num_heads
        self.head_dim = cfg.d_model // cfg.num_heads
        try:
            self._build(t, cfg)
        except KeyError as e:  # the loader already checked names; this guards direct construction
            raise WeightsError(f"missing tensor {e.args[0]!r}") from None

    # ------------------------------------------------------------------ construction
    def _build(self, t, cfg):
        src_table = t["src_embedding.weight"]
        tgt_table = src_table if cfg.shared_embeddings else t["tgt_embedding.weight"]
        # The output projection is a GEMM with B = table^T. When it is tied, the packed copy also
        # serves the target-embedding gathers, so the table is held once.
        if cfg.tie_output:
            self.output = Linear(tgt_table, t["output.bias"] if cfg.output_bias else None)
            self.tgt_embed = self.output.packed
        else:
            self.output = Linear(t["output.weight"], t["output.bias"] if cfg.output_bias else None)
            self.tgt_embed = np.ascontiguousarray(tgt_table, dtype=np.float32)
        if cfg.shared_embeddings and cfg.tie_output:
            self.src_embed = self.tgt_embed
        else:
            self.src_embed = np.ascontiguousarray(src_table, dtype=np.float32)

        self.max_positions = cfg.max_positions
        if cfg.positional_encoding == "learned":
            off = cfg.position_offset
            self.enc_pos = np.ascontiguousarray(t["encoder.positions.weight"][off:], dtype=np.float32)
            self.dec_pos = np.ascontiguousarray(t["decoder.positions.weight"][off:], dtype=np.float32)
        elif cfg.positional_encoding == "sinusoidal":
            table = K.sinusoidal_positions(cfg.max_positions, cfg.d_model, cfg.position_offset,
                                           cfg.sinusoidal_layout)
            self.enc_pos = self.dec_pos = table
        else:
            self.enc_pos = self.dec_pos = None

        emb_norm = cfg.embedding_norm
        self.enc_emb_norm = _norm(t, "encoder.embedding_norm", cfg) if emb_norm else None
        self.dec_emb_norm = _norm(t, "decoder.embedding_norm", cfg) if emb_norm else None
        self.encoder_layers = [EncoderLayer(t, f"encoder.layers.{i}.", cfg) for i in range(cfg.encoder_layers)]
        self.decoder_layers = [DecoderLayer(t, f"decoder.layers.{i}.", cfg) for i in range(cfg.decoder_layers)]
        self.enc_final = _norm(t, "encoder.final_norm", cfg) if cfg.encoder_final_norm else None
        self.dec_final = _norm(t, "decoder.final_norm", cfg) if cfg.decoder_final_norm else None

    # ------------------------------------------------------------------ input checks
    def prepare_source(self, src, lengths=None):
        """Token ids as a list of sequences or a padded 2-D array (+ lengths) -> (ids (B, S) int32, lengths)."""
        cfg = self.config
        if isinstance(src, np.ndarray) and src.ndim == 2:
            if src.shape[0] == 0:
                raise ValueError("empty batch: no source sequences given")
            if src.shape[1] == 0:
                raise ValueError("source sequences are empty (0 columns)")
            if not np.issubdtype(src.dtype, np.integer):
                raise TypeError(f"token ids must be integers, got dtype {src.dtype}")
            if lengths is None:
                lengths = np.full(src.shape[0], src.shape[1], dtype=np.int32)
            lengths = np.asarray(lengths)
            if lengths.shape != (src.shape[0],) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(f"lengths must be {src.shape[0]} integers, got shape {lengths.shape}")
            if lengths.min() < 1 or lengths.max() > src.shape[1]:
                raise ValueError(f"lengths must lie in [1, {src.shape[1]}], got {lengths.tolist()}")
            ids = src.astype(np.int64)
            seqs = [ids[b, :lengths[b]] for b in range(src.shape[0])]
        else:
            if lengths is not None:
                raise ValueError("lengths is only for a padded 2-D array of ids")
            try:
                seqs = [np.asarray(s) for s in src]
            except TypeError:
                raise TypeError(f"src must be a list of token-id sequences or a 2-D array, "
                                f"got {type(src).__name__}") from None
            if not seqs:
                raise ValueError("empty batch: no source sequences given")
        for b, s in enumerate(seqs):
            if s.ndim != 1:
                raise ValueError(f"source sequence {b} must be 1-D, got shape {s.shape}")
            if s.size == 0:
                raise ValueError(f"source sequence {b} is empty")
            if not np.issubdtype(s.dtype, np.integer):
                raise TypeError(f"source sequence {b} must hold integer token ids, got dtype {s.dtype}")
        self._check_ids(seqs, cfg.src_vocab_size, "source")
        longest = max(len(s) for s in seqs)
        if self.enc_pos is not None and longest > self.max_positions:
            b = next(i for i, s in enumerate(seqs) if len(s) == longest)
            raise ValueError(f"source sequence {b} has {longest} tokens, more than the model's "
                             f"{self.max_positions} positions")
        n = len(seqs)
        ids = np.full((n, longest), cfg.pad_id, dtype=np.int32)
        lens = np.empty(n, dtype=np.int32)
        for b, s in enumerate(seqs):
            ids[b, :len(s)] = s
            lens[b] = len(s)
        return ids, lens

    @staticmethod
    def _check_ids(seqs, vocab, what):
        for b, s in enumerate(seqs):
            bad = np.flatnonzero((s < 0) | (s >= vocab))
            if bad.size:
                p = int(bad[0])
                raise ValueError(f"token id {int(s[p])} out of range for {what} vocab of {vocab} "
                                 f"(sequence {b}, position {p})")

    # ------------------------------------------------------------------ encoder
    def _embed(self, ids, table, positions, emb_norm):
        """ids (B, T) -> (B*T, d): token rows * scale + position rows (positions (T, d) or None)."""
        B, T = ids.shape
        x = K.embedding(ids.reshape(-1), table, self.embed_scale)
        if positions is not None:
            x3 = x.reshape(B, T, -1)
            x3 += positions[:T]
        if emb_norm is not None:
            x = emb_norm(x, out=x)
        return x

    def _self_attention(self, attn, x, B, T, lengths, causal, out):
        """Attention context (B*T, d) for the normalised input x."""
        qkv = attn.qkv(x)
        q = attn.heads_view(qkv, B, T, 0)
        k = attn.heads_view(qkv, B, T, 1)
        v = attn.heads_view(qkv, B, T, 2)
        K.attention(q, k, v, out.reshape(B, T, attn.heads, attn.head_dim), kv_lengths=lengths, causal=causal)
        return out

    def encode(self, src, lengths=None):
        """Encoder output (B, S, d) float32 and source lengths (B,) for token-id sequences."""
        ids, lens = self.prepare_source(src, lengths)
        memory = self._encode_ids(ids, lens)
        return memory.reshape(ids.shape[0], ids.shape[1], -1), lens

    def _encode_ids(self, ids, lens):
        B, S = ids.shape
        x = self._embed(ids, self.src_embed, self.enc_pos, self.enc_emb_norm)
        ctx = np.empty_like(x)
        for layer in self.encoder_layers:
            def attn_body(h, residual, layer=layer):
                self._self_attention(layer.attn, h, B, S, lens, False, ctx)
                return layer.attn.out(ctx, residual=residual, out=residual)
            x = _sublayer(self.pre_norm, layer.attn_norm, x, attn_body)
            x = _sublayer(self.pre_norm, layer.ffn_norm, x, layer.ffn)
        if self.enc_final is not None:
            x = self.enc_final(x)
        return x

    # ------------------------------------------------------------------ decoder
    def cross_kv(self, memory, B, S):
        """Per decoder layer, the cross-attention keys and values of the encoder output, computed once
        per source and stored head-major, (2, B, heads, S, head_dim): each head's keys are then
        contiguous for the decode steps that read them again and again."""
        mem2 = memory.reshape(-1, memory.shape[-1])
        out = []
        for layer in self.decoder_layers:
            kv = layer.cross_attn.kv(mem2).reshape(B, S, 2, self.heads, self.head_dim)
            out.append(np.ascontiguousarray(kv.transpose(2, 0, 3, 1, 4)))
        return out

    def _cross_attention(self, attn, h, kv, B, T, lens, out):
        q = attn.q(h)
        qv = attn.heads_view(q, B, T, 0)
        # (B, heads, S, head_dim) -> the (B, S, heads, head_dim) view the kernel takes
        K.attention(qv, kv[0].transpose(0, 2, 1, 3), kv[1].transpose(0, 2, 1, 3),
                    out.reshape(B, T, attn.heads, attn.head_dim), kv_lengths=lens)
        return out

    def forward(self, src, tgt, src_lengths=None):
        """Teacher-forced logits (B, T, tgt_vocab) for target prefixes tgt (B, T) that start with the decoder start id."""
        ids, lens = self.prepare_source(src, src_lengths)
        tgt = np.asarray(tgt)
        if tgt.ndim != 2 or tgt.shape[0] != ids.shape[0] or tgt.shape[1] == 0:
            raise ValueError(f"tgt must be a (batch={ids.shape[0]}, T >= 1) array of ids, got shape {tgt.shape}")
        if not np.issubdtype(tgt.dtype, np.integer):
            raise TypeError(f"tgt must hold integer token ids, got dtype {tgt.dtype}")
        self._check_ids(list(tgt), self.config.tgt_vocab_size, "target")
        B, T = tgt.shape
        if self.dec_pos is not None and T > self.max_positions:
            raise ValueError(f"target has {T} tokens, more than the model's {self.max_positions} positions")
        S = ids.shape[1]
        memory = self._encode_ids(ids, lens)
        cross = self.cross_kv(memory, B, S)
        x = self._embed(tgt.astype(np.int32), self.tgt_embed, self.dec_pos, self.dec_emb_norm)
        ctx = np.empty_like(x)
        full = np.full(B, T, dtype=np.int32)
        for layer, kv in zip(self.decoder_layers, cross):
            def self_body(h, residual, layer=layer):
                self._self_attention(layer.self_attn, h, B, T, full, True, ctx)
                return layer.self_attn.out(ctx, residual=residual, out=residual)

            def cross_body(h, residual, layer=layer, kv=kv):
                self._cross_attention(layer.cross_attn, h, kv, B, T, lens, ctx)
                return layer.cross_attn.out(ctx, residual=residual, out=residual)
            x = _sublayer(self.pre_norm, layer.self_norm, x, self_body)
            x = _sublayer(self.pre_norm, layer.cross_norm, x, cross_body)
            x = _sublayer(self.pre_norm, layer.ffn_norm, x, layer.ffn)
        if self.dec_final is not None:
            x = self.dec_final(x)
        return self.output(x).reshape(B, T, -1)

    # ------------------------------------------------------------------ incremental decoding
    def start_decoding(self, src, max_steps, lengths=None):
        """Encode the sources and preallocate the caches for up to max_steps decoder positions."""
        from .decoding import DecoderState
        ids, lens = self.prepare_source(src, lengths)
        if self.dec_pos is not None and max_steps > self.max_positions:
            raise ValueError(f"cannot decode {max_steps} positions: the model has {self.max_positions}")
        memory = self._encode_ids(ids, lens)
        B, S = ids.shape
        return DecoderState(self, B, S, lens, self.cross_kv(memory, B, S), max_steps)

    def decode_step(self, state, tokens):
        """Feed one token per sequence (B,) at position state.step; returns logits (B, tgt_vocab)."""
        B = state.batch
        t = state.step
        if t >= state.max_steps:
            raise ValueError(f"decoder state is full: {state.max_steps} steps")
        x = K.embedding(tokens, self.tgt_embed, self.embed_scale, out=state.x)
        if self.dec_pos is not None:
            x += self.dec_pos[t]
        if self.dec_emb_norm is not None:
            x = self.dec_emb_norm(x, out=x)
        ctx = state.ctx
        n_keys = t + 1
        for li, layer in enumerate(self.decoder_layers):
            kc, vc = state.self_k[li], state.self_v[li]

            def self_body(h, residual, layer=layer, kc=kc, vc=vc):
                attn = layer.self_attn
                qkv = attn.qkv(h, out=state.qkv)
                d = attn.d_model
                # cache layout (B, H, max_steps, head_dim): each head's keys are contiguous
                kc[:, :, t, :] = qkv[:, d:2 * d].reshape(B, attn.heads, attn.head_dim)
                vc[:, :, t, :] = qkv[:, 2 * d:].reshape(B, attn.heads, attn.head_dim)
                q = qkv[:, :d].reshape(B, 1, attn.heads, attn.head_dim)
                K.attention(q, kc[:, :, :n_keys].transpose(0, 2, 1, 3), vc[:, :, :n_keys].transpose(0, 2, 1, 3),
                            ctx.reshape(B, 1, attn.heads, attn.head_dim), scratch=state.scratch)
                return attn.out(ctx, residual=residual, out=residual)

            def cross_body(h, residual, layer=layer, kv=state.cross[li]):
                self._cross_attention(layer.cross_attn, h, kv, B, 1, state.src_lengths, ctx)
                return layer.cross_attn.out(ctx, residual=residual, out=residual)
            x = _sublayer(self.pre_norm, layer.self_norm, x, self_body)
            x = _sublayer(self.pre_norm, layer.cross_norm, x, cross_body)
            x = _sublayer(self.pre_norm, layer.ffn_norm, x, layer.ffn)
        if self.dec_final is not None:
            x = self.dec_final(x)
        state.step += 1
        return self.output(x, out=state.logits)

    def generate(self, src, max_new_tokens, min_new_tokens=0, return_scores=False, lengths=None):
        """Greedy decoding. Returns a list of int64 arrays (tokens after the decoder start, EOS included
        when produced); with return_scores=True also a list of per-token log-probabilities."""
        from .decoding import greedy
        return greedy(self, src, max_new_tokens, min_new_tokens, return_scores, lengths)

    def translate(self, texts, max_new_tokens=None, batch_size=None):
        """Text in, text out, for models that ship a vocabulary (see pytransformer.text)."""
        from .text import translate
        return translate(self, texts, max_new_tokens=max_new_tokens, batch_size=batch_size)

    @property
    def num_parameters(self):
        return self.config.num_parameters() if hasattr(self.config, "num_parameters") else None
