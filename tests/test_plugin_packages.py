"""The real plugin packages under plugins/ as a user installs them (`pip install -e plugins/...`):
listed, described and trained with through the real `nestkit` executable."""

from __future__ import annotations

import importlib.metadata
import json
from pathlib import Path

import pytest
import torch
import yaml

import nestkit
import nestkit.data
from conftest import ROOT, run_nestkit

PLUGINS = ROOT / "plugins"
FAST = {"OMP_NUM_THREADS": "1"}
EXPECTED = {
    ("feature_augmentor", "spec_augment"): "nestkit-augment",
    ("augmentor", "room_reverb"): "nestkit-augment",
    ("quantizer", "kmeans"): "nestkit-bestrq-extras",
    ("loss", "label_smoothed_mlm"): "nestkit-bestrq-extras",
}
# A very small model and run: the point is that the plugin components train end to end.
TINY = [
    "trainer.max_steps=3", "trainer.val_check_interval=3", "trainer.limit_val_batches=1",
    "trainer.log_every_n_steps=1", "model.encoder.n_layers=1", "model.encoder.d_model=32",
    "model.encoder.n_heads=2", "model.encoder.subsampling_conv_channels=16",
    "model.train_ds.batch_size=4", "model.validation_ds.batch_size=4",
    "exp_manager.create_tensorboard_logger=false",
]


@pytest.fixture(scope="module", autouse=True)
def _installed() -> None:
    for dist in ("nestkit-augment", "nestkit-bestrq-extras"):
        try:
            importlib.metadata.distribution(dist)
        except importlib.metadata.PackageNotFoundError:
            pytest.fail(f"{dist} is not installed: pip install -e plugins/{dist}")


def test_list_components_names_the_plugin_distributions() -> None:
    result = run_nestkit("list-components", "--json")
    assert result.returncode == 0, result.stderr
    listing = json.loads(result.stdout)
    assert listing["failed_plugins"] == []
    found = {(c["kind"], c["name"]): c for c in listing["components"]}
    for key, provider in EXPECTED.items():
        assert found[key]["provider"] == provider and found[key]["version"] == "0.1.0", found.get(key)


@pytest.mark.parametrize(
    ("kind", "name", "fields"),
    [("feature_augmentor", "spec_augment", ("freq_masks", "time_width", "mask_value")),
     ("augmentor", "room_reverb", ("rt60_min", "rt60_max", "direct_path", "inner")),
     ("quantizer", "kmeans", ("centroids_path", "combine_time_steps", "dist_fn")),
     ("loss", "label_smoothed_mlm", ("label_smoothing", "mask_threshold", "num_decoders"))],
)
def test_describe_shows_plugin_fields(kind: str, name: str, fields: tuple[str, ...]) -> None:
    from typer.testing import CliRunner

    from nestkit.cli.main import app

    # in-process (one registry load for all four); list-components above runs the real executable
    result = CliRunner().invoke(app, ["describe", kind, name], env={"COLUMNS": "200", "NO_COLOR": "1"})
    assert result.exit_code == 0, result.output
    for field in fields:
        assert field in result.output, field
    assert f"provider: {EXPECTED[(kind, name)]} 0.1.0" in result.output


def _trained(exp_dir: Path, recipe_name: str) -> dict:
    """The resolved recipe the run wrote, after checking it ran all 3 steps."""
    written = exp_dir / recipe_name / "recipe.yaml"
    assert written.is_file(), list(exp_dir.rglob("*"))
    return yaml.safe_load(written.read_text())


def test_reverb_recipe_trains(tmp_path: Path) -> None:
    recipe = PLUGINS / "nestkit-augment" / "recipes" / "reverb_demo.yaml"
    result = run_nestkit("train", str(recipe), *TINY, f"exp_manager.exp_dir={tmp_path}", env=FAST)
    assert result.returncode == 0, result.stderr
    assert "step 3/3" in result.stdout and "val_loss" in result.stdout
    augmentor = _trained(tmp_path, "NEST-demo-reverb")["model"]["train_ds"]["batch_augmentor"]
    assert augmentor["name"] == "room_reverb" and augmentor["inner"]["name"] == "multi_speaker_noise"


