"""Bad input: conditioning arrays, prompts, latent sizes, step counts, seeds, backends, options."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from l2p.errors import InputError, MissingDependencyError
from l2p.sampling.pipeline import Sampler

from .catalog import Ctx, Skip, case, cli_error, l2p_subprocess, one_line, raises

TEST_SAMPLE_CLI = "tests/sampling/test_sample_cli.py"


def _sample(ctx: Ctx, *extra: str, cond: Path | None = None) -> list[str]:
    return ["sample", str(ctx.bundle), "--conditioning", str(cond or ctx.cond_file()), "--steps", "4",
            "--out", str(ctx.tmp / "out"), *extra]


def _bad_cond(ctx: Ctx, *expect: str, **arrays: np.ndarray) -> str:
    return cli_error(_sample(ctx, cond=ctx.cond_file({**ctx.cond, **arrays}, "bad")), *expect)


# conditioning ---------------------------------------------------------------------------------
@case("conditioning: missing array", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_conditioning")
def cond_missing(ctx: Ctx) -> str:
    path = ctx.cond_file({"encoder_hidden_states": ctx.cond["encoder_hidden_states"]}, "bad")
    return cli_error(_sample(ctx, cond=path), "missing arrays ['pooled_projections']")


@case("conditioning: extra array", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_conditioning")
def cond_extra(ctx: Ctx) -> str:
    return _bad_cond(ctx, "unexpected arrays ['foo']", foo=np.zeros((2, 3), np.float32))


@case("conditioning: misshapen array", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_conditioning")
def cond_shape(ctx: Ctx) -> str:
    return _bad_cond(ctx, "shape [2, 7]", pooled_projections=np.zeros((2, 7), np.float32))


@case("conditioning: wrong rank")
def cond_rank(ctx: Ctx) -> str:
    return _bad_cond(ctx, "shape [2, 256]", encoder_hidden_states=np.zeros((2, 256), np.float32))


@case("conditioning: rows disagree", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_conditioning")
def cond_rows(ctx: Ctx) -> str:
    return _bad_cond(ctx, "rows", pooled_projections=np.zeros((3, 24), np.float32))


@case("conditioning: zero rows")
def cond_empty(ctx: Ctx) -> str:
    return _bad_cond(ctx, "no rows", encoder_hidden_states=np.zeros((0, 8, 32), np.float32),
                     pooled_projections=np.zeros((0, 24), np.float32))


@case("conditioning: NaN values", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_conditioning")
def cond_nan(ctx: Ctx) -> str:
    return _bad_cond(ctx, "NaN", pooled_projections=np.full((2, 24), np.nan, np.float32))


@case("conditioning: Inf values")
def cond_inf(ctx: Ctx) -> str:
    bad = ctx.cond["encoder_hidden_states"].copy()
    bad[1, 3, 5] = -np.inf
    return _bad_cond(ctx, "'encoder_hidden_states' contains NaN or Inf", encoder_hidden_states=bad)


@case("conditioning: integer dtype", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_conditioning")
def cond_int(ctx: Ctx) -> str:
    return _bad_cond(ctx, "dtype int32", pooled_projections=np.zeros((2, 24), np.int32))


@case("conditioning: complex dtype")
def cond_complex(ctx: Ctx) -> str:
    return _bad_cond(ctx, "dtype complex64", pooled_projections=np.zeros((2, 24), np.complex64))


@case("conditioning: pickled object array in the .npz")
def cond_pickled(ctx: Ctx) -> str:
    path = ctx.tmp / "pickled.npz"
    with open(path, "wb") as f:  # np.savez pickles object arrays; l2p must never unpickle them
        np.savez(f, encoder_hidden_states=np.array([{"x": 1}], dtype=object),
                 pooled_projections=ctx.cond["pooled_projections"])
    return cli_error(_sample(ctx, cond=path), "not a readable .npz")


@case("conditioning: not a .npz file", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_conditioning")
def cond_junk(ctx: Ctx) -> str:
    (ctx.tmp / "junk.npz").write_bytes(b"not a zip")
    return cli_error(_sample(ctx, cond=ctx.tmp / "junk.npz"), "not a readable")


# prompts --------------------------------------------------------------------------------------
def tiny_tokenizer(path: Path) -> Path:
    """A word-level ``tokenizer.json`` that appends an end-of-text token ``</s>`` (id 2)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors

    vocab = {"<pad>": 0, "<unk>": 1, "</s>": 2, **{w: i + 3 for i, w in enumerate("a cat on the mat".split())}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 2)])
    tok.save(str(path))
    return path


