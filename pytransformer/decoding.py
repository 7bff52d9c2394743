"""pytransformer.decoding - greedy search over Model.decode_hidden with a preallocated DecoderState.

The loop sees decode_hidden, the output projection and its screen: encoder, caches and layers
are the model's business. Every sequence stops at its own EOS. A finished row keeps its slot (its
outputs ignored) until enough rows have finished; then the unfinished ones move to a smaller state
(DecoderState.keep). Either way each sequence's tokens are bitwise those it gets decoded alone.
"""
import os

import numpy as np

# ---- memory limit for one generate() call
# Caches grow with batch x (source length + steps). A request that would not fit fails up front
# with an error naming the sizes, instead of the process being killed by the OS part-way.


def _default_limit():
    env = os.environ.get("PYTRANSFORMER_MAX_CACHE_BYTES", "").strip()
    if env:
        return int(env)
    try:  # half of physical memory
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 2
    except (ValueError, OSError, AttributeError):
        return 8 << 30


_cache_limit = _default_limit()


def set_cache_limit(nbytes):
    """Largest number of bytes one generate() call may allocate for its caches and work buffers
    (default: half of physical memory, or PYTRANSFORMER_MAX_CACHE_BYTES)."""
    global _cache_limit
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 1:
        raise ValueError(f"cache limit must be a positive number of bytes, got {nbytes!r}")
    _cache_limit = int(nbytes)


def get_cache_limit():
    return _cache_limit


def estimate_bytes(config, batch, src_len, max_steps):
    """Bytes a generate() call allocates: self-attention K/V caches, cross-attention K/V, the
    encoder's activations (about 4 + ffn/d rows of d per token) and the per-step buffers."""
    d, a, L_dec = config.d_model, config.attention_dim, config.decoder_layers
    f32 = 4
    self_kv = 2 * L_dec * batch * max_steps * a * f32
    cross_kv = 2 * L_dec * batch * src_len * a * f32
    encoder = batch * src_len * (3 * d + 3 * a + config.ffn_dim) * f32
    step = batch * (2 * d + 4 * a + config.tgt_vocab_size + config.ffn_dim) * f32
    relative = config.num_heads * (src_len * src_len + max_steps) * f32 \
        if config.positional_encoding == "relative" else 0
    return self_kv + cross_kv + encoder + step + relative


def check_memory(config, batch, src_len, max_steps):
    need = estimate_bytes(config, batch, src_len, max_steps)
    if need > _cache_limit:
        raise MemoryError(
            f"generate() would need about {need / 2**20:.0f} MiB for a batch of {batch} sources of up to "
            f"{src_len} tokens and {max_steps} new tokens, over the limit of {_cache_limit / 2**20:.0f} MiB; "
            f"use smaller batches or fewer new tokens, or raise the limit with "
            f"pytransformer.set_cache_limit() / PYTRANSFORMER_MAX_CACHE_BYTES")


class DecoderState:
    """Everything one generate() call needs, allocated once: self-attention K/V caches
    (layers x (B, heads, max_steps, head_dim)), the cross-attention K/V of the sources, and
    the per-step work buffers."""

    def __init__(self, model, batch, src_len, src_lengths, cross, max_steps):
        cfg = model.config
        d, h = cfg.d_model, cfg.num_heads
        hd, a = cfg.head_dim, cfg.attention_dim   # heads may be narrower or wider than d_model / h
        L = cfg.decoder_layers
        self.batch = batch
        self.src_len = src_len
        self.src_lengths = src_lengths
        self.cross = cross
        self.max_steps = max_steps
        self.step = 0
        self.self_k = np.empty((L, batch, h, max_steps, hd), dtype=np.float32)
        self.self_v = np.empty((L, batch, h, max_steps, hd), dtype=np.float32)
        self.x = np.empty((batch, d), dtype=np.float32)
        self.ctx = np.empty((batch, a), dtype=np.float32)
        self.qkv = np.empty((batch, 3 * a), dtype=np.float32)
        self.logits = np.empty((batch, cfg.tgt_vocab_size), dtype=np.float32)
        self.step_views = None       # made by Model.decode_hidden at the first step
        self.rel_bias = None         # T5's decoder relative-position table, set by Model.start_decoding
        from . import _kernels
        self.scratch = np.empty(_kernels.attention_scratch_size(max(max_steps, src_len, 1)), dtype=np.float32)

    @property
    def cache_bytes(self):
        return self.self_k.nbytes + self.self_v.nbytes + sum(c.nbytes for c in self.cross)

    def keep(self, model, rows):
        """A state for the sequences `rows` (indices into this batch) alone, at the same step: their
        caches copied, work buffers of the new size. Their next steps give the same bits here as they
        would have in this state (no kernel lets one row's result depend on another row)."""
        rows = np.asarray(rows, dtype=np.intp)
        new = DecoderState(model, rows.size, self.src_len, self.src_lengths[rows],
                           [np.ascontiguousarray(c[:, rows]) for c in self.cross], self.max_steps)
        t = self.step
        new.self_k[:, :, :, :t] = self.self_k[:, rows, :, :t]
        new.self_v[:, :, :, :t] = self.self_v[:, rows, :, :t]
        new.step = t
        new.rel_bias = self.rel_bias
        return new


