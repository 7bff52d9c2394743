"""test_cli.py - the `pytransformer` command line on the shipped model: translate, info, verify, bench, errors."""
import io
import os
import shutil
import subprocess
import sys

import pytest

import pytransformer
from pytransformer.__main__ import ProgressBar, main
from pytransformer.text import load_tokenizer, shipped_model_dir

MODEL_DIR = shipped_model_dir()


def run(capsys, *argv):
    rc = main(list(argv))
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def model():
    m = pytransformer.load(MODEL_DIR)
    if m.tokenizer is None:
        m.tokenizer = load_tokenizer(MODEL_DIR)
    return m


def test_translate_arguments(capsys):
    rc, out, err = run(capsys, "translate", "Saturday, 21st of November 2026", "11/21/2026", "3.4.1905")
    assert rc == 0
    assert out.splitlines() == ["2026-11-21", "2026-11-21", "1905-04-03"]


def test_translate_stdin_keeps_order_and_one_line_per_input(capsys, monkeypatch, model):
    lines = ["1999-12-31", "Wednesday, the 2nd of June, 1949", "", "7/4/76", "  JAN 1 00  ",
             "the 13th of Sept., 2013"] * 30          # many lengths, so batches are reordered internally
    monkeypatch.setattr(sys, "stdin", io.StringIO("".join(line + "\n" for line in lines)))
    rc, out, err = run(capsys, "translate", "--batch-size", "7")
    assert rc == 0
    got = out.split("\n")
    assert got[-1] == "" and len(got) - 1 == len(lines)
    alone = {line: model.translate([line])[0] for line in set(lines)}     # each input translated on its own
    assert got[:-1] == [alone[line] for line in lines]
    assert got[:6] == ["1999-12-31", "1949-06-02", "", "1976-07-04", "2000-01-01", "2013-09-13"]


def test_translate_with_model_dir_threads_and_max_new_tokens(capsys, tmp_path):
    copy = tmp_path / "my model"
    shutil.copytree(MODEL_DIR, copy)
    rc, out, _ = run(capsys, "translate", "--model", str(copy), "--threads", "1", "21 Nov. 2026")
    assert (rc, out) == (0, "2026-11-21\n")
    rc, out, _ = run(capsys, "translate", "--model", str(copy), "--max-new-tokens", "4", "21 Nov. 2026")
    assert (rc, out) == (0, "2026\n")


def test_error_missing_model_directory(capsys, tmp_path):
    rc, out, err = run(capsys, "translate", "--model", str(tmp_path / "nope"), "21 Nov 2026")
    assert rc == 2 and out == ""
    assert "does not exist" in err and "nope" in err


def test_error_unknown_character_is_named(capsys):
    rc, out, err = run(capsys, "translate", "21 Nov 2026", "21 Növ 2026")
    assert rc == 2 and out == ""
    assert "unknown character 'ö' (U+00F6)" in err and "input 2" in err


def test_error_model_without_vocabulary(capsys, tmp_path):
    bare = tmp_path / "bare"
    bare.mkdir()
    for f in ("config.json", "model.safetensors"):
        shutil.copy(os.path.join(MODEL_DIR, f), bare / f)
    rc, out, err = run(capsys, "translate", "--model", str(bare), "21 Nov 2026")
    assert rc == 2 and "no vocabulary (vocab.json)" in err
    rc, out, err = run(capsys, "info", str(bare))        # info still works: ids-only model
    assert rc == 0 and "vocabulary:   none" in out


def test_error_not_a_model_directory(capsys, tmp_path):
    rc, out, err = run(capsys, "translate", "--model", str(tmp_path), "x")
    assert rc == 2 and "no config.json" in err


def test_info(capsys):
    rc, out, err = run(capsys, "info")
    assert rc == 0
    cfg = pytransformer.load_weights(MODEL_DIR)[0]
    assert f"parameters:   {cfg.num_parameters():,}" in out
    assert "post-norm" in out and "sinusoidal positions" in out and "MB" in out
    assert f"isa:          {pytransformer.get_isa()}" in out and "threads:" in out


def test_verify(capsys):
    rc, out, err = run(capsys, "verify", MODEL_DIR, "-n", "40")
    assert rc == 0, out + err
    assert "greedy agreement: 40/40 sequences identical" in out
    diff = float(out.split("max |logit difference| vs PyTorch (teacher-forced): ")[1].split()[0])
    assert diff < 1e-3


