"""`nestkit bench` through the real executable, and the pieces it is built from."""

from __future__ import annotations

import json
import math

import pytest
import torch

import nestkit
import nestkit.bench as nb
from nestkit.devices import resolve_device
from conftest import ROOT, run_nestkit, run_python

DEMO = ROOT / "recipes" / "nest_demo.yaml"

SMALL = ("--device", "cpu", "--batch", "2", "--steps", "2", "--warmup", "1", "--min-sec", "1", "--max-sec", "2", "--threads", "1")


@pytest.fixture(scope="module")
def demo_report() -> dict:
    proc = run_nestkit("bench", "recipes/nest_demo.yaml", *SMALL, "--peak-tflops", "0.5", timeout=240)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


def test_bench_cli_prints_a_consistent_json_report(demo_report: dict) -> None:
    r = demo_report
    assert (r["device"], r["batch"], r["steps"], r["precision"], r["compile"]) == ("cpu", 2, 2, "bf16-mixed", False)
    t = r["step_time_s"]
    assert 0 < t["min"] <= t["median"] <= t["max"]
    assert 2 * 1.0 <= r["audio_seconds_per_batch"] <= 2 * 2.0
    assert math.isclose(r["audio_seconds_per_second"], r["audio_seconds_per_batch"] / t["median"], rel_tol=0.02)
    assert r["flops_per_step"] > 0
    assert math.isclose(r["model_tflops"], r["flops_per_step"] / t["median"] / 1e12, rel_tol=0.02, abs_tol=1e-4)
    assert r["peak_tflops"] == 0.5 and r["peak_tflops_source"] == "--peak-tflops"
    assert math.isclose(r["mfu"], r["model_tflops"] / 0.5, rel_tol=0.02, abs_tol=1e-4)
    assert r["peak_memory_kind"] == "process_peak_rss" and r["peak_memory_mb"] > 0
    assert r["host_syncs_in_step"] == []  # the model's training step never waits on the device
    assert set(r["components"]) == {"preprocessor", "quantizer", "masking", "encoder", "decoder+loss"}
    assert r["components"]["encoder"]["backward_ms"] > 0
    assert r["components"]["preprocessor"]["backward_ms"] is None
    assert math.isfinite(r["final_loss"])
    assert r["checkpointed_layers"] == 0
    model = nestkit.build_model(DEMO)
    assert r["parameters"] == sum(p.numel() for p in model.parameters())
    assert r["trainable_parameters"] == sum(p.numel() for p in model.parameters() if p.requires_grad) < r["parameters"]