def _log_softmax_at(logits, tokens):
    """log p(token) per row, in float64 for a stable log-sum-exp."""
    z = logits.astype(np.float64)
    m = z.max(axis=1, keepdims=True)
    lse = m[:, 0] + np.log(np.exp(z - m).sum(axis=1))
    return z[np.arange(len(tokens)), tokens] - lse


def check_lengths(max_new_tokens, min_new_tokens):
    for name, v in (("max_new_tokens", max_new_tokens), ("min_new_tokens", min_new_tokens)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)):
            raise TypeError(f"{name} must be an int, got {type(v).__name__}")
    if max_new_tokens < 1:
        raise ValueError(f"max_new_tokens must be >= 1, got {max_new_tokens}")
    if min_new_tokens < 0 or min_new_tokens > max_new_tokens:
        raise ValueError(f"min_new_tokens must lie in [0, max_new_tokens={max_new_tokens}], got {min_new_tokens}")


# Finished sequences leave the batch (their caches are copied out into a smaller state) once at
# least this share of the rows still decoded has finished; the copy costs about a step.
DROP_FINISHED_SHARE = 0.25


def _drop_finished(model, state, done, step, max_new_tokens):
    """Whether to move the unfinished rows into a smaller state now: enough rows finished, steps left
    to gain from it, and room under the cache limit for the copy beside the current state."""
    n_done = int(done.sum())
    if n_done == 0 or n_done < DROP_FINISHED_SHARE * done.size or step + 2 >= max_new_tokens:
        return False
    kept = done.size - n_done
    return estimate_bytes(model.config, done.size, state.src_len, max_new_tokens) + \
        estimate_bytes(model.config, kept, state.src_len, max_new_tokens) <= _cache_limit


def greedy(model, src, max_new_tokens, min_new_tokens=0, return_scores=False, lengths=None):
    check_lengths(max_new_tokens, min_new_tokens)
    cfg = model.config
    ids, lengths = model.prepare_source(src, lengths)
    check_memory(cfg, ids.shape[0], ids.shape[1], max_new_tokens)
    state = model.start_decoding(ids, max_new_tokens, lengths)
    B = state.batch
    eos = cfg.eos_id
    tokens = np.full(B, cfg.decoder_start_id, dtype=np.int32)
    out = np.zeros((B, max_new_tokens), dtype=np.int64)
    scores = np.zeros((B, max_new_tokens), dtype=np.float64) if return_scores else None
    n_out = np.full(B, max_new_tokens, dtype=np.int64)
    rows = np.arange(B)                 # the sequence (row of out) each row of the state decodes
    done = np.zeros(B, dtype=bool)      # per row of the state
    # Without scores only the argmax is needed: the screen finds it reading a quarter of the bytes of the
    # output projection (or gives up, and the full logits are computed).
    screen = None if return_scores else model.output_screen
    banned = {}
    for step in range(max_new_tokens):
        h = model.decode_hidden(state, tokens)
        ban_eos = step < min_new_tokens
        nxt = None
        if not return_scores:
            forced = model.forced_token(step, max_new_tokens)
            if forced is not None:
                nxt = np.full(state.batch, forced, dtype=np.int64)
            elif screen is not None:
                if ban_eos not in banned:
                    banned[ban_eos] = model.banned_mask(ban_eos)
                nxt = screen.argmax(h, banned[ban_eos], scratch=state.logits)
        if nxt is None:
            logits = model.output(h, out=state.logits)
            if ban_eos:
                logits[:, eos] = -np.inf
            model.constrain_logits(logits, step, max_new_tokens)   # the model family's forced/banned tokens
            nxt = logits.argmax(axis=1)
            if return_scores:
                scores[rows, step] = _log_softmax_at(logits, nxt)
        out[rows, step] = nxt
        finished = (~done) & (nxt == eos)
        n_out[rows[finished]] = step + 1
        done |= finished
        if done.all():
            break
        tokens = nxt.astype(np.int32)
        if _drop_finished(model, state, done, step, max_new_tokens):
            keep = np.flatnonzero(~done)
            state = state.keep(model, keep)
            rows, done, tokens = rows[keep], done[keep], tokens[keep]
        tokens[done] = cfg.pad_id if cfg.pad_id < cfg.tgt_vocab_size else eos
    seqs = [out[b, :n_out[b]].copy() for b in range(B)]
    if return_scores:
        return seqs, [scores[b, :n_out[b]].copy() for b in range(B)]
    return seqs
