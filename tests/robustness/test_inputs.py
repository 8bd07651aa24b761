"""Bad input: conditioning arrays, prompts, latent sizes, step counts, seeds, backends, options."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from l2p.errors import InputError, MissingDependencyError
from l2p.sampling.pipeline import Sampler

from .helpers import Ctx, cli_error, l2p_subprocess, one_line, raises


def _sample(ctx: Ctx, *extra: str, cond: Path | None = None) -> list[str]:
    return ["sample", str(ctx.bundle), "--conditioning", str(cond or ctx.cond_file()), "--steps", "4",
            "--out", str(ctx.tmp / "out"), *extra]


def _inf_at_one_value(ctx: Ctx) -> dict[str, np.ndarray]:
    bad = ctx.cond["encoder_hidden_states"].copy()
    bad[1, 3, 5] = -np.inf
    return {"encoder_hidden_states": bad}


# conditioning ---------------------------------------------------------------------------------
#: id -> (the arrays to replace in the good conditioning, what the one-line error must hold)
BAD_ARRAYS: dict[str, tuple[Callable[[Ctx], dict[str, np.ndarray]], tuple[str, ...]]] = {
    "extra-array": (lambda c: {"foo": np.zeros((2, 3), np.float32)}, ("unexpected arrays ['foo']",)),
    "misshapen": (lambda c: {"pooled_projections": np.zeros((2, 7), np.float32)}, ("shape [2, 7]",)),
    "wrong-rank": (lambda c: {"encoder_hidden_states": np.zeros((2, 256), np.float32)}, ("shape [2, 256]",)),
    "rows-disagree": (lambda c: {"pooled_projections": np.zeros((3, 24), np.float32)}, ("rows",)),
    "zero-rows": (lambda c: {"encoder_hidden_states": np.zeros((0, 8, 32), np.float32),
                             "pooled_projections": np.zeros((0, 24), np.float32)}, ("no rows",)),
    "nan-values": (lambda c: {"pooled_projections": np.full((2, 24), np.nan, np.float32)}, ("NaN",)),
    "inf-value": (_inf_at_one_value, ("'encoder_hidden_states' contains NaN or Inf",)),
    "integer-dtype": (lambda c: {"pooled_projections": np.zeros((2, 24), np.int32)}, ("dtype int32",)),
    "complex-dtype": (lambda c: {"pooled_projections": np.zeros((2, 24), np.complex64)}, ("dtype complex64",)),
}


@pytest.mark.parametrize("bad", BAD_ARRAYS)
def test_conditioning_bad_array(ctx: Ctx, answer: Callable[..., None], bad: str) -> None:
    arrays, expect = BAD_ARRAYS[bad]
    answer(cli_error(_sample(ctx, cond=ctx.cond_file({**ctx.cond, **arrays(ctx)}, "bad")), *expect))


def test_conditioning_missing_array(ctx: Ctx, answer: Callable[..., None]) -> None:
    path = ctx.cond_file({"encoder_hidden_states": ctx.cond["encoder_hidden_states"]}, "bad")
    answer(cli_error(_sample(ctx, cond=path), "missing arrays ['pooled_projections']"))


def test_conditioning_pickled_object_array(ctx: Ctx, answer: Callable[..., None]) -> None:
    path = ctx.tmp / "pickled.npz"
    with open(path, "wb") as f:  # np.savez pickles object arrays; l2p must never unpickle them
        np.savez(f, encoder_hidden_states=np.array([{"x": 1}], dtype=object),
                 pooled_projections=ctx.cond["pooled_projections"])
    answer(cli_error(_sample(ctx, cond=path), "not a readable .npz"))


def test_conditioning_not_an_npz(ctx: Ctx, answer: Callable[..., None]) -> None:
    (ctx.tmp / "junk.npz").write_bytes(b"not a zip")
    answer(cli_error(_sample(ctx, cond=ctx.tmp / "junk.npz"), "not a readable"))


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


def test_prompt_longer_than_the_t5_limit(ctx: Ctx, answer: Callable[..., None]) -> None:
    from l2p.sampling.text import Tokenizer

    tok = Tokenizer(tiny_tokenizer(ctx.tmp / "tokenizer.json"), 6, 0, truncate=False, name="text_encoder_2")
    assert tok(["a cat on the mat"]).tolist() == [[3, 4, 5, 6, 7, 2]]  # exactly at the limit: fine
    answer(raises(InputError, lambda: tok(["a cat on the mat a cat"]), "8 tokens", "at most 6", "shorten"))


def test_prompt_longer_than_the_clip_limit_is_truncated(ctx: Ctx, answer: Callable[..., None]) -> None:
    from l2p.sampling.text import Tokenizer

    tok = Tokenizer(tiny_tokenizer(ctx.tmp / "tokenizer.json"), 4, 0, truncate=True, name="text_encoder")
    ids = tok(["a cat on the mat a cat", "a"])
    assert ids.tolist() == [[3, 4, 5, 2], [3, 2, 0, 0]], ids
    answer("CLIP prompts are cut to 4 tokens keeping the end-of-text token, as FluxPipeline does", outcome="ok")


def test_prompt_unreadable_tokenizer(ctx: Ctx, answer: Callable[..., None]) -> None:
    from l2p.errors import ArtifactError
    from l2p.sampling.text import Tokenizer

    (ctx.tmp / "tokenizer.json").write_text('{"model": "nonsense"}')
    answer(raises(ArtifactError, lambda: Tokenizer(ctx.tmp / "tokenizer.json", 6, 0, False, "text_encoder_2"),
                  "tokenizer", "re-export"))


def test_prompt_bundle_without_text_encoders(ctx: Ctx, answer: Callable[..., None]) -> None:
    answer(cli_error(["sample", str(ctx.bundle), "--prompt", "a cat", "--out", str(ctx.tmp / "o")],
                     "no text encoders"))


# sizes, steps, seeds, options -----------------------------------------------------------------
def test_latent_size_not_divisible_by_the_patch_size(ctx: Ctx, answer: Callable[..., None]) -> None:
    answer(cli_error(["export", str(ctx.folder), "--out", str(ctx.tmp / "odd"), "--latent-size", "7", "8"],
                     "2x2", "7x8", "even"))


def test_initial_latents_of_another_size(ctx: Ctx, answer: Callable[..., None]) -> None:
    from l2p.atomic import save_npz

    save_npz(ctx.tmp / "lat.npz", initial=np.zeros((2, 12, 16), np.float32))  # a 6x8 latent, packed
    answer(cli_error(_sample(ctx, "--initial-latents", str(ctx.tmp / "lat.npz")), "[2, 12, 16]", "[2, 16, 16]"))


#: id -> (extra ``l2p sample`` arguments, what the one-line error must hold)
BAD_SAMPLE_ARGS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "steps-0": (("--steps", "0"), ("--steps 0", "1..1000")),
    "steps-100000": (("--steps", "100000"), ("--steps 100000", "1..1000")),
    "full-steps-0": (("--steps", "10", "--method", "fora", "--full-steps", "0"), ("--full-steps 0",)),
    "full-steps-above-steps": (("--steps", "10", "--method", "fora", "--full-steps", "11"),
                               ("--full-steps 11", "1..10")),
    "seed-negative": (("--seed", "-1"), ("--seed -1",)),
    "seed-2**64": (("--seed", str(2**64)), (f"--seed {2**64}", "0..2**63-1")),
    "guidance-nan": (("--guidance", "nan"), ("--guidance nan", "finite")),
    "threads-100000": (("--threads", "100000"), ("--threads 100000", "out of range")),
}


@pytest.mark.parametrize("bad", BAD_SAMPLE_ARGS)
def test_sample_bad_argument(ctx: Ctx, answer: Callable[..., None], bad: str) -> None:
    extra, expect = BAD_SAMPLE_ARGS[bad]
    answer(cli_error(_sample(ctx, *extra), *expect))


def test_calibrate_absurd_steps_and_seeds(ctx: Ctx, answer: Callable[..., None]) -> None:
    base = ["calibrate", str(ctx.bundle), "--conditioning", str(ctx.cond_file()), "--name", "x"]
    cli_error([*base, "--steps", "10", "--full-steps", "3", "--seeds", "0"], "--seeds 0")
    answer(cli_error([*base, "--steps", "100000", "--full-steps", "3"], "--steps 100000", "1..1000"))


def test_bench_budgets_junk(ctx: Ctx, answer: Callable[..., None]) -> None:
    answer(cli_error(["bench", str(ctx.bundle), "--conditioning", str(ctx.cond_file()), "--budgets", "ten"],
                     "--budgets 'ten'", "10,7"))


def test_out_is_an_existing_file(ctx: Ctx, answer: Callable[..., None]) -> None:
    path = ctx.cond_file()
    answer(cli_error(["sample", str(ctx.bundle), "--conditioning", str(path), "--steps", "2", "--out", str(path)],
                     "is a file"))


# backends ------------------------------------------------------------------------------------
def test_backend_tensorrt_not_installed(ctx: Ctx, answer: Callable[..., None]) -> None:
    try:
        import tensorrt  # noqa: F401

        pytest.skip("tensorrt is installed here")
    except ImportError:
        pass
    raises(MissingDependencyError, lambda: Sampler(ctx.bundle, backend="tensorrt").engine("transformer"),
           "l2p[tensorrt]")
    answer(cli_error(_sample(ctx, "--backend", "tensorrt"), "tensorrt", "pip install 'l2p[tensorrt]'"))


def test_backend_onnxruntime_cuda_not_available(ctx: Ctx, answer: Callable[..., None]) -> None:
    import onnxruntime

    if "CUDAExecutionProvider" in onnxruntime.get_available_providers():
        pytest.skip("onnxruntime-gpu with CUDA is installed here")
    raises(MissingDependencyError, lambda: Sampler(ctx.bundle, backend="onnxruntime-cuda").engine("transformer"),
           "l2p[gpu]")
    answer(cli_error(_sample(ctx, "--backend", "onnxruntime-cuda"), "CUDAExecutionProvider", "pip install 'l2p[gpu]'"))


def test_backend_unknown_name(ctx: Ctx, answer: Callable[..., None]) -> None:
    raises(InputError, lambda: Sampler(ctx.bundle, backend="magic").engine("transformer"), "unknown backend")
    answer(cli_error(_sample(ctx, "--backend", "magic"), "unknown backend 'magic'", "onnxruntime"))


def test_exit_status_and_stderr_of_a_real_process(ctx: Ctx, answer: Callable[..., None]) -> None:
    r = l2p_subprocess(*_sample(ctx, "--backend", "magic"))
    assert r.returncode == 2 and r.stdout == "", (r.returncode, r.stdout)
    msg = one_line(r.stderr, "error: unknown backend")
    r = l2p_subprocess("calibrate", "--help")  # every subcommand exists under -m too
    assert r.returncode == 0 and "--full-steps" in r.stdout, r.stderr
    answer(msg.removeprefix("error: "))


def test_debug_shows_the_traceback(ctx: Ctx, answer: Callable[..., None]) -> None:
    from l2p.cli import main

    with pytest.raises(InputError) as e:
        main(["--debug", *_sample(ctx, "--backend", "magic")])
    answer(f"--debug re-raises the InputError ({e.value})", outcome="ok")