@case("prompt: longer than the T5 tokenizer limit")
def prompt_too_long(ctx: Ctx) -> str:
    from l2p.sampling.text import Tokenizer

    tok = Tokenizer(tiny_tokenizer(ctx.tmp / "tokenizer.json"), 6, 0, truncate=False, name="text_encoder_2")
    assert tok(["a cat on the mat"]).tolist() == [[3, 4, 5, 6, 7, 2]]  # exactly at the limit: fine
    return raises(InputError, lambda: tok(["a cat on the mat a cat"]), "8 tokens", "at most 6", "shorten")


@case("prompt: longer than the CLIP limit is truncated", outcome="ok")
def prompt_clip_truncates(ctx: Ctx) -> str:
    from l2p.sampling.text import Tokenizer

    tok = Tokenizer(tiny_tokenizer(ctx.tmp / "tokenizer.json"), 4, 0, truncate=True, name="text_encoder")
    ids = tok(["a cat on the mat a cat", "a"])
    assert ids.tolist() == [[3, 4, 5, 2], [3, 2, 0, 0]], ids
    return "CLIP prompts are cut to 4 tokens keeping the end-of-text token, as FluxPipeline does"


@case("prompt: unreadable tokenizer.json")
def prompt_bad_tokenizer(ctx: Ctx) -> str:
    from l2p.errors import ArtifactError
    from l2p.sampling.text import Tokenizer

    (ctx.tmp / "tokenizer.json").write_text('{"model": "nonsense"}')
    return raises(ArtifactError, lambda: Tokenizer(ctx.tmp / "tokenizer.json", 6, 0, False, "text_encoder_2"),
                  "tokenizer", "re-export")