def test_bench_tiny(capsys):
    rc, out, err = run(capsys, "bench", "--batch-sizes", "1,3", "--repeats", "1", "--max-new-tokens", "3",
                       "--vs", "torch")
    assert rc == 0, err
    rows = [line.split() for line in out.splitlines() if line.strip()[:1].isdigit() and "x" in line]
    assert [r[0] for r in rows] == ["1", "3"]
    assert all(float(r[1].replace(",", "")) > 0 for r in rows)


def test_show_attention_terminal(capsys):
    rc, out, err = run(capsys, "translate", "--show-attention", "21 Nov. 2026")
    assert rc == 0 and out == "2026-11-21\n"
    lines = err.splitlines()
    assert "cross-attention" in lines[0]
    header = next(i for i, line in enumerate(lines) if line.strip().startswith("2 1"))
    rows = lines[header + 1:header + 12]
    assert [r.split()[0] for r in rows] == list("2026-11-21") + ["⏎"]
    assert all(len(r) == len(lines[header].rstrip()) + 1 for r in rows)    # 2 columns per source char
    rc, out, err = run(capsys, "translate", "--show-attention", "a", "b")
    assert rc == 2 and "one input" in err


def test_show_attention_weights_are_probabilities(model):
    from pytransformer.attention_view import cross_attention
    tok = model.tokenizer
    src = tok.encode("21 Nov. 2026")
    out = model.generate([src], 12)[0]
    p = cross_attention(model, src, out)
    cfg = model.config
    assert p.shape == (cfg.decoder_layers, cfg.num_heads, len(out), len(src))
    assert abs(p.sum(-1) - 1).max() < 1e-9


def test_show_attention_png(capsys, tmp_path):
    png = tmp_path / "att.png"
    try:
        import matplotlib  # noqa: F401
    except ImportError:    # matplotlib is optional: then --png must say how to get it
        rc, _, err = run(capsys, "translate", "--show-attention", "--png", str(png), "21 Nov. 2026")
        assert rc == 2 and "pip install matplotlib" in err
        return
    rc, out, err = run(capsys, "translate", "--show-attention", "--png", str(png), "21 Nov. 2026")
    assert rc == 0 and out == "2026-11-21\n"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_progress_bar_only_on_a_terminal():
    class Tty(io.StringIO):
        def isatty(self):
            return True
    tty, pipe = Tty(), io.StringIO()
    for stream in (tty, pipe):
        bar = ProgressBar(500, stream=stream)
        bar(250, 500)
        bar(500, 500)
        bar.close()
    assert "250/500" in tty.getvalue() and "500/500" in tty.getvalue()
    assert pipe.getvalue() == ""


def test_python_dash_m_end_to_end(tmp_path):
    env = dict(os.environ)     # the subprocess must import the pytransformer these tests import
    package_parent = os.path.dirname(os.path.dirname(os.path.abspath(pytransformer.__file__)))
    env["PYTHONPATH"] = os.pathsep.join([package_parent] + [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p])
    proc = subprocess.run([sys.executable, "-m", "pytransformer", "translate"], input="nov 21 26\n21.11.2026\n",
                          capture_output=True, text=True, cwd=tmp_path, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == "2026-11-21\n2026-11-21\n"


def test_bench_profile_and_report(capsys, tmp_path):
    rc, out, err = run(capsys, "bench", "--profile", "--batch-sizes", "1,2", "--max-new-tokens", "4",
                       "--repeats", "1")
    assert rc == 0, err
    assert out.count("decode step profile") == 2
    for part in ("GEMM (layers)", "output projection", "attention", "softmax", "norms", "Python/other"):
        assert part in out
    report = tmp_path / "bench.md"
    rc, out, err = run(capsys, "bench", "--batch-sizes", "1,2", "--repeats", "1", "--max-new-tokens", "3",
                       "--vs", "torch", "--report", str(report))
    assert rc == 0, err
    table = report.read_text()
    assert "| batch | pytransformer tok/s | PyTorch reference tok/s | ratio |" in table
    assert "ISA path" in table and table.count("\n| ") >= 3
    import json
    data = json.loads((tmp_path / "bench.json").read_text())
    assert [r["batch"] for r in data["results"]] == [1, 2] and data["results"][0]["pytransformer_tok_s"] > 0
    try:
        import matplotlib  # noqa: F401
        assert (tmp_path / "bench.png").stat().st_size > 1000
    except ImportError:
        pass
