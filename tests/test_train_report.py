"""What a run prints: a short step line with a sensible ETA, the reference-curve verdict."""

from __future__ import annotations

import io
import json
import time
from pathlib import Path

from nestkit.train.progress import Progress
from nestkit.train.report import compare_with_reference, reference_file

METRICS = {"train_loss": 3.41234, "masked_accuracy": 0.1523, "context_gain": 0.2134, "learning_rate": 4.1e-3,
           "audio_seconds_per_second": 1234.5, "grad_norm": 1.2, "masked_fraction": 0.3, "data_wait_fraction": 0.01,
           "target_perplexity": 51.2, "skipped_items/total": 0.0, "nonfinite_steps": 0.0, "unigram_loss": 3.6}


def test_the_step_line_fits_100_columns_and_its_eta_ignores_start_up() -> None:
    out = io.StringIO()
    progress = Progress(True, total_steps=1000, live=False, stream=out)
    time.sleep(0.3)  # start-up: model building, first compile
    progress.update(10, METRICS)
    first = out.getvalue().splitlines()[-1]
    assert "eta" not in first  # no pace measured yet: no guess
    progress.update(20, METRICS)
    line = out.getvalue().splitlines()[-1]
    assert len(line) <= 100, line
    assert line.startswith("step 20/1000  loss 3.4123  acc 0.152  gain +0.213  lr 4.10e-03")
    eta_s = progress.eta(20)
    assert eta_s is not None and eta_s < 0.3 * 98  # the pace of steps 10-20, not of the start-up


def test_a_run_is_told_whether_it_tracked_its_reference_curve(tmp_path: Path) -> None:
    recipe = tmp_path / "demo.yaml"
    recipe.write_text("name: x\n")
    assert reference_file(recipe) is None
    ref = tmp_path / "demo.reference.json"
    ref.write_text(json.dumps({"recipe": "demo.yaml", "steps": [100, 200], "val_loss": [3.5, 3.2],
                               "val_unigram_loss": [3.6, 3.6], "val_context_gain": [0.1, 0.4]}))
    assert reference_file(recipe) == ref
    close = {100: {"val_context_gain": 0.12}, 200: {"val_context_gain": 0.37}}
    assert compare_with_reference(ref, close).startswith("tracked demo.reference.json (context gain +0.370 vs +0.400 at step 200")
    far = {100: {"val_context_gain": 0.1}, 200: {"val_context_gain": 0.15}}
    assert compare_with_reference(ref, far).startswith("did NOT track") and "largest gap -0.250 at step 200" in compare_with_reference(ref, far)
    assert compare_with_reference(ref, {150: {"val_context_gain": 0.2}}) is None  # no common step: no verdict


def test_no_verdict_on_the_reference_curve_for_a_run_that_changed_what_it_depends_on(tmp_path: Path) -> None:
    import shutil

    from conftest import ROOT
    from nestkit.recipe import load_recipe
    from nestkit.train.report import reference_verdict

    shutil.copy(ROOT / "recipes" / "nest_demo.yaml", tmp_path / "nest_demo.yaml")
    shutil.copy(ROOT / "recipes" / "nest_demo.reference.json", tmp_path / "nest_demo.reference.json")
    demo = tmp_path / "nest_demo.yaml"
    curve = json.loads((tmp_path / "nest_demo.reference.json").read_text())
    as_shipped = {s: {"val_context_gain": g} for s, g in zip(curve["steps"], curve["val_context_gain"])}
    # how long it runs, where it writes and on what device: the curve still applies
    same = load_recipe(demo, ["trainer.max_steps=500", "exp_manager.exp_dir=/tmp/elsewhere", "trainer.devices=cpu",
                              "trainer.seed=42", "trainer.gradient_clip_val=null", "model.train_ds.num_workers=1"])
    assert reference_verdict(same, as_shipped).startswith("tracked nest_demo.reference.json")  # defaults, 'off' and loaders
    assert reference_verdict(same, as_shipped, world_size=2) == (
        "no verdict: nest_demo.reference.json is the curve of one process, and this run had 2 (a larger batch per step)")
    own_data = load_recipe(demo, ["model.train_ds.manifest_filepath=mine.json", "trainer.seed=3"])
    assert reference_verdict(own_data, as_shipped) == (
        "no verdict: nest_demo.reference.json is the curve of nest_demo.yaml as shipped, and this run changed "
        "model.train_ds.manifest_filepath, trainer.seed")
