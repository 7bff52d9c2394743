"""engines.py - one MarianMT model run by three engines: pytransformer, transformers (PyTorch) and CTranslate2.

Every engine gets the same weights: a seeded, random-initialised transformers MarianMTModel saved
with save_pretrained (nothing downloaded). CTranslate2 converts that directory with its own
converter; its tokenizer step is replaced by a synthetic vocabulary (token i is the string "t{i}",
EOS "</s>" is id 0 and "<pad>" the last id, as in Marian), so that ids map one to one.

Each engine exposes: load(), set_threads(n), generate(src_ids, n_new) -> list of token-id lists
(greedy, EOS suppressed so exactly n_new tokens come out) and encode(src_ids) for the encoder-only
workload (CTranslate2 has no encoder-only call: its encode() runs the encoder plus one decoder step,
see CTranslate2Engine.encode).

Source sequences end with EOS (id 0), as a Marian tokenizer writes them; every engine gets them as is.
"""
import os

import numpy as np

OPUS_MT_EN_DE_SHAPE = dict(vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
                           encoder_attention_heads=8, decoder_attention_heads=8, encoder_ffn_dim=2048,
                           decoder_ffn_dim=2048, max_position_embeddings=512)
TINY_SHAPE = dict(vocab_size=120, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                  decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=128)


def build_marian(path, shape=OPUS_MT_EN_DE_SHAPE, seed=0):
    """Save a seeded random MarianMTModel of the given shape to `path` (once) and return the path."""
    if os.path.exists(os.path.join(path, "model.safetensors")):
        return path
    import torch
    from transformers import MarianConfig, MarianMTModel
    vocab = shape["vocab_size"]
    cfg = MarianConfig(**shape, pad_token_id=vocab - 1, eos_token_id=0, decoder_start_token_id=vocab - 1,
                       activation_function="swish", scale_embedding=True, share_encoder_decoder_embeddings=True)
    torch.manual_seed(seed)
    model = MarianMTModel(cfg).eval()
    # transformers' init (std 0.02) makes a random model ignore its input; weights scaled like a
    # trained model's give outputs that depend on the source, so the token-equality check means something.
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "embed_positions" in name:
                continue                   # the sinusoidal table is a function of the shape, not a weight
            if p.dim() == 2:
                p.normal_(0.0, 1.0 / p.shape[-1] ** 0.5)
        # Marian decodes from a zero start embedding; transformers spells that as the embedding row of
        # the pad token, which a trained Marian checkpoint holds as zeros. CTranslate2's Marian converter
        # relies on it (start_from_zero_embedding, pad row dropped), so every table tied to the
        # vocabulary gets a zero pad row. (The shared table is named "model.shared", not "embed...":
        # matching on the name missed it, and CTranslate2 then disagreed with transformers.)
        for emb in (model.get_input_embeddings(), model.get_output_embeddings(),
                    model.model.encoder.embed_tokens, model.model.decoder.embed_tokens):
            emb.weight[cfg.pad_token_id].zero_()
    model.save_pretrained(path)
    return path


def _padded(src_ids, pad):
    lens = [len(s) for s in src_ids]
    ids = np.full((len(src_ids), max(lens)), pad, dtype=np.int64)
    mask = np.zeros_like(ids)
    for i, s in enumerate(src_ids):
        ids[i, :len(s)] = s
        mask[i, :len(s)] = 1
    return ids, mask


# Set by compare_engines.py --huge-pages on/off: "1" loads pytransformer's model with huge_pages=True,
# "0" with False, in every process the report starts (timing workers and load probes inherit the
# environment); unset, pytransformer.load's default (True).
HUGE_PAGES_ENV = "PYTRANSFORMER_BENCH_HUGE_PAGES"


class PytransformerEngine:
    name = "pytransformer"

    def __init__(self, path, threads):
        self.path, self.threads = path, threads

    def load(self):
        import pytransformer
        self.pt = pytransformer
        pytransformer.set_num_threads(self.threads)
        switch = os.environ.get(HUGE_PAGES_ENV)
        self.model = pytransformer.load(self.path) if switch is None else \
            pytransformer.load(self.path, huge_pages=switch == "1")
        # transformers' generate is called with forced_eos_token_id=None, CTranslate2 has no such rule:
        # switch the Marian generation_config's forced EOS off here too, so all engines decode alike.
        self.model.forced_eos_id = None
        return self

    def set_threads(self, n):
        self.threads = n
        self.pt.set_num_threads(n)

    def generate(self, src_ids, n_new):
        self.pt.set_num_threads(self.threads)
        return [t.tolist() for t in self.model.generate(src_ids, n_new, min_new_tokens=n_new)]

    def encode(self, src_ids):
        self.pt.set_num_threads(self.threads)
        return self.model.encode(src_ids)[0]