def test_bench_cli_user_errors_are_one_line() -> None:
    proc = run_nestkit("bench", "recipes/nest_demo.yaml", "--device", "cpu", "--precision", "fp8", timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--precision" in proc.stderr
    if not torch.cuda.is_available():
        proc = run_nestkit("bench", "recipes/nest_demo.yaml", "--device", "cuda", timeout=120)
        assert proc.returncode == 2
        assert proc.stderr.strip() == "error: --device cuda: no CUDA GPU is available here (use --device cpu)"


def test_synthetic_batch_is_seeded_and_zero_padded() -> None:
    cpu = torch.device("cpu")
    a, seconds = nb.synthetic_batch(4, 0.5, 1.0, 16000, seed=3, device=cpu)
    b, _ = nb.synthetic_batch(4, 0.5, 1.0, 16000, seed=3, device=cpu)
    c, _ = nb.synthetic_batch(4, 0.5, 1.0, 16000, seed=4, device=cpu)
    assert torch.equal(a.audio, b.audio) and torch.equal(a.noisy_audio, b.noisy_audio)
    assert not torch.equal(a.audio_len, c.audio_len)
    assert int(a.audio_len.min()) >= 8000 and int(a.audio_len.max()) <= 16000
    assert a.audio.shape == (4, int(a.audio_len.max()))
    assert math.isclose(seconds, float(a.audio_len.sum()) / 16000)
    pad = torch.arange(a.audio.shape[1])[None, :] >= a.audio_len[:, None]
    assert bool((a.audio[pad] == 0).all()) and bool((a.noisy_audio[pad] == 0).all())
    inside = ~pad
    assert float((a.noisy_audio - a.audio)[inside].abs().mean()) > 0  # noise is mixed in
    with pytest.raises(nb.NestkitError):
        nb.synthetic_batch(2, 3.0, 1.0, 16000, seed=0, device=cpu)


def test_flop_count_of_a_linear_layer_matches_the_formula() -> None:
    layer = torch.nn.Linear(32, 16, bias=False)
    x = torch.randn(8, 32, requires_grad=True)
    # forward 2*B*in*out; backward: input gradient and weight gradient, each the same again
    assert nb.count_flops(lambda: layer(x).sum().backward()) == 3 * 2 * 8 * 32 * 16


def test_host_sync_detector_finds_reads_and_data_dependent_shapes() -> None:
    cpu = torch.device("cpu")
    x = torch.randn(10)
    assert nb.host_syncs(lambda: (x * 2).sum(), cpu) == []
    assert nb.host_syncs(lambda: (x * 2).sum().item(), cpu) == ["_local_scalar_dense"]
    assert nb.host_syncs(lambda: x[x > 0], cpu) != []


def test_peak_tflops_and_device_resolution() -> None:
    cpu = torch.device("cpu")
    assert nb.peak_tflops_for(cpu, "bf16-mixed", 123.0) == (123.0, "--peak-tflops")
    assert nb.peak_tflops_for(cpu, "bf16-mixed", None)[0] is None
    assert resolve_device("cpu") == cpu
    with pytest.raises(nb.NestkitError, match="unknown device"):
        resolve_device("gpu0")


def test_padding_waste_benchmark_bucketing_beats_random_batches() -> None:
    proc = run_python("benchmarks/padding_waste.py", "--utterances", "3000", "--budgets", "200", "--json", timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = json.loads(proc.stdout)
    assert {r["distribution"] for r in rows} == {"demo", "lognormal_2_20s"}
    for row in rows:
        assert 0 <= row["bucketed_padding"] < row["random_padding"] < 1


def test_sdpa_bias_attention_is_as_accurate_as_the_explicit_formula_in_bf16() -> None:
    """Outputs and every gradient of the fused path stay within 1.5x the explicit path's bf16 error
    (NeMo PR #15714: a bias path with bad gradients made training diverge)."""
    proc = run_python("benchmarks/attention_precision.py", "--batch", "3", "--frames", "48", "--dtype", "bfloat16",
                      timeout=120)
    assert proc.returncode == 0, proc.stderr
    rows = [json.loads(line) for line in proc.stdout.splitlines()]
    assert {r["quantity"] for r in rows} >= {"output", "grad x", "grad pos_bias_u", "grad pos_bias_v", "grad linear_pos.weight"}
    for row in rows:
        assert row["explicit"] < 0.02 and row["sdpa_bias"] < 1.5 * row["explicit"], row


def _activation_memory(*args: str) -> dict:
    proc = run_python("benchmarks/activation_memory.py", "--recipe", "recipes/nest_demo.yaml", "--seconds", "2",
                      "--precision", "32", "--top", "30", *args, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.fixture(scope="module")
def projected_memory() -> dict:
    return _activation_memory("--batch", "2", "--project-batch", "4")


def test_activation_memory_projection_matches_a_direct_measurement(projected_memory: dict) -> None:
    """Saved activations fitted at batches 1 and 2 predict batch 4 as measured there."""
    projected = projected_memory
    measured = _activation_memory("--batch", "4", "--project-batch", "4")
    assert projected["saved_activations_mib"]["batch_1"] > 0
    assert projected["saved_activations_mib"]["batch_2"] > projected["saved_activations_mib"]["batch_1"]
    want = measured["saved_activations_mib"]["batch_4"]
    got = projected["saved_activations_mib"]["batch_4_projected"]
    assert abs(got - want) <= 0.02 * want + 0.2, (got, want)
    state = sum(projected["model_state_mib"].values())
    assert abs(projected["projected_floor_mib"] - (got + state)) <= 0.2
    assert next(iter(projected["by_module_projected_mib"])).startswith("encoder.")


def test_bench_with_activation_checkpointing_reports_the_blocks() -> None:
    proc = run_nestkit("bench", "recipes/nest_demo.yaml", *SMALL, "--no-components", "--activation-checkpointing", "-1", timeout=240)
    assert proc.returncode == 0, proc.stderr
    r = json.loads(proc.stdout)
    assert r["checkpointed_layers"] == len(nestkit.build_model(DEMO).encoder.layers) > 0
    assert math.isfinite(r["final_loss"])


def test_activation_memory_counts_checkpointed_blocks_by_their_inputs(projected_memory: dict) -> None:
    plain = projected_memory
    kept = _activation_memory("--batch", "2", "--project-batch", "4", "--activation-checkpointing", "-1")
    assert kept["checkpointed_layers"] > 0 == plain["checkpointed_layers"]
    assert kept["saved_activations_mib"]["batch_4_projected"] < plain["saved_activations_mib"]["batch_4_projected"]
    assert any(k.endswith("(checkpoint inputs)") for k in kept["by_module_projected_mib"])