@case("prompt: bundle without text encoders", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_arguments")
def prompt_no_encoders(ctx: Ctx) -> str:
    return cli_error(["sample", str(ctx.bundle), "--prompt", "a cat", "--out", str(ctx.tmp / "o")], "no text encoders")


# sizes, steps, seeds ----------------------------------------------------------------------------
@case("latent size not divisible by the patch size (export 7x8)",
      covered_by="tests/export/test_flux.py::test_bad_latent_size")
def latent_odd(ctx: Ctx) -> str:
    return cli_error(["export", str(ctx.folder), "--out", str(ctx.tmp / "odd"), "--latent-size", "7", "8"],
                     "2x2", "7x8", "even")


@case("initial latents of another size")
def latent_initial(ctx: Ctx) -> str:
    from l2p.atomic import save_npz

    save_npz(ctx.tmp / "lat.npz", initial=np.zeros((2, 12, 16), np.float32))  # a 6x8 latent, packed
    return cli_error(_sample(ctx, "--initial-latents", str(ctx.tmp / "lat.npz")), "[2, 12, 16]", "[2, 16, 16]")


@case("steps 0 / 100000", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_arguments")
def steps_absurd(ctx: Ctx) -> str:
    cli_error(_sample(ctx, "--steps", "0"), "--steps 0", "1..1000")
    return cli_error(_sample(ctx, "--steps", "100000"), "--steps 100000", "1..1000")


@case("calibrate --steps 100000 / --seeds 0")
def calibrate_absurd(ctx: Ctx) -> str:
    base = ["calibrate", str(ctx.bundle), "--conditioning", str(ctx.cond_file()), "--name", "x"]
    cli_error([*base, "--steps", "10", "--full-steps", "3", "--seeds", "0"], "--seeds", "0 is not allowed")
    return cli_error([*base, "--steps", "100000", "--full-steps", "3"], "--steps 100000", "1..1000")


@case("full-step budget 0 / above the step count", covered_by=f"{TEST_SAMPLE_CLI}::test_bad_arguments")
def budget_absurd(ctx: Ctx) -> str:
    cli_error(_sample(ctx, "--steps", "10", "--method", "fora", "--full-steps", "0"), "--full-steps 0")
    return cli_error(_sample(ctx, "--steps", "10", "--method", "fora", "--full-steps", "11"), "--full-steps 11", "1..10")


@case("bench --budgets junk")
def budget_junk(ctx: Ctx) -> str:
    return cli_error(["bench", str(ctx.bundle), "--conditioning", str(ctx.cond_file()), "--budgets", "ten"],
                     "--budgets 'ten'", "10,7")


@case("seed -1 / 2**64")
def seed_absurd(ctx: Ctx) -> str:
    cli_error(_sample(ctx, "--seed", "-1"), "--seed -1")
    return cli_error(_sample(ctx, "--seed", str(2**64)), f"--seed {2**64}", "0..2**63-1")


@case("guidance NaN")
def guidance_nan(ctx: Ctx) -> str:
    return cli_error(_sample(ctx, "--guidance", "nan"), "--guidance nan", "finite")


@case("threads 100000")
def threads_absurd(ctx: Ctx) -> str:
    return cli_error(_sample(ctx, "--threads", "100000"), "--threads 100000", "out of range")


@case("--out is an existing file")
def out_is_file(ctx: Ctx) -> str:
    path = ctx.cond_file()
    return cli_error(["sample", str(ctx.bundle), "--conditioning", str(path), "--steps", "2", "--out", str(path)],
                     "is a file")


# backends ------------------------------------------------------------------------------------
@case("backend: tensorrt not installed")
def backend_tensorrt(ctx: Ctx) -> str:
    try:
        import tensorrt  # noqa: F401
        raise Skip("tensorrt is installed here")
    except ImportError:
        pass
    raises(MissingDependencyError, lambda: Sampler(ctx.bundle, backend="tensorrt").engine("transformer"), "l2p[tensorrt]")
    return cli_error(_sample(ctx, "--backend", "tensorrt"), "tensorrt", "pip install 'l2p[tensorrt]'")


@case("backend: onnxruntime-cuda not available")
def backend_cuda(ctx: Ctx) -> str:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        raise Skip("onnxruntime-gpu with CUDA is installed here")
    raises(MissingDependencyError, lambda: Sampler(ctx.bundle, backend="onnxruntime-cuda").engine("transformer"),
           "l2p[gpu]")
    return cli_error(_sample(ctx, "--backend", "onnxruntime-cuda"), "CUDAExecutionProvider", "pip install 'l2p[gpu]'")


@case("backend: unknown name")
def backend_unknown(ctx: Ctx) -> str:
    raises(InputError, lambda: Sampler(ctx.bundle, backend="magic").engine("transformer"), "unknown backend")
    return cli_error(_sample(ctx, "--backend", "magic"), "unknown backend 'magic'", "onnxruntime")


@case("exit status and stderr of a real process (python -m l2p.cli)")
def subprocess_exit(ctx: Ctx) -> str:
    r = l2p_subprocess(*_sample(ctx, "--backend", "magic"))
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout)
    msg = one_line(r.stderr, "error: unknown backend")
    r = l2p_subprocess("calibrate", "--help")  # subcommands registered by cli_more exist under -m too
    assert r.returncode == 0 and "--full-steps" in r.stdout, r.stderr
    return msg.removeprefix("error: ")


@case("--debug shows the traceback", outcome="ok")
def debug_traceback(ctx: Ctx) -> str:
    from l2p.cli import main

    try:
        main(["--debug", *_sample(ctx, "--backend", "magic")])
    except InputError as e:
        return f"--debug re-raises the InputError ({e})"
    raise AssertionError("--debug did not raise")