class TransformersEngine:
    name = "transformers"

    def __init__(self, path, threads):
        self.path, self.threads = path, threads

    def load(self):
        import torch
        from transformers import MarianMTModel
        torch.set_num_threads(self.threads)
        self.torch = torch
        self.model = MarianMTModel.from_pretrained(self.path).eval()
        self.pad = self.model.config.pad_token_id
        return self

    def set_threads(self, n):
        self.threads = n
        self.torch.set_num_threads(n)

    def generate(self, src_ids, n_new):
        self.torch.set_num_threads(self.threads)
        ids, mask = _padded(src_ids, self.pad)
        with self.torch.inference_mode():
            out = self.model.generate(input_ids=self.torch.from_numpy(ids), attention_mask=self.torch.from_numpy(mask),
                                      max_new_tokens=n_new, min_new_tokens=n_new, num_beams=1, do_sample=False,
                                      use_cache=True, forced_eos_token_id=None)
        return [row[1:].tolist() for row in out]   # drop the decoder start token

    def encode(self, src_ids):
        self.torch.set_num_threads(self.threads)
        ids, mask = _padded(src_ids, self.pad)
        with self.torch.inference_mode():
            return self.model.get_encoder()(input_ids=self.torch.from_numpy(ids),
                                            attention_mask=self.torch.from_numpy(mask)).last_hidden_state


class _SyntheticVocab:
    """Stands in for a tokenizer in CTranslate2's converter: token strings t0..tN, ids unchanged."""

    eos_token = "</s>"
    unk_token = "t1"

    def __init__(self, size):
        self.tokens = ["</s>"] + [f"t{i}" for i in range(1, size - 1)] + ["<pad>"]

    def get_vocab(self):
        return {t: i for i, t in enumerate(self.tokens)}


def convert_ct2(hf_path, out_path):
    """Convert the HF directory with CTranslate2's own converter (float32), once.

    The Marian converter drops the pad row (the last id) and starts the decoder from a zero vector,
    which equals transformers' start from the pad embedding only when that row is zero: checked here,
    as a model that breaks it decodes differently in CTranslate2 (see build_marian)."""
    if os.path.exists(os.path.join(out_path, "model.bin")):
        return out_path
    from ctranslate2.converters import TransformersConverter
    from transformers import AutoConfig

    config = AutoConfig.from_pretrained(hf_path)
    size = config.vocab_size

    class Converter(TransformersConverter):
        def load_tokenizer(self, tokenizer_class, model_name_or_path, **kwargs):
            return _SyntheticVocab(size)

    from safetensors.numpy import load_file
    tensors = load_file(os.path.join(hf_path, "model.safetensors"))
    for name, t in tensors.items():
        if t.ndim == 2 and t.shape[0] == size and np.any(t[config.decoder_start_token_id] != 0):
            raise ValueError(f"{hf_path}: {name} has a non-zero row for the decoder start id "
                             f"{config.decoder_start_token_id}; CTranslate2 would start from zeros instead")
    Converter(hf_path).convert(out_path, force=True)
    return out_path


class CTranslate2Engine:
    name = "ctranslate2"

    def __init__(self, path, threads, compute_type="float32"):
        self.path, self.threads, self.compute_type = path, threads, compute_type

    def load(self):
        import ctranslate2
        self.ct2 = ctranslate2
        self.translator = ctranslate2.Translator(self.path, device="cpu", compute_type=self.compute_type,
                                                 intra_threads=self.threads, inter_threads=1)
        return self

    def set_threads(self, n):
        """intra_threads is fixed when a Translator is built: build a new one for another count."""
        if n != self.threads:
            del self.translator
            self.threads = n
            self.load()

    @staticmethod
    def _tokens(src_ids):
        return [["</s>" if i == 0 else f"t{i}" for i in s] for s in src_ids]

    def generate(self, src_ids, n_new):
        res = self.translator.translate_batch(self._tokens(src_ids), beam_size=1, max_decoding_length=n_new,
                                              min_decoding_length=n_new, max_batch_size=0)
        return [[0 if t == "</s>" else int(t[1:]) for t in r.hypotheses[0]] for r in res]

    def encode(self, src_ids):
        """Encoder plus ONE decoder step (CTranslate2's Python API has no encoder-only call); the
        report subtracts the measured time of one step to estimate the encoder alone."""
        return self.translator.translate_batch(self._tokens(src_ids), beam_size=1, max_decoding_length=1,
                                               min_decoding_length=1, max_batch_size=0)


ENGINES = {"pytransformer": PytransformerEngine, "transformers": TransformersEngine, "ctranslate2": CTranslate2Engine}


def ctranslate2_available():
    try:
        import ctranslate2  # noqa: F401
    except ImportError:
        return False
    return True


# ---------------------------------------------------------------------------- one process per engine

