"""pytransformer.model - the encoder-decoder Transformer: weights packed once, layers as calls into the kernels.

Layering: _kernels (checked C calls) -> this module (layers, encoder, decoder step) -> decoding.py
(the greedy loop). Activations are 2-D float32 arrays of shape (batch * seq, d_model); attention
sees them as (batch, seq, heads, head_dim) strided views, so no transposes are copied.
"""
import math
from collections import namedtuple

import numpy as np

from . import _kernels as K
from .config import ModelConfig
from .errors import WeightsError
from .safetensors import release_pages

_NORM_RMS = "rms_norm"


def _own(a):
    """A float32 C-contiguous copy that owns its memory: a loaded model must not keep views into
    the memory-mapped file, which may be truncated or rewritten in place while the model runs."""
    copy = np.array(a, dtype=np.float32, order="C", copy=True)
    release_pages(a)
    return copy


def _packed_bytes_bound(tensors):
    """An upper bound of the bytes the model's packed weights take in a K.WeightArena: every 2-D
    tensor counted as a Linear weight (out, in) packed in whole 16-column panels, plus the
    alignment of its piece. (Tables that are not packed are counted too: address space only.)"""
    pw = K.PANEL_WIDTH
    shapes = [np.shape(v) for v in tensors.values()]
    return sum(-(-s[0] // pw) * pw * s[1] * 4 + K.ARENA_ALIGN for s in shapes if len(s) == 2)


class Linear:
    """y = x W^T + b with W packed once at load; optional fused activation and residual."""

    __slots__ = ("packed", "bias", "out_features")

    def __init__(self, weight, bias=None, arena=None):
        packed = K.pack(weight, transpose=True, arena=arena)
        release_pages(weight)   # the packed copy is all that is used from now on
        self._init(packed, bias)

    def _init(self, packed, bias):
        self.packed = packed
        self.bias = None if bias is None else _own(bias)
        self.out_features = packed.n

    @classmethod
    def fused(cls, weights, biases, arena=None):
        """One GEMM for several projections of the same input (q/k/v): weights stacked on the output axis.
        Packed part by part when every part but the last fills whole panels (no concatenated copy)."""
        ws = [np.asarray(x, dtype=np.float32) for x in weights]
        if all(w.ndim == 2 and w.shape[0] % K.PANEL_WIDTH == 0 for w in ws[:-1]):
            packed = K.pack_stacked(ws, arena=arena)
        else:
            packed = K.pack(np.concatenate(ws, axis=0), transpose=True, arena=arena)
        for x in weights:
            release_pages(x)
        self = cls.__new__(cls)
        self._init(packed, None if biases[0] is None else np.concatenate(biases))
        return self

    def __call__(self, x, act=0, residual=None, out=None):
        return K.gemm(x, self.packed, self.bias, residual, act, out)


class Norm:
    """Layer norm or RMS norm with the fused residual add of the kernels."""

    __slots__ = ("weight", "bias", "eps", "rms")

    def __init__(self, weight, bias, eps, rms):
        self.weight = _own(weight)
        self.bias = None if bias is None else _own(bias)
        self.eps = float(eps)
        self.rms = rms

    def __call__(self, x, residual=None, sum_out=None, out=None):
        return K.norm(x, self.weight, self.bias, self.eps, self.rms, residual, sum_out, out)


class Attention:
    """Multi-head attention projections; self-attention fuses q/k/v, cross-attention fuses k/v.

    The heads together are `inner` = heads x head_dim wide, which is d_model except in models such
    as flan-T5-small (6 heads of 64 on a 512-wide stream)."""

    __slots__ = ("q", "kv", "qkv", "out", "heads", "head_dim", "inner", "scale")

    def __init__(self, t, prefix, cfg, cross, arena=None):
        self.heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.inner = cfg.attention_dim
        # None: the kernel's 1/sqrt(head_dim). T5 folds that factor into its weights instead.
        self.scale = None if cfg.scale_attention else 1.0
        b = (lambda n: t[prefix + n + ".bias"]) if cfg.attention_bias else (lambda n: None)
        w = lambda n: t[prefix + n + ".weight"]
        if cross:
            self.q = Linear(w("q_proj"), b("q_proj"), arena)
            self.kv = Linear.fused([w("k_proj"), w("v_proj")], [b("k_proj"), b("v_proj")], arena)
            self.qkv = None
        else:
            self.qkv = Linear.fused([w("q_proj"), w("k_proj"), w("v_proj")],
                                    [b("q_proj"), b("k_proj"), b("v_proj")], arena)
            self.q = self.kv = None
        self.out = Linear(w("out_proj"), b("out_proj"), arena)

    def heads_view(self, x, batch, seq, index):
        """Projection output (batch*seq, n*d), contiguous -> the (batch, seq, heads, head_dim) view of
        its index-th d-wide block (q, k or v); strided, never copied."""
        return x.reshape(batch, seq, -1, self.heads, self.head_dim)[:, :, index]


class FeedForward:
    """fc2(act(fc1 x)), or with ffn_gated (T5 v1.1) fc2(act(fc1 x) * fc1_linear x)."""

    __slots__ = ("fc1", "fc2", "act", "gated_width")

    def __init__(self, t, prefix, cfg, arena=None):
        b = (lambda n: t[prefix + n + ".bias"]) if cfg.ffn_bias else (lambda n: None)
        if cfg.ffn_gated:
            # Both input projections read the same x: one GEMM, outputs side by side.
            self.fc1 = Linear.fused([t[prefix + "fc1.weight"], t[prefix + "fc1_linear.weight"]],
                                    [b("fc1"), b("fc1_linear")], arena)
            self.gated_width = cfg.ffn_dim
        else:
            self.fc1 = Linear(t[prefix + "fc1.weight"], b("fc1"), arena)
            self.gated_width = 0
        self.fc2 = Linear(t[prefix + "fc2.weight"], b("fc2"), arena)
        self.act = K.ACTIVATIONS[cfg.activation]

    def __call__(self, x, residual):
        """residual + FFN(x); the residual add is fused into the second GEMM (in place)."""
        f = self.gated_width
        if not f:
            return self.fc2(self.fc1(x, self.act), residual=residual, out=residual)
        both = self.fc1(x)                       # (rows, 2f): [fc1 x | fc1_linear x]
        gate = both[:, :f]                       # strided view, activated and multiplied in place
        K.bias_activation(gate, None, self.act, out=gate)
        np.multiply(gate, both[:, f:], out=gate)
        return self.fc2(gate, residual=residual, out=residual)


def _norm(t, name, cfg):
    rms = cfg.norm_type == _NORM_RMS
    return Norm(t[name + ".weight"], None if rms else t[name + ".bias"], cfg.layer_norm_eps, rms)


class EncoderLayer:
    __slots__ = ("attn", "attn_norm", "ffn", "ffn_norm")

    def __init__(self, t, prefix, cfg, arena=None):
        self.attn = Attention(t, prefix + "self_attn.", cfg, cross=False, arena=arena)
        self.attn_norm = _norm(t, prefix + "self_attn_norm", cfg)
        self.ffn = FeedForward(t, prefix + "ffn.", cfg, arena)
        self.ffn_norm = _norm(t, prefix + "ffn_norm", cfg)


class DecoderLayer:
    __slots__ = ("self_attn", "self_norm", "cross_attn", "cross_norm", "ffn", "ffn_norm")

    def __init__(self, t, prefix, cfg, arena=None):
        self.self_attn = Attention(t, prefix + "self_attn.", cfg, cross=False, arena=arena)
        self.self_norm = _norm(t, prefix + "self_attn_norm", cfg)
        self.cross_attn = Attention(t, prefix + "cross_attn.", cfg, cross=True, arena=arena)
        self.cross_norm = _norm(t, prefix + "cross_attn_norm", cfg)
        self.ffn = FeedForward(t, prefix + "ffn.", cfg, arena)
        self.ffn_norm = _norm(t, prefix + "ffn_norm", cfg)


def sinusoidal_table(n, d, offset, layout):
    """(n, d) float32 position table for positions offset .. offset+n-1 (see weights/README.md).
    "interleaved" and "halves" come from the C kernel; "fairseq" (M2M100, NLLB: sin half then cos
    half with frequencies 10000^(-j/(d/2-1))) is computed here in float64 and rounded once."""
    if layout != "fairseq":
        return K.sinusoidal_positions(n, d, offset, layout)
    half = d // 2
    # d/2 == 1 would divide by zero; fairseq then has the single frequency 1 (its exp(-inf*0) = nan
    # is never produced because such models do not exist, but keep the table finite).
    step = math.log(10000.0) / (half - 1) if half > 1 else 0.0
    freqs = np.exp(np.arange(half, dtype=np.float64) * -step)
    angles = np.arange(offset, offset + n, dtype=np.float64)[:, None] * freqs[None, :]
    return np.ascontiguousarray(np.concatenate([np.sin(angles), np.cos(angles)], axis=1), dtype=np.float32)


class SinusoidalPositions:
    """Rows of a sinusoidal table, computed when first needed and extended (doubling) as longer
    sequences arrive: max_positions is a limit, not an allocation. Every row is computed on its
    own, so a grown table holds the same values. Indexed like the table: [:n] or [t]."""

    def __init__(self, limit, d, offset, layout):
        self.limit, self.d, self.offset, self.layout = limit, d, offset, layout
        self.table = np.empty((0, d), dtype=np.float32)

    def _cover(self, n):
        table = self.table
        if n > table.shape[0]:
            rows = min(self.limit, max(n, 2 * table.shape[0], 64))
            table = self.table = sinusoidal_table(rows, self.d, self.offset, self.layout)
        return table

    def __getitem__(self, key):
        if isinstance(key, slice):
            return self._cover(key.stop if key.stop is not None else self.limit)[key]
        return self._cover(int(key) + 1)[key]


def relative_position_buckets(rel, bidirectional, num_buckets, max_distance):
    """T5's bucket of each relative position rel = key - query (int array): exact buckets for small
    distances, logarithmic ones up to max_distance; the encoder (bidirectional) spends half the
    buckets on keys after the query, the causal decoder only sees keys at or before it.

    The logarithm is taken in float64 and rounded to float32, then divided and multiplied in
    float32 as the reference does, so bucket edges that fall on whole numbers (rel = 16, 32, 64
    for the usual 32 buckets and distance 128) truncate the same way."""
    rel = np.asarray(rel, dtype=np.int64)
    buckets = np.zeros(rel.shape, dtype=np.int64)
    if bidirectional:
        num_buckets //= 2
        buckets += (rel > 0) * num_buckets
        dist = np.abs(rel)
    else:
        dist = -np.minimum(rel, 0)
    max_exact = num_buckets // 2
    ratio = np.maximum(dist, max_exact).astype(np.float32) / np.float32(max_exact)
    log_ratio = np.log(ratio.astype(np.float64)).astype(np.float32)
    scaled = log_ratio / np.float32(math.log(max_distance / max_exact)) * np.float32(num_buckets - max_exact)
    large = np.minimum(max_exact + scaled.astype(np.int64), num_buckets - 1)
    return buckets + np.where(dist < max_exact, dist, large)


def _key_minus_query(n):
    """(n, n) relative positions key - query of a sequence attending to itself."""
    pos = np.arange(n)
    return pos[None, :] - pos[:, None]


class _PackedRows:
    """The token rows of a padded (B, S) batch, for running position-wise work on them alone.

    Everything in an encoder layer but attention treats rows independently, and the kernels give a
    row the same bits whatever rows are around it (csrc/pt_gemm.h), so dropping the padding rows
    changes no token row's result: it only skips work. Attention runs per sequence on its rows, and
    the cross-attention keys and values are spread into the padded layout the decoder reads. What
    that costs is weighed against the padding in PACK_MIN_PAD_SHARE."""

    PACK_MIN_PAD_SHARE = 0.05

    __slots__ = ("rows", "positions", "total", "segments")

    def __init__(self, lens, S):
        self.total = lens.size * S
        mask = np.arange(S)[None, :] < lens[:, None]
        self.rows = np.flatnonzero(mask)                       # flat (b*S + t) index of each token row
        self.positions = (self.rows % S).astype(np.intp)       # its position in its sequence
        ends = np.cumsum(lens)                                 # sequence b's rows: [ends[b]-lens[b], ends[b])
        self.segments = [(b * S, int(e - n), int(n)) for b, (e, n) in enumerate(zip(ends, lens))]

    @classmethod
    def of(cls, lens, S):
        """The token rows for source lengths lens (B,) padded to S, or None when too few rows are padding."""
        lens = np.asarray(lens)
        if lens.size * S - int(lens.sum()) < cls.PACK_MIN_PAD_SHARE * lens.size * S:
            return None
        return cls(lens, S)

    def scatter(self, x, out):
        """Token rows x (n, d) into their padded places in out (B*S, d); padding rows untouched."""
        for dst, src, n in self.segments:
            out[dst:dst + n] = x[src:src + n]
        return out

    def gather(self, padded, out):
        """The token rows of padded (B*S, d) into out (n, d)."""
        for src, dst, n in self.segments:
            out[dst:dst + n] = padded[src:src + n]
        return out

    def unpack(self, x):
        """(n, d) rows -> (B*S, d) with zero padding rows."""
        return self.scatter(x, np.zeros((self.total, x.shape[1]), dtype=x.dtype))


def _sublayer(pre_norm, norm, x, body):
    """Residual wiring around one sub-layer; `body(h, residual)` returns residual + f(h) (fused in its last GEMM).

    post-norm (the paper): x = norm(x + f(x));  pre-norm: x = x + f(norm(x))."""
    if pre_norm:
        return body(norm(x), x)           # body adds f(norm(x)) into x in place
    # f has consumed x (its first GEMM reads it) before the last GEMM writes the sum over it.
    return norm(body(x, x), out=x)


# The views of a decoder state's buffers that every decode step uses (Model._step_views): made once
# per state, unpacked by position in decode_hidden's loop, named here.
_StepViews = namedtuple("_StepViews", "ctx ctx4 qkv k_new v_new q_self qbuf q_cross hbuf lens layers")
_LayerViews = namedtuple("_LayerViews", "k_cache v_cache k_all v_all k_cross v_cross")


class Model:
    """A loaded encoder-decoder model. Build with pytransformer.load(path)."""

    # Set by pytransformer.load when the model directory ships a vocabulary or tokenizer: an object
    # with encode(text) -> list of source ids and decode(ids) -> text.
    tokenizer = None
    # Why there is no tokenizer although the directory has tokenizer files (e.g. "install the
    # `tokenizers` package"): translate() raises it instead of a generic message.
    tokenizer_error = None

    # Generation rules that come with the model (Hugging Face generation_config.json), applied by
    # constrain_logits at every greedy step: the first generated token is forced to forced_bos_id,
    # the last one allowed by max_new_tokens to forced_eos_id, and suppressed_ids are never produced.
    forced_bos_id = None
    forced_eos_id = None
    suppressed_ids = None

    # Output projections at least this large (float32 bytes) get an 8-bit screen at load, which
    # makes greedy steps at small batch sizes read about a quarter as many bytes for the projection
    # (same tokens; see pytransformer/screen.py). Smaller ones are cheap to read in full.
    SCREEN_MIN_BYTES = 4 << 20

    def __init__(self, config: ModelConfig, tensors: dict, path=None, output_screen=True, huge_pages=True):
        self.config = cfg = config
        self.path = path
        self.huge_pages = bool(huge_pages)   # see pytransformer.load
        t = tensors
        self.pre_norm = cfg.norm_placement == "pre"
        self.embed_scale = math.sqrt(cfg.d_model) if cfg.scale_embeddings else 1.0
        self.heads = cfg.num_heads
        self.head_dim = cfg.head_dim
        self.attention_dim = cfg.attention_dim
        try:
            self._build(t, cfg, output_screen)
        except KeyError as e:  # the loader already checked names; this guards direct construction
            raise WeightsError(f"missing tensor {e.args[0]!r}") from None
        # Packing frees many temporaries of a few MB (stacked q/k/v weights, copies); once glibc's
        # malloc has seen one such block freed it serves the next ones from the heap and keeps
        # them. Handing that back to the OS saves 17 MB resident for the opus-mt-size model.
        K.release_free_heap()

    # ------------------------------------------------------------------ construction
    def _build(self, t, cfg, output_screen):
        src_table = t["src_embedding.weight"]
        tgt_table = src_table if cfg.shared_embeddings else t["tgt_embedding.weight"]
        # With huge_pages, the decoder layers' packed weights in an arena on huge pages (see
        # K.WeightArena): a decode step streams them all, and on 4 KiB pages that is a TLB miss every
        # 4 KiB. Only those: the encoder's GEMMs reuse every panel many times (0.99x measured), the
        # float32 output projection is read a few columns at a time behind the screen, and each huge
        # page costs its first touch (see pytransformer.load). None for small models.
        self.weight_arena = arena = K.weight_arena(
            _packed_bytes_bound({n: v for n, v in t.items() if n.startswith("decoder.layers.")})) \
            if self.huge_pages else None
        # ... and the encoder's and the output projection's in an arena kept off huge pages: they do
        # not gain from them, and numpy's own huge-page advice for large arrays made loading slower
        # where a huge page's first touch is expensive (see K.WeightArena).
        out_weight = tgt_table if cfg.tie_output else t["output.weight"]
        self.small_page_arena = small = K.weight_arena(
            _packed_bytes_bound({n: v for n, v in t.items() if n.startswith("encoder.layers.")})
            + _packed_bytes_bound({"output": out_weight}), huge=False) if self.huge_pages else None
        # The output projection is a GEMM with B = table^T. When it is tied, the packed copy also
        # serves the target-embedding gathers, so the table is held once.
        self.output = Linear(out_weight, t["output.bias"] if cfg.output_bias else None, small)
        self.tgt_embed = self.output.packed if cfg.tie_output else _own(tgt_table)
        self.output_screen = None
        if output_screen and self.output.packed.nbytes >= self.SCREEN_MIN_BYTES:
            self.set_output_screen(True)
        if cfg.shared_embeddings and cfg.tie_output:
            self.src_embed = self.tgt_embed
        else:
            self.src_embed = _own(src_table)

        self.max_positions = cfg.max_positions
        if cfg.positional_encoding == "learned":
            off = cfg.position_offset
            self.enc_pos = _own(t["encoder.positions.weight"][off:])
            self.dec_pos = _own(t["decoder.positions.weight"][off:])
        elif cfg.positional_encoding == "sinusoidal":
            self.enc_pos = self.dec_pos = SinusoidalPositions(cfg.max_positions, cfg.d_model,
                                                              cfg.position_offset, cfg.sinusoidal_layout)
        else:
            self.enc_pos = self.dec_pos = None
        # T5: a learned bias per (relative-position bucket, head), shared by all layers of a stack.
        if cfg.positional_encoding == "relative":
            self.enc_rel = _own(t["encoder.relative_attention_bias.weight"].T)   # (heads, buckets)
            self.dec_rel = _own(t["decoder.relative_attention_bias.weight"].T)
        else:
            self.enc_rel = self.dec_rel = None
        self.output_scale = None if cfg.output_scale == 1.0 else np.float32(cfg.output_scale)

        emb_norm = cfg.embedding_norm
        self.enc_emb_norm = _norm(t, "encoder.embedding_norm", cfg) if emb_norm else None
        self.dec_emb_norm = _norm(t, "decoder.embedding_norm", cfg) if emb_norm else None
        self.encoder_layers = [EncoderLayer(t, f"encoder.layers.{i}.", cfg, small) for i in range(cfg.encoder_layers)]
        self.decoder_layers = [DecoderLayer(t, f"decoder.layers.{i}.", cfg, arena) for i in range(cfg.decoder_layers)]
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

    def _embed_rows(self, flat_ids, positions_of_rows, table, positions, emb_norm):
        """_embed for selected tokens: flat_ids (n,) at sequence positions positions_of_rows (n,) -> (n, d),
        positions a (>= max position + 1, d) array or None; each row gets exactly the operations _embed
        gives it."""
        x = K.embedding(flat_ids, table, self.embed_scale)
        if positions is not None:
            x += positions[positions_of_rows]
        if emb_norm is not None:
            x = emb_norm(x, out=x)
        return x

    def _self_attention(self, attn, x, B, T, lengths, causal, out, bias=None, packed=None):
        """Attention context (B*T, heads*head_dim) for the normalised input x; bias (heads, T, T) or None.
        With packed (a _PackedRows of the (B, T) batch), x and the context hold only its token rows,
        and each sequence is attended on its own, in place (the kernel's result for a row does not
        depend on the batch around it)."""
        qkv = attn.qkv(x)
        if packed is None:
            q = attn.heads_view(qkv, B, T, 0)
            k = attn.heads_view(qkv, B, T, 1)
            v = attn.heads_view(qkv, B, T, 2)
            K.attention(q, k, v, out.reshape(B, T, attn.heads, attn.head_dim), kv_lengths=lengths,
                        bias=bias, causal=causal, scale=attn.scale)
            return out
        for _, first, n in packed.segments:
            seq = qkv[first:first + n]          # one sequence's q/k/v rows
            K.attention(attn.heads_view(seq, 1, n, 0), attn.heads_view(seq, 1, n, 1), attn.heads_view(seq, 1, n, 2),
                        out[first:first + n].reshape(1, n, attn.heads, attn.head_dim),
                        bias=None if bias is None else bias[:, :n, :n], causal=causal, scale=attn.scale)
        return out

    def _relative_bias(self, table, rel, bidirectional):
        """Score bias of T5's bucketed relative positions rel = key - query (any shape):
        (heads, *rel.shape), or None without relative positions."""
        if table is None:
            return None
        cfg = self.config
        buckets = relative_position_buckets(rel, bidirectional, cfg.relative_attention_num_buckets,
                                            cfg.relative_attention_max_distance)
        return np.ascontiguousarray(table[:, buckets])

    def encode(self, src, lengths=None):
        """Encoder output (B, S, d) float32 and source lengths (B,) for token-id sequences. Rows past a
        sequence's length are zero."""
        ids, lens = self.prepare_source(src, lengths)
        memory = self._encode_ids(ids, lens)
        return memory.reshape(ids.shape[0], ids.shape[1], -1), lens

    def _encode_ids(self, ids, lens):
        """Encoder output (B*S, d) for padded ids (B, S); padding rows are zero."""
        B, S = ids.shape
        x, packed = self._encode_tokens(ids, lens)
        if packed is not None:
            return packed.unpack(x)
        x.reshape(B, S, -1)[np.arange(S)[None, :] >= lens[:, None]] = 0.0
        return x

    def _encode_tokens(self, ids, lens):
        """The encoder's output rows for padded ids (B, S) and their _PackedRows: when enough of the
        batch is padding, only the token rows go through the layers and come back (packed is then
        not None); otherwise all B*S rows, padding rows holding whatever the layers made of them."""
        B, S = ids.shape
        packed = _PackedRows.of(lens, S)
        if packed is None:
            x = self._embed(ids, self.src_embed, self.enc_pos, self.enc_emb_norm)
            n = B * S
        else:
            x = self._embed_rows(ids.reshape(-1)[packed.rows], packed.positions, self.src_embed,
                                 None if self.enc_pos is None else self.enc_pos[:S], self.enc_emb_norm)
            n = packed.rows.size
        ctx = np.empty((n, self.attention_dim), dtype=np.float32)
        bias = self._relative_bias(self.enc_rel, _key_minus_query(S), True)  # once, for every layer
        for layer in self.encoder_layers:
            def attn_body(h, residual, layer=layer):
                self._self_attention(layer.attn, h, B, S, lens, False, ctx, bias, packed)
                return layer.attn.out(ctx, residual=residual, out=residual)
            x = _sublayer(self.pre_norm, layer.attn_norm, x, attn_body)
            x = _sublayer(self.pre_norm, layer.ffn_norm, x, layer.ffn)
        if self.enc_final is not None:
            x = self.enc_final(x)
        return x, packed

    # ------------------------------------------------------------------ decoder
    def cross_kv(self, memory, B, S, lens=None):
        """Per decoder layer, the cross-attention keys and values of the encoder output, computed once
        per source and stored head-major, (2, B, heads, S, head_dim): each head's keys are then
        contiguous for the decode steps that read them again and again. With the source lengths
        (B,), padding rows, which attention never reads, are skipped when there are enough of them
        (their keys and values are zero then)."""
        mem2 = memory.reshape(-1, memory.shape[-1])
        packed = None if lens is None else _PackedRows.of(lens, S)
        if packed is not None:
            mem2 = packed.gather(mem2, np.empty((packed.rows.size, mem2.shape[1]), mem2.dtype))
        return self._cross_kv_rows(mem2, packed, B, S)

    def _cross_kv_rows(self, rows, packed, B, S):
        """cross_kv from the encoder's output rows: all B*S of them (packed None) or the token rows
        of packed, as _encode_tokens returns them."""
        out = []
        for layer in self.decoder_layers:
            kv = layer.cross_attn.kv(rows)
            if packed is None:
                out.append(np.ascontiguousarray(kv.reshape(B, S, 2, self.heads, self.head_dim).transpose(2, 0, 3, 1, 4)))
                continue
            heads = np.zeros((2, B, self.heads, S, self.head_dim), dtype=np.float32)
            for b, (_, first, n) in enumerate(packed.segments):
                heads[:, b, :, :n] = kv[first:first + n].reshape(n, 2, self.heads, self.head_dim).transpose(1, 2, 0, 3)
            out.append(heads)
        return out

    def _cross_attention(self, attn, h, kv, B, T, lens, out):
        q = attn.q(h)
        qv = attn.heads_view(q, B, T, 0)
        # (B, heads, S, head_dim) -> the (B, S, heads, head_dim) view the kernel takes
        K.attention(qv, kv[0].transpose(0, 2, 1, 3), kv[1].transpose(0, 2, 1, 3),
                    out.reshape(B, T, attn.heads, attn.head_dim), kv_lengths=lens, scale=attn.scale)
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
        cross = self._cross_kv_rows(*self._encode_tokens(ids, lens), B, S)
        x = self._embed(tgt.astype(np.int32), self.tgt_embed, self.dec_pos, self.dec_emb_norm)
        ctx = np.empty((B * T, self.attention_dim), dtype=np.float32)
        full = np.full(B, T, dtype=np.int32)
        bias = self._relative_bias(self.dec_rel, _key_minus_query(T), False)
        for layer, kv in zip(self.decoder_layers, cross):
            def self_body(h, residual, layer=layer):
                self._self_attention(layer.self_attn, h, B, T, full, True, ctx, bias)
                return layer.self_attn.out(ctx, residual=residual, out=residual)

            def cross_body(h, residual, layer=layer, kv=kv):
                self._cross_attention(layer.cross_attn, h, kv, B, T, lens, ctx)
                return layer.cross_attn.out(ctx, residual=residual, out=residual)
            x = _sublayer(self.pre_norm, layer.self_norm, x, self_body)
            x = _sublayer(self.pre_norm, layer.cross_norm, x, cross_body)
            x = _sublayer(self.pre_norm, layer.ffn_norm, x, layer.ffn)
        return self._logits(x).reshape(B, T, -1)

    def _final_hidden(self, x):
        """Final decoder norm and output scale (T5's d_model^-0.5, applied before the GEMM as there)
        of the decoder's residual stream x (in place): what the output projection reads."""
        if self.dec_final is not None:
            x = self.dec_final(x, out=x)
        if self.output_scale is not None:
            x *= self.output_scale
        return x

    def _logits(self, x, out=None):
        """Output projection of the decoder's residual stream x (consumed)."""
        return self.output(self._final_hidden(x), out=out)

    def set_output_screen(self, enabled):
        """Screen the greedy argmax with an 8-bit copy of the output projection (True), or always
        compute the full float32 logits (False, and frees the copy). Tokens are identical either way;
        the screen costs a quarter of the projection's float32 bytes in memory. Returns whether a screen is
        in use: a projection with non-finite weights cannot be screened."""
        from .screen import OutputScreen
        self.output_screen = OutputScreen.build(self.output, self.huge_pages) if enabled else None
        return self.output_screen is not None

    # ------------------------------------------------------------------ incremental decoding
    def start_decoding(self, src, max_steps, lengths=None):
        """Encode the sources and preallocate the caches for up to max_steps decoder positions."""
        from .decoding import DecoderState
        ids, lens = self.prepare_source(src, lengths)
        if self.dec_pos is not None and max_steps > self.max_positions:
            raise ValueError(f"cannot decode {max_steps} positions: the model has {self.max_positions}")
        B, S = ids.shape
        state = DecoderState(self, B, S, lens, self._cross_kv_rows(*self._encode_tokens(ids, lens), B, S), max_steps)
        if self.dec_rel is not None:
            # (heads, max_steps) table over relative positions -(max_steps-1) .. 0: query t's bias
            # over keys 0..t is its last t+1 columns
            state.rel_bias = self._relative_bias(self.dec_rel, np.arange(1 - max_steps, 1), False)
        return state

    def decode_step(self, state, tokens):
        """Feed one token per sequence (B,) at position state.step; returns logits (B, tgt_vocab)."""
        return self.output(self.decode_hidden(state, tokens), out=state.logits)

    def decode_hidden(self, state, tokens):
        """decode_step up to the output projection: the (B, d_model) rows it would multiply
        (final norm and output scale applied), in a buffer of the state."""
        t = state.step
        if t >= state.max_steps:
            raise ValueError(f"decoder state is full: {state.max_steps} steps")
        x = K.embedding(tokens, self.tgt_embed, self.embed_scale, out=state.x)
        if self.dec_pos is not None:
            x += self.dec_pos[t]
        if self.dec_emb_norm is not None:
            x = self.dec_emb_norm(x, out=x)
        n_keys = t + 1
        # (heads, 1, t+1) view over the precomputed relative-position table: no copy per step
        bias = None if self.dec_rel is None else state.rel_bias[:, None, state.max_steps - n_keys:]
        sv = state.step_views
        if sv is None:
            sv = state.step_views = self._step_views(state)
        ctx, ctx4, qkv, k_new, v_new, q_self, qbuf, q_cross, hbuf, lens, layer_views = sv
        scratch = state.scratch
        pre = self.pre_norm
        # The sub-layers of _sublayer, written out: pre-norm x = x + f(norm(x)), post-norm
        # x = norm(x + f(x)); every f adds its result into x in its last GEMM.
        for layer, (kc, vc, k_all, v_all, k_cross, v_cross) in zip(self.decoder_layers, layer_views):
            attn = layer.self_attn
            h = layer.self_norm(x, out=hbuf) if pre else x
            attn.qkv(h, out=qkv)
            # cache layout (B, H, max_steps, head_dim): each head's keys are contiguous
            kc[:, :, t] = k_new
            vc[:, :, t] = v_new
            K.attention(q_self, k_all[:, :n_keys], v_all[:, :n_keys], ctx4, bias=bias, scale=attn.scale,
                        scratch=scratch)
            attn.out(ctx, residual=x, out=x)
            if not pre:
                layer.self_norm(x, out=x)
            attn = layer.cross_attn
            h = layer.cross_norm(x, out=hbuf) if pre else x
            attn.q(h, out=qbuf)
            K.attention(q_cross, k_cross, v_cross, ctx4, kv_lengths=lens, scale=attn.scale, scratch=scratch)
            attn.out(ctx, residual=x, out=x)
            if not pre:
                layer.cross_norm(x, out=x)
            if pre:
                layer.ffn(layer.ffn_norm(x, out=hbuf), x)
            else:
                layer.ffn_norm(layer.ffn(x, x), out=x)
        state.step += 1
        return self._final_hidden(x)

    def _step_views(self, state):
        """The _StepViews of a decoder state: its buffers reshaped as the step's kernels take them,
        and per layer the caches, also as (B, max_steps, H, hd), and the cross K/V as (B, S, H, hd)."""
        B, H, hd, a = state.batch, self.heads, self.config.head_dim, self.attention_dim
        qkv, ctx = state.qkv, state.ctx
        qbuf = np.empty((B, a), dtype=np.float32)
        layers = []
        for li in range(len(self.decoder_layers)):
            kc, vc, kv = state.self_k[li], state.self_v[li], state.cross[li]
            layers.append(_LayerViews(kc, vc, kc.transpose(0, 2, 1, 3), vc.transpose(0, 2, 1, 3),
                                      kv[0].transpose(0, 2, 1, 3), kv[1].transpose(0, 2, 1, 3)))
        return _StepViews(ctx=ctx, ctx4=ctx.reshape(B, 1, H, hd), qkv=qkv,
                          k_new=qkv[:, a:2 * a].reshape(B, H, hd), v_new=qkv[:, 2 * a:].reshape(B, H, hd),
                          q_self=qkv[:, :a].reshape(B, 1, H, hd), qbuf=qbuf, q_cross=qbuf.reshape(B, 1, H, hd),
                          hbuf=np.empty_like(state.x) if self.pre_norm else None,
                          lens=np.ascontiguousarray(state.src_lengths, dtype=np.int32), layers=layers)

    def forced_token(self, step, max_new_tokens):
        """The token the generation rules force at this step (counted from 0), or None."""
        if step == max_new_tokens - 1 and self.forced_eos_id is not None:
            return self.forced_eos_id
        return self.forced_bos_id if step == 0 else None

    def banned_mask(self, ban_eos):
        """Bool mask over the target vocabulary of the tokens a step may not produce (the suppressed
        ids, and EOS when ban_eos), or None when none are banned."""
        if self.suppressed_ids is None and not ban_eos:
            return None
        mask = np.zeros(self.config.tgt_vocab_size, dtype=bool)
        if self.suppressed_ids is not None:
            mask[self.suppressed_ids] = True
        if ban_eos:
            mask[self.config.eos_id] = True
        return mask

    def constrain_logits(self, logits, step, max_new_tokens):
        """Apply the model's generation rules in place to one step's logits (B, V) before the argmax.

        step counts generated tokens from 0. The decoding loop calls this after its own
        min_new_tokens rule, so a forced token wins over it, as in transformers."""
        if self.suppressed_ids is not None:
            logits[:, self.suppressed_ids] = -np.inf
        forced = self.forced_token(step, max_new_tokens)
        if forced is not None:
            logits.fill(-np.inf)
            logits[:, forced] = 0.0
        return logits

    def generate(self, src, max_new_tokens, min_new_tokens=0, return_scores=False, lengths=None):
        """Greedy decoding. Returns a list of int64 arrays (tokens after the decoder start, EOS included
        when produced); with return_scores=True also a list of per-token log-probabilities."""
        from .decoding import greedy
        return greedy(self, src, max_new_tokens, min_new_tokens, return_scores, lengths)

    def translate(self, texts, max_new_tokens=None, batch_size=None):
        """Text in, text out, for models that ship a vocabulary (see pytransformer.text)."""
        if self.tokenizer is None and self.tokenizer_error:
            raise ImportError(self.tokenizer_error)
        from .text import translate
        return translate(self, texts, max_new_tokens=max_new_tokens, batch_size=batch_size)

    @property
    def num_parameters(self):
        return self.config.num_parameters() if hasattr(self.config, "num_parameters") else None