def test_kmeans_script_then_kmeans_and_label_smoothing_recipe_trains(tmp_path: Path) -> None:
    from nestkit_bestrq_extras.fit_kmeans import main as fit_kmeans_main

    train_manifest = nestkit.data.demo_manifests()[0]
    lines = [json.loads(x) for x in train_manifest.read_text().splitlines()[:12]]
    manifest = tmp_path / "small.json"
    manifest.write_text("\n".join(json.dumps({**x, "audio_filepath": str(train_manifest.parent / x["audio_filepath"])})
                                  for x in lines))
    centroids = tmp_path / "centroids.pt"
    # the script's entry point in-process (python -m runs the same main); the demo recipe's features
    assert fit_kmeans_main([str(manifest), str(centroids), "--num-classes", "16", "--iters", "5"]) == 0
    assert torch.load(centroids, weights_only=True).shape == (16, 80 * 8)

    recipe = PLUGINS / "nestkit-bestrq-extras" / "recipes" / "kmeans_demo.yaml"
    with pytest.raises(nestkit.RecipeError) as missing:
        nestkit.load_recipe(recipe, ["model.quantizer.centroids_path=nowhere.pt"])
    assert str(missing.value) == f"{recipe}: model.quantizer: centroids file 'nowhere.pt' does not exist"
    result = run_nestkit("train", str(recipe), *TINY, "model.num_classes=16",
                         f"model.quantizer.centroids_path={centroids}", f"exp_manager.exp_dir={tmp_path}", env=FAST)
    assert result.returncode == 0, result.stderr
    assert "step 3/3" in result.stdout
    model = _trained(tmp_path, "NEST-demo-kmeans")["model"]
    assert model["quantizer"]["name"] == "kmeans" and model["loss"]["name"] == "label_smoothed_mlm"


def test_spec_augment_recipe_trains(tmp_path: Path) -> None:
    recipe = PLUGINS / "nestkit-augment" / "recipes" / "spec_augment_demo.yaml"
    result = run_nestkit("train", str(recipe), *TINY, f"exp_manager.exp_dir={tmp_path}", env=FAST)
    assert result.returncode == 0, result.stderr
    assert "step 3/3" in result.stdout
    assert _trained(tmp_path, "NEST-demo-specaugment")["model"]["spec_augment"]["name"] == "spec_augment"


def _plugin_recipes() -> list[Path]:
    return sorted(PLUGINS.glob("*/recipes/*.yaml"))


def test_plugin_recipes_validate_against_the_installed_schema() -> None:
    import jsonschema

    from nestkit.plugins import get_registry
    from nestkit.recipe import interpolate, load_raw
    from nestkit.schema import recipe_schema

    validator = jsonschema.Draft202012Validator(recipe_schema(get_registry()))
    recipes = _plugin_recipes()
    assert len(recipes) == 4
    for path in recipes:
        data = interpolate(load_raw(path))
        validator.validate(data)
        if path.name == "reverb_demo.yaml":
            data["model"]["train_ds"]["batch_augmentor"]["rt60"] = 0.5  # a typo'd key is caught
            assert not validator.is_valid(data)


def test_spec_augment_reaches_the_masking_input_in_training_only() -> None:
    recipe = PLUGINS / "nestkit-augment" / "recipes" / "spec_augment_demo.yaml"
    overrides = [o for o in TINY if o.startswith("model.encoder")] + [
        "model.spec_augment.freq_masks=1", "model.spec_augment.freq_width=80", "model.spec_augment.mask_value=123.0"]
    model = nestkit.build_model(recipe, overrides)
    seen: list[torch.Tensor] = []
    model.masking.register_forward_hook(lambda _m, args, _out: seen.append(args[0].clone()))
    audio = torch.randn(2, 16000)
    audio_len = torch.tensor([16000, 12000])
    torch.manual_seed(0)
    model.train()(audio, audio_len, audio.clone(), audio_len.clone())
    model.eval()(audio, audio_len, audio.clone(), audio_len.clone())
    train_in, eval_in = seen
    masked_bins = (train_in[0, :, :100] == 123.0).all(dim=1)  # 16000 samples = 100 valid frames
    assert 0 < int(masked_bins.sum()) <= 80  # a band of up to 80 bins was drawn (width 0 has tiny odds)
    assert not bool((train_in[:, :, 100:] == 123.0).any())  # time padded to a multiple of 16: never masked
    assert not bool((train_in[1, :, 75:] == 123.0).any())  # 12000 samples = 75 valid frames
    assert not bool((eval_in == 123.0).any())
