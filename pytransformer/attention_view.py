"""attention_view.py - the decoder's cross-attention over the source for one input, as a terminal heatmap or PNG.

The attention kernel returns contexts, not probabilities, so the probabilities are recomputed
here in NumPy from the engine's own activations: the model is run teacher-forced on its own
greedy output, and each decoder layer's cross-attention call is observed on the way (its query
projection, and the keys the engine computed once per source), then softmax(q k^T / sqrt(head_dim))
is formed with the source padding masked. No PyTorch is needed.
"""
import math

import numpy as np

SHADES = " ░▒▓█"
ASCII_SHADES = " .:=#"


def cross_attention(model, src_ids, out_ids):
    """Cross-attention probabilities, (layers, heads, T, S), of the decoder reading `src_ids` while it
    produces `out_ids` (the generated tokens; row t is the step that produced out_ids[t])."""
    cfg = model.config
    src = np.asarray(src_ids, dtype=np.int64)
    out = [int(i) for i in out_ids]
    tgt = np.asarray([[cfg.decoder_start_id] + out[:-1] if out else [cfg.decoder_start_id]], dtype=np.int64)
    recorded = []
    original = model._cross_attention

    def observe(attn, h, kv, B, T, lens, ctx):
        q = attn.q(h).reshape(B, T, attn.heads, attn.head_dim).astype(np.float64)
        keys = kv[0].astype(np.float64)                            # (B, heads, S, head_dim)
        scores = np.einsum("bthd,bhsd->bhts", q, keys) / math.sqrt(attn.head_dim)
        S = keys.shape[2]
        masked = np.arange(S)[None, None, None, :] >= np.asarray(lens)[:, None, None, None]
        scores = np.where(masked, -np.inf, scores)
        scores -= scores.max(axis=-1, keepdims=True)
        p = np.exp(scores)
        recorded.append(p / p.sum(axis=-1, keepdims=True))
        return original(attn, h, kv, B, T, lens, ctx)

    model._cross_attention = observe       # an instance attribute shadows the method for this call only
    try:
        model.forward([src], tgt)
    finally:
        del model._cross_attention
    return np.stack([r[0] for r in recorded])                      # (layers, heads, T, S)


def sharpest_layer(probs):
    """Index of the layer whose head-averaged attention has the lowest mean entropy (most focused)."""
    mean = probs.mean(axis=1)
    entropy = -(mean * np.log(np.clip(mean, 1e-12, None))).sum(-1).mean(-1)
    return int(np.argmin(entropy))


def _can_encode(stream, text):
    enc = getattr(stream, "encoding", None) or "ascii"
    try:
        text.encode(enc)
        return True
    except (UnicodeEncodeError, LookupError):
        return False


def _show_char(c):
    return "·" if c == " " else c


def render_text(weights, src_text, row_labels, title, unicode=True):
    """Heatmap lines: one row per output token (row_labels), one 2-column cell per source character.
    Each cell is shaded by its weight relative to the largest weight in the map."""
    shades = SHADES if unicode else ASCII_SHADES
    space = "·" if unicode else "_"
    top = float(weights.max()) if weights.size else 1.0
    lines = [title, ""]
    lines.append("     " + "".join((space if c == " " else c) + " " for c in src_text))
    for label, row in zip(row_labels, weights):
        levels = [int(round(w / top * (len(shades) - 1))) if top > 0 else 0 for w in row]
        lines.append(f"  {label}  " + "".join(shades[v] * 2 for v in levels))
    lines.append("")
    legend = "  ".join(f"[{shades[i] * 2}] {i / (len(shades) - 1):.0%}" for i in range(len(shades)))
    lines.append(f"  shade = weight / largest weight: {legend}   ({space} = space, "
                 f"{'⏎' if unicode else '$'} = end of output)")
    return lines


def save_png(weights, src_text, out_labels, title, path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--png needs matplotlib: pip install matplotlib") from None
    S, T = len(src_text), len(out_labels)
    fig, ax = plt.subplots(figsize=(max(4.0, 0.32 * S + 1.5), max(3.0, 0.32 * T + 1.5)))
    ax.imshow(weights, cmap="Greys", vmin=0.0, aspect="equal")
    ax.set_xticks(range(S))
    ax.set_xticklabels([_show_char(c) for c in src_text])
    ax.set_yticks(range(T))
    ax.set_yticklabels(out_labels)
    ax.set_xlabel("source character")
    ax.set_ylabel("output character")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def show(model, text, max_new_tokens=None, layer=None, stream=None, png=None):
    """Translate one text, print its cross-attention heatmap to `stream`; returns the translation."""
    from .text import default_max_new_tokens, require_tokenizer
    tok = require_tokenizer(model)
    src_ids = tok.encode(text)
    text = tok.normalized(text)                 # what the model saw, character for character
    if not src_ids:
        raise ValueError("--show-attention needs a non-empty input")
    if max_new_tokens is None:
        max_new_tokens = default_max_new_tokens(model, tok, [src_ids])
    out_ids = [int(i) for i in model.generate([np.asarray(src_ids)], max_new_tokens)[0]]
    probs = cross_attention(model, src_ids, out_ids)
    n_layers = probs.shape[0]
    if layer is None:
        chosen = sharpest_layer(probs)
        how = "the most focused layer"
    else:
        if not 1 <= layer <= n_layers:
            raise ValueError(f"--layer must lie in [1, {n_layers}], got {layer}")
        chosen = layer - 1
        how = "chosen with --layer"
    weights = probs[chosen].mean(axis=0)                           # (T, S), mean over heads
    translation = tok.decode(out_ids)
    labels = [tok.tokens[i] if i != tok.eos_id else "</s>" for i in out_ids]
    title = (f"cross-attention of decoder layer {chosen + 1} of {n_layers} ({how}), mean of "
             f"{probs.shape[1]} heads: which input characters each output character looked at")
    if stream is not None:
        for unicode in (True, False):
            marks = [("⏎" if unicode else "$") if i == tok.eos_id else tok.tokens[i] for i in out_ids]
            lines = render_text(weights, text, marks, title, unicode=unicode)
            if not unicode or _can_encode(stream, "\n".join(lines)):
                break
        stream.write("\n".join(lines) + "\n")
        stream.flush()
    if png is not None:
        short = (f"{tok.decode(out_ids)!s}: decoder cross-attention, layer {chosen + 1} of {n_layers},\n"
                 f"mean of {probs.shape[1]} heads (darker = looked at more)")
        save_png(weights, text, labels, short, png)
    return translation
