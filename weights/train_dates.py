"""train_dates.py - trains the shipped dates model (human-written dates -> ISO 8601) with PyTorch.

    python weights/train_dates.py                 # writes weights/dates (about 15 minutes on 2 cores)
    python weights/train_dates.py --steps 200 --out /tmp/dates-quick   # a quick smoke run

The model is the paper's Transformer (post-norm, sinusoidal positions, ReLU, tied character
embeddings), built with pytransformer.torch_reference.ReferenceTransformer and exported with
pytransformer.export.from_torch, so the engine's loader and the PyTorch reference read the very
same weights. Data come from dates_data.py, endless and seeded; the held-out and validation
strings are never trained on. Everything is seeded (Python, torch, data), and the run is
deterministic on a given machine and thread count.
"""
import argparse
import math
import os
import random
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)                       # dates_data.py sits next to this script
import dates_data  # noqa: E402

from pytransformer.export import from_torch  # noqa: E402
from pytransformer.text import CharTokenizer  # noqa: E402
from pytransformer.torch_reference import ReferenceTransformer  # noqa: E402

ISO_LENGTH = 10                                # "YYYY-MM-DD"


def model_config(args, vocab_size, tok):
    return {
        "d_model": args.d_model, "num_heads": args.heads,
        "encoder_layers": args.layers, "decoder_layers": args.layers, "ffn_dim": args.ffn,
        "src_vocab_size": vocab_size, "tgt_vocab_size": vocab_size,
        "shared_embeddings": True, "tie_output": True,
        "activation": "relu", "norm_placement": "post",
        "positional_encoding": "sinusoidal", "sinusoidal_layout": "interleaved",
        "max_positions": 256,
        "pad_id": tok.pad_id, "eos_id": tok.eos_id, "decoder_start_id": tok.decoder_start_id,
    }


def encode_batch(tok, pairs):
    """(src ids (B, S) padded, src lengths (B,), decoder inputs (B, 11), labels (B, 11))."""
    src = [tok.encode(t) for t, _ in pairs]
    lengths = torch.tensor([len(s) for s in src], dtype=torch.int64)
    padded = torch.full((len(src), int(lengths.max())), tok.pad_id, dtype=torch.int64)
    for b, s in enumerate(src):
        padded[b, :len(s)] = torch.tensor(s)
    target = torch.tensor([tok.encode(iso) for _, iso in pairs], dtype=torch.int64)
    start = torch.full((len(pairs), 1), tok.decoder_start_id, dtype=torch.int64)
    eos = torch.full((len(pairs), 1), tok.eos_id, dtype=torch.int64)
    return padded, lengths, torch.cat([start, target], 1), torch.cat([target, eos], 1)


@torch.no_grad()
def exact_match(model, tok, pairs, batch=500):
    model.eval()
    right = 0
    for i in range(0, len(pairs), batch):
        chunk = pairs[i:i + batch]
        src, lengths, _, _ = encode_batch(tok, chunk)
        outs = model.greedy(src, lengths, ISO_LENGTH + 2)
        right += sum(tok.decode(o.tolist()) == iso for o, (_, iso) in zip(outs, chunk))
    model.train()
    return right / len(pairs)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default=os.path.join(HERE, "dates"), help="model directory to write")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=3000)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--lr", type=float, default=2e-3)
    p.add_argument("--warmup", type=int, default=300)
    p.add_argument("--d-model", type=int, default=64)
    p.add_argument("--heads", type=int, default=4)
    p.add_argument("--layers", type=int, default=3)
    p.add_argument("--ffn", type=int, default=256)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--eval-every", type=int, default=500)
    args = p.parse_args(argv)

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    np.random.seed(args.seed)
    torch.set_num_threads(args.threads)

    # Case and spacing are the vocabulary's business (normalised before encoding), not the model's.
    normalize = {"lowercase": True, "collapse_spaces": True, "strip": True}
    tok = CharTokenizer.characters(dates_data.ALPHABET.lower(), ISO_LENGTH + 2, normalize)
    model = ReferenceTransformer(model_config(args, len(tok), tok))
    with torch.no_grad():   # torch's N(0, 1) embeddings times sqrt(d) would swamp the tied logits
        model.src_embedding.weight.normal_(0.0, args.d_model ** -0.5)
    model.train()
    n_params = sum(p.numel() for p in model.parameters())
    print(f"parameters: {n_params:,}; vocabulary: {len(tok)} tokens", flush=True)

    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), weight_decay=0.01)

    def lr_at(step):     # linear warm-up, then cosine decay to zero
        if step < args.warmup:
            return (step + 1) / args.warmup
        t = (step - args.warmup) / max(1, args.steps - args.warmup)
        return 0.5 * (1.0 + math.cos(math.pi * t))
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)

    stream = dates_data.training_stream(args.seed)
    validation = dates_data.validation()
    t0 = time.time()
    running = None
    for step in range(args.steps):
        pairs = [next(stream) for _ in range(args.batch)]
        src, lengths, dec_in, labels = encode_batch(tok, pairs)
        logits = model(src, lengths, dec_in)
        loss = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), labels.reshape(-1))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        if (step + 1) % 100 == 0:
            print(f"step {step + 1:5d}  loss {running:.4f}  lr {sched.get_last_lr()[0]:.2e}  "
                  f"{time.time() - t0:6.0f} s", flush=True)
        if (step + 1) % args.eval_every == 0 or step + 1 == args.steps:
            acc = exact_match(model, tok, validation)
            print(f"step {step + 1:5d}  validation exact match {acc:.4f}", flush=True)
    train_seconds = time.time() - t0

    model.eval()
    from_torch(model, args.out)
    tok.save(args.out)
    heldout = dates_data.heldout()
    torch_acc = exact_match(model, tok, heldout)

    import pytransformer
    engine = pytransformer.load(args.out)
    from pytransformer.text import load_tokenizer, translate
    engine.tokenizer = load_tokenizer(args.out)
    outs = translate(engine, [t for t, _ in heldout])
    engine_acc = float(np.mean([o == iso for o, (_, iso) in zip(outs, heldout)]))
    size = sum(os.path.getsize(os.path.join(args.out, f)) for f in os.listdir(args.out))
    print(f"training: {args.steps} steps x {args.batch} in {train_seconds / 60:.1f} min "
          f"({args.threads} threads)")
    print(f"held-out exact match ({len(heldout)} dates): torch {torch_acc:.4f}, pytransformer {engine_acc:.4f}")
    print(f"wrote {args.out} ({size / 1e6:.2f} MB)")
    for o, (t, iso) in zip(outs, heldout):
        if o != iso:
            print(f"  miss: {t!r} -> {o!r} (want {iso})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