class RemoteEngine:
    """An engine running in its own Python process (`python engines.py --serve NAME PATH THREADS`),
    driven over a pipe with one JSON line per request.

    Why not all engines in one process: the PyTorch wheel bundles its own libgomp.so.1 under the same
    soname as the system's, so in one process pytransformer and PyTorch share whichever OpenMP
    runtime was loaded first, with that runtime's wait policy (pytransformer loads it with sleeping
    workers, PyTorch with spinning ones). Then neither runs as it does for its own users. In its own
    process each engine gets its own runtime and its own settings, as in an application."""

    def __init__(self, name, path, threads):
        self.name, self.path, self.threads = name, path, threads
        self.proc = None

    def load(self):
        import sys
        from pytransformer.__main__ import LineProcess
        self.proc = LineProcess([sys.executable, os.path.abspath(__file__), "--serve", self.name, self.path,
                                 str(self.threads)], f"the {self.name} worker")
        self.info = self._reply(self.proc.read())      # {"version": ...} once the engine has loaded
        return self

    def _reply(self, line):
        import json
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"{self.name} worker: {reply['error']}")
        return reply

    def call(self, op, **args):
        import json
        return self._reply(self.proc.ask(json.dumps(dict(args, op=op))))

    def set_threads(self, n):
        self.threads = n
        self.call("threads", n=n)

    def generate(self, src_ids, n_new):
        return self.call("generate", src=_plain(src_ids), n_new=n_new)["tokens"]

    def encode(self, src_ids):
        self.call("encode", src=_plain(src_ids))

    def timed(self, work, src_ids, n_new, inner):
        """Seconds per call of `work` ("encoder" or "greedy" with n_new tokens), measured inside the
        worker over `inner` back-to-back calls (the pipe round trip is not timed)."""
        return self.call("time", work=work, src=_plain(src_ids), n_new=n_new, inner=inner)["seconds"]

    def close(self):
        if self.proc is not None and self.proc.proc.poll() is None:
            self.call("quit")
            self.proc.close()
        self.proc = None


def _plain(src_ids):
    return [[int(t) for t in s] for s in src_ids]


def _versions(name):
    if name == "pytransformer":
        import pytransformer
        return {"pytransformer": pytransformer.__version__, "pytransformer ISA path": pytransformer.cpu_info()["isa"]}
    if name == "transformers":
        import torch
        import transformers
        return {"torch": torch.__version__, "transformers": transformers.__version__,
                "torch CPU capability": torch.backends.cpu.get_cpu_capability()}
    import ctranslate2
    return {"ctranslate2": ctranslate2.__version__}


def serve(name, path, threads):
    """The worker side of RemoteEngine: load the engine, then answer requests from stdin until "quit".
    Anything the engines print goes to stderr; stdout carries only the replies."""
    import json
    import sys
    import time
    reply_to = sys.stdout
    sys.stdout = sys.stderr

    def reply(obj):
        reply_to.write(json.dumps(obj) + "\n")
        reply_to.flush()

    try:
        eng = ENGINES[name](path, threads).load()
    except Exception as e:  # noqa: BLE001  (reported to the driver, which raises)
        reply({"error": f"loading failed: {e!r}"})
        return
    reply({"version": _versions(name)})
    for line in sys.stdin:
        req = json.loads(line)
        op = req["op"]
        try:
            if op == "quit":
                reply({})
                break
            elif op == "threads":
                eng.set_threads(req["n"])
                out = {}
            elif op == "generate":
                out = {"tokens": eng.generate(req["src"], req["n_new"])}
            elif op == "encode":
                eng.encode(req["src"])
                out = {}
            elif op == "time":
                src, n_new = req["src"], req["n_new"]
                fn = (lambda: eng.encode(src)) if req["work"] == "encoder" else (lambda: eng.generate(src, n_new))
                t0 = time.perf_counter()
                for _ in range(req["inner"]):
                    fn()
                out = {"seconds": (time.perf_counter() - t0) / req["inner"]}
            elif op == "profile" and name == "pytransformer":
                from pytransformer.__main__ import profile_decode_step
                out = {"profile": profile_decode_step(eng.model, req["src"], req["n_new"], reps=req["reps"])}
            elif op == "profile_encoder" and name == "pytransformer":
                from pytransformer.__main__ import profile_encoder
                out = {"profile": profile_encoder(eng.model, req["src"], reps=req["reps"])}
            elif op == "fma_peak" and name == "pytransformer":
                from common import fma_peak
                out = {"gflop_s": fma_peak(req["threads"], lanes=req["lanes"])}
            elif op == "bandwidth" and name == "pytransformer":
                from common import read_bandwidth
                out = {"gb_s": read_bandwidth(req["threads"], mib=req["mib"], reps=req["reps"])}
            else:
                out = {"error": f"unknown request {op!r} for {name}"}
        except Exception as e:  # noqa: BLE001
            out = {"error": repr(e)}
        reply(out)


if __name__ == "__main__":
    import sys
    if len(sys.argv) == 5 and sys.argv[1] == "--serve":
        sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
        serve(sys.argv[2], sys.argv[3], int(sys.argv[4]))
    else:
        sys.exit("usage: python engines.py --serve ENGINE PATH THREADS  (started by RemoteEngine)")
