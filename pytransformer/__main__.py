"""pytransformer command line: `pytransformer info|export ...` (also `python -m pytransformer`)."""
import argparse
import json
import os
import sys


def _cmd_info(args):
    import pytransformer
    info = pytransformer.cpu_info()
    if args.model:
        from .weights import read_config
        cfg = read_config(args.model)
        size = sum(os.path.getsize(os.path.join(args.model, f)) for f in os.listdir(args.model)
                   if os.path.isfile(os.path.join(args.model, f)))
        print(f"model:        {args.model}")
        print(f"architecture: d_model {cfg.d_model}, {cfg.num_heads} heads, {cfg.encoder_layers}+"
              f"{cfg.decoder_layers} layers, ffn {cfg.ffn_dim}, vocab {cfg.src_vocab_size}/{cfg.tgt_vocab_size}, "
              f"{cfg.norm_placement}-norm, {cfg.activation}, {cfg.positional_encoding} positions")
        print(f"parameters:   {cfg.num_parameters():,}")
        print(f"files:        {size / 1e6:.2f} MB")
    print(f"isa:          {info['isa']} (avx2 compiled: {info['avx2_compiled']}, "
          f"cpu avx2: {info['features']['avx2']}, fma: {info['features']['fma']})")
    print(f"threads:      {info['num_threads']} (OpenMP: {info['openmp']}, cores: {info['num_procs']})")
    return 0


def _cmd_export(args):
    from .export import main_export
    return main_export(args.rest)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="pytransformer",
                                     description="Fast CPU inference for Transformer encoder-decoder models.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="show the CPU path in use and, given a model directory, its architecture")
    p.add_argument("model", nargs="?", help="model directory")
    p.set_defaults(func=_cmd_info)
    p = sub.add_parser("export", help="write a model directory from a PyTorch reference checkpoint "
                                      "(pytransformer export CHECKPOINT OUT_DIR)", add_help=False)
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=_cmd_export)
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except Exception as e:  # a person reads this: one line, no traceback
        from .errors import WeightsError
        if isinstance(e, (WeightsError, ValueError, FileNotFoundError, NotImplementedError, ImportError)):
            print(f"pytransformer: error: {e}", file=sys.stderr)
            return 2
        raise


if __name__ == "__main__":
    sys.exit(main())
