"""model_configs.py - tiny FORMAT.md model configs shared by the reference and parity tests.

Each one is tiny (d_model 32-96, 2 + 2 layers, vocab 20-60, max_positions 64) so a seeded
model builds and runs in milliseconds, and together they cover: post/pre norm, every activation,
interleaved/halves sinusoidal and learned positions (with and without position_offset), tied and
separate output projections, shared and separate embeddings with different source/target
vocab sizes, embedding norms, final norms, output bias, no biases, unscaled embeddings, and odd
sizes (d_model 96 with 3 heads, ffn_dim 200). Build weights with
pytransformer.torch_reference.init_seeded(config, seed).
"""

_BASE = {
    "format": "pytransformer",
    "format_version": 1,
    "encoder_layers": 2,
    "decoder_layers": 2,
    "max_positions": 64,
}

PARITY_CONFIGS = {
    # The paper: post-norm, ReLU, interleaved sinusoids, one shared table for source, target
    # and output.
    "paper_post_relu": dict(
        _BASE, d_model=32, num_heads=4, ffn_dim=64, src_vocab_size=40, tgt_vocab_size=40,
        shared_embeddings=True, activation="relu", norm_placement="post",
        positional_encoding="sinusoidal", sinusoidal_layout="interleaved",
        scale_embeddings=True, tie_output=True,
        pad_id=0, bos_id=None, eos_id=1, decoder_start_id=0),
    # Pre-norm with final norms, GELU, learned positions with an offset, separate vocabularies
    # and an untied output projection with a bias.
    "pre_gelu_learned_separate": dict(
        _BASE, d_model=64, num_heads=4, ffn_dim=128, src_vocab_size=50, tgt_vocab_size=30,
        shared_embeddings=False, activation="gelu", norm_placement="pre",
        encoder_final_norm=True, decoder_final_norm=True,
        positional_encoding="learned", position_offset=2, scale_embeddings=True,
        tie_output=False, output_bias=True,
        pad_id=0, bos_id=None, eos_id=2, decoder_start_id=1),
    # Odd sizes: d_model 96, 3 heads of 32, ffn 200; tanh GELU; fairseq-style offset (pad + 1)
    # into a halves sinusoid table; different vocabularies with the output tied to the target table.
    "odd_sizes_gelu_tanh_halves": dict(
        _BASE, d_model=96, num_heads=3, ffn_dim=200, src_vocab_size=60, tgt_vocab_size=23,
        shared_embeddings=False, activation="gelu_tanh", norm_placement="post",
        positional_encoding="sinusoidal", sinusoidal_layout="halves", position_offset=2,
        scale_embeddings=True, tie_output=True, output_bias=True,
        pad_id=1, bos_id=0, eos_id=2, decoder_start_id=2),
    # Pre-norm, SiLU, no biases anywhere, final norms, shared embeddings but separate output.
    "pre_silu_nobias": dict(
        _BASE, d_model=48, num_heads=6, ffn_dim=96, src_vocab_size=48, tgt_vocab_size=48,
        shared_embeddings=True, activation="silu", norm_placement="pre",
        encoder_final_norm=True, decoder_final_norm=True,
        positional_encoding="sinusoidal", sinusoidal_layout="interleaved",
        scale_embeddings=True, tie_output=False, output_bias=False,
        attention_bias=False, ffn_bias=False, layer_norm_eps=1e-6,
        pad_id=0, bos_id=None, eos_id=3, decoder_start_id=0),
    # BART-like: post-norm, GELU, learned positions offset 2, embedding layer norm, unscaled
    # embeddings, shared + tied tables, final_logits_bias.
    "bart_like": dict(
        _BASE, d_model=48, num_heads=4, ffn_dim=80, src_vocab_size=56, tgt_vocab_size=56,
        shared_embeddings=True, activation="gelu", norm_placement="post", embedding_norm=True,
        positional_encoding="learned", position_offset=2, scale_embeddings=False,
        tie_output=True, output_bias=True,
        pad_id=1, bos_id=0, eos_id=2, decoder_start_id=2),
    # Marian-like: post-norm, SiLU, halves sinusoids without offset, scaled embeddings,
    # decoding starts from the pad token.
    "marian_like": dict(
        _BASE, d_model=32, num_heads=2, ffn_dim=48, src_vocab_size=20, tgt_vocab_size=20,
        shared_embeddings=True, activation="silu", norm_placement="post",
        positional_encoding="sinusoidal", sinusoidal_layout="halves", position_offset=0,
        scale_embeddings=True, tie_output=True, output_bias=True,
        pad_id=19, bos_id=None, eos_id=0, decoder_start_id=19),
}
