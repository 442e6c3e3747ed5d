"""Plugin authors' side, through the real executable with two pip-installed plugin packages written
against the public API only (tests/plugins/tiny_lstm: an encoder without optional capabilities;
tests/plugins/clash: an encoder registered under the built-in name fast_conformer):
swapping a component from the command line, one-line errors from plugin code, name clashes."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import jsonschema
import pytest
import yaml

import nestkit
from _train_recipe import tiny_recipe
from conftest import ROOT, plugins_env, run_nestkit
from nestkit import plugins
from nestkit.data import demo_manifests
from nestkit.errors import RecipeError
from nestkit.plugin_errors import crash_line
from nestkit.plugins import get_registry, load_registry
from nestkit.recipe import interpolate, load_recipe

CLASH_WARNING = ("warning: nestkit-clash also registers encoder 'fast_conformer': the bare name means nestkit's; "
                 "write 'nestkit-clash:fast_conformer' for nestkit-clash's")
# what tiny_lstm's config does not accept of the tiny recipe's fast_conformer section
SWAP_NOTE = ("note: model.encoder.name=tiny_lstm: dropped n_heads, subsampling_conv_channels, conv_kernel_size, "
             "dropout_pre_encoder, dropout_emb (not fields of tiny_lstm)")


def with_plugins(site: Path, *args: str, clash: bool = False) -> subprocess.CompletedProcess[str]:
    return run_nestkit(*args, env={**plugins_env(site, "tiny_lstm", *(["clash"] if clash else [])), "OMP_NUM_THREADS": "1"})


def import_plugins(monkeypatch: pytest.MonkeyPatch, site: Path) -> None:
    """This process sees tiny_lstm and clash of ``site``, as ``with_plugins(..., clash=True)`` does."""
    for name, value in plugins_env(site, "tiny_lstm", "clash").items():
        monkeypatch.setenv(name, value)
    monkeypatch.syspath_prepend(str(site))


def lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def recipe(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny recipe, its token grouping read from the encoder: ``${model.encoder.subsampling_factor}``,
    a key its encoder section does not write (the component's default is meant)."""
    folder = tmp_path_factory.mktemp("swap")
    data = tiny_recipe(folder / "exp", max_steps=3, val_check_interval=3, limit_val_batches=1, log_every_n_steps=1)
    data["model"]["quantizer"]["combine_time_steps"] = "${model.encoder.subsampling_factor}"
    data["model"]["loss"]["combine_time_steps"] = "${model.encoder.subsampling_factor}"
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


@pytest.fixture(scope="module")
def swap_run(plugin_site: Path, recipe: Path) -> tuple[subprocess.CompletedProcess[str], Path]:
    """The one training run: three steps of tiny_lstm, swapped in on the command line; its folder."""
    result = with_plugins(plugin_site, "train", str(recipe), "model.encoder.name=tiny_lstm", "model.encoder.hidden_size=32")
    return result, recipe.parent / "exp" / "tiny"


def test_swapping_the_encoder_on_the_command_line_trains_a_plugin_without_capabilities(
    swap_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    result, folder = swap_run
    assert result.returncode == 0, result.stderr[-3000:]
    assert lines(result.stderr)[0] == SWAP_NOTE
    assert re.search(r"^ +steps +3$", result.stdout, flags=re.M), result.stdout
    resolved = yaml.safe_load((folder / "recipe.yaml").read_text())["model"]
    assert resolved["encoder"] == {"name": "tiny_lstm", "feat_in": 40, "n_layers": 1, "d_model": 32, "dropout": 0.0,
                                   "hidden_size": 32}
    # tiny_lstm's default subsampling_factor (4), not fast_conformer's (8)
    assert resolved["quantizer"]["combine_time_steps"] == 4 and resolved["loss"]["combine_time_steps"] == 4
    assert (folder / "checkpoints" / "last.ckpt").exists()


def test_what_the_plugin_encoder_cannot_do_is_one_line(
    plugin_site: Path, recipe: Path, swap_run: tuple[subprocess.CompletedProcess[str], Path],
) -> None:
    checkpoint = swap_run[1] / "checkpoints" / "last.ckpt"
    extract = with_plugins(plugin_site, "extract", str(checkpoint), str(demo_manifests()[1]), str(recipe.parent / "feats"), "--layer", "0")
    assert extract.returncode == 2, extract.stderr
    [line] = lines(extract.stderr)
    assert line.startswith("error: ") and "tiny_lstm" in line and "--layer" in line and "forward_layers" in line, line
    assert not (recipe.parent / "feats").exists()

    post_conv = with_plugins(plugin_site, "validate", "-q", str(recipe), "model.encoder.name=tiny_lstm", "model.mask_position=post_conv")
    assert post_conv.returncode == 2, post_conv.stderr
    assert lines(post_conv.stderr)[0] == SWAP_NOTE
    [line] = lines(post_conv.stderr)[1:]
    assert line.startswith(f"error: {recipe}: model.encoder") and "tiny_lstm" in line and "post_conv" in line, line
    assert "subsample" in line, line


def test_a_plugin_refusing_its_settings_is_one_line_and_a_run_leaves_no_folder(plugin_site: Path, recipe: Path, tmp_path: Path) -> None:
    expected = (f"error: {recipe}: model.encoder (nestkit-tiny-lstm:tiny_lstm): "
                "hidden_size (16) must be at least d_model (32)")
    swap = ["model.encoder.name=tiny_lstm", "model.encoder.hidden_size=16", f"exp_manager.exp_dir={tmp_path / 'exp'}"]
    validate = with_plugins(plugin_site, "validate", "-q", str(recipe), *swap)
    assert validate.returncode == 2
    assert lines(validate.stderr) == [SWAP_NOTE, expected]
    train = with_plugins(plugin_site, "train", str(recipe), *swap, clash=True)  # the clash warning comes first, the rest alike
    assert train.returncode == 2
    assert lines(train.stderr) == [CLASH_WARNING, SWAP_NOTE, expected]
    assert not (tmp_path / "exp").exists()


def test_a_plugin_bug_is_one_line_naming_the_plugin(plugin_site: Path, recipe: Path) -> None:
    args = ["validate", "-q", str(recipe), "model.encoder.name=tiny_lstm", "model.encoder.init=xavier"]
    result = with_plugins(plugin_site, *args)
    assert result.returncode == 1
    assert lines(result.stderr) == [SWAP_NOTE, (
        f"error: {recipe}: model.encoder (nestkit-tiny-lstm:tiny_lstm): KeyError: 'xavier' "
        "(a bug in nestkit-tiny-lstm? rerun with --debug for the traceback)")]


def test_a_plugin_crash_names_the_plugin_and_where(plugin_site: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Plugin code failing after it was built (a forward pass in training) is one line too: what the
    command prints instead of the traceback; failing while it is built, the error's cause is the traceback."""
    import torch

    import_plugins(monkeypatch, plugin_site)
    registry = load_registry()
    encoder = registry.build("encoder", {"name": "tiny_lstm", "feat_in": 8, "d_model": 16})
    with pytest.raises(RuntimeError) as caught:
        encoder(torch.zeros(2, 5, 16), torch.tensor([16, 12]))  # 5 feature channels, not 8
    line = crash_line(caught.value, registry)
    assert line is not None and line.startswith("error: plugin nestkit-tiny-lstm raised RuntimeError: "), line
    assert "(nestkit_tiny_lstm, line " in line and line.endswith("; rerun with --debug for the traceback")
    assert crash_line(RuntimeError("elsewhere"), registry) is None
    with pytest.raises(RecipeError) as built:  # while building: --debug prints the cause's traceback
        registry.build("encoder", {"name": "tiny_lstm", "init": "xavier"}, key="encoder")
    assert isinstance(built.value.__cause__, KeyError) and built.value.exit_code == 1


def test_a_plugin_reusing_a_builtin_name_breaks_no_shipped_recipe(plugin_site: Path) -> None:
    demo = with_plugins(plugin_site, "validate", "-q", "--no-params", "recipes/nest_demo.yaml", clash=True)
    assert demo.returncode == 0, demo.stderr
    assert lines(demo.stderr) == [CLASH_WARNING]

    schema = with_plugins(plugin_site, "schema", clash=True)
    assert schema.returncode == 0 and lines(schema.stderr) == [CLASH_WARNING]
    schema = json.loads(schema.stdout)
    validator = jsonschema.Draft202012Validator(schema)
    data = load_recipe(ROOT / "recipes" / "nest_demo.yaml").data
    assert validator.is_valid(data)
    data["model"]["encoder"]["name"] = "nestkit:fast_conformer"
    assert validator.is_valid(data)  # was checked against the plugin's definition, which has no n_heads
    data["model"]["encoder"]["name"] = "nestkit-clash:fast_conformer"
    assert not validator.is_valid(data)
    data["model"]["encoder"] = {"name": "nestkit-clash:fast_conformer", "feat_in": 80, "d_model": 96}
    assert validator.is_valid(data)
    names = {key: schema["$defs"][key]["properties"]["name"]["enum"] for key in schema["$defs"] if key.endswith(":fast_conformer")}
    assert names == {"encoder.nestkit:fast_conformer": ["fast_conformer", "nestkit:fast_conformer"],
                     "encoder.nestkit-clash:fast_conformer": ["nestkit-clash:fast_conformer"]}


def test_a_recipe_picks_the_clashing_plugin_by_provider_and_switches_to_its_fields(
    plugin_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """How train and describe resolve names (through the registry, as validate does): the bare name is
    the built-in, ``provider:name`` the plugin, and switching to it keeps the keys its config has."""
    import_plugins(monkeypatch, plugin_site)
    registry = load_registry()
    demo = ROOT / "recipes" / "nest_demo.yaml"
    assert load_recipe(demo, registry=registry).data["model"]["encoder"]["n_heads"] == 4  # the built-in's field
    assert registry.get("encoder", "fast_conformer").provider == "nestkit"
    notes: list[str] = []
    swapped = load_recipe(demo, ["model.encoder.name=nestkit-clash:fast_conformer"], registry=registry, notes=notes)
    assert swapped.data["model"]["encoder"] == {"name": "nestkit-clash:fast_conformer", "feat_in": 80, "d_model": 96,
                                                "subsampling_factor": 8}
    assert swapped.notes == notes and len(notes) == 1
    assert notes[0].startswith("model.encoder.name=nestkit-clash:fast_conformer: dropped feat_out, ")
    assert notes[0].endswith(", dropout_att, stochastic_depth_drop_prob, stochastic_depth_mode, stochastic_depth_start_layer "
                             "(not fields of nestkit-clash:fast_conformer)")


def test_the_model_checks_a_plugin_component_against_its_defaults_too(
    plugin_site: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """tiny_lstm subsamples by 4 unless told otherwise: a loss that groups 8 frames per token
    would score misaligned targets, so the recipe is refused, as it is for the built-in encoder."""
    import_plugins(monkeypatch, plugin_site)
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(tiny_recipe(tmp_path / "exp")))  # writes combine_time_steps: 8 for both
    registry = load_registry()
    with pytest.raises(RecipeError) as caught:
        load_recipe(path, ["model.encoder.name=tiny_lstm"], registry=registry, notes=[])
    assert str(caught.value).splitlines() == [
        f"{path}: model: quantizer.combine_time_steps (8) must equal encoder.subsampling_factor (4)"]
    aligned = ["model.encoder.name=tiny_lstm", "model.quantizer.combine_time_steps=4", "model.loss.combine_time_steps=4"]
    assert load_recipe(path, aligned, registry=registry, notes=[]).data["model"]["encoder"]["name"] == "tiny_lstm"


def test_interpolation_reads_the_default_of_a_key_the_recipe_does_not_write() -> None:
    data = {"model": {"encoder": {"name": "fast_conformer"}, "optim": {"name": "adamw", "sched": {"name": "noam"}},
                      "tokens": "${model.encoder.subsampling_factor}", "books": "${model.num_books}",
                      "floor": "${model.optim.sched.min_lr}"},
            "trainer": {"keep": "${exp_manager.checkpoint_callback_params.save_top_k}"}}
    resolved = interpolate(data, get_registry())
    assert {k: resolved["model"][k] for k in ("tokens", "books", "floor")} == {"tokens": 8, "books": 1, "floor": 0.0}
    assert resolved["trainer"]["keep"] == 1
    with pytest.raises(RecipeError, match=r"model.x: '\$\{model.encoder.n_head\}' refers to a key that does not exist"):
        interpolate({"model": {"encoder": {"name": "fast_conformer"}, "x": "${model.encoder.n_head}"}}, get_registry())
    with pytest.raises(RecipeError, match="refers to a key that does not exist"):
        interpolate(data)  # no registry, no defaults


def test_switching_a_component_by_override_keeps_the_keys_it_accepts() -> None:
    demo = ROOT / "recipes" / "nest_demo.yaml"
    notes: list[str] = []
    recipe = load_recipe(demo, ["model.optim.name=sgd", "model.encoder.name=nestkit:fast_conformer"], notes=notes)
    assert notes == ["model.optim.name=sgd: dropped betas (not fields of sgd)"]
    assert recipe.data["model"]["optim"]["sched"]["name"] == "noam"  # the scheduler section stays
    assert recipe.data["model"]["encoder"]["n_heads"] == 4  # the same component, written with its provider
    with pytest.raises(RecipeError, match=r"model.encoder.name: unknown encoder 'fast_conformr'; did you mean 'fast_conformer'"):
        load_recipe(demo, ["model.encoder.name=fast_conformr"], notes=notes)
    assert len(notes) == 1  # an unknown name drops nothing: validation says what is wrong


def test_plugin_failures_lists_what_failed_to_load(monkeypatch: pytest.MonkeyPatch) -> None:
    from test_core_plugins import _entry_points

    monkeypatch.setattr(plugins, "_registry", load_registry(_entry_points("Good", "Raising")))
    assert [(f.plugin, f.error) for f in nestkit.plugin_failures()] == [("raising", "RuntimeError: half-way through")]
    assert [c.name for c in nestkit.list_components("encoder")] == ["good_enc"]  # the raising hook registered nothing


def test_a_builtin_factory_refusing_its_settings_is_the_same_one_line() -> None:
    """What the trainer's scheduler build raises for a setting only the factory can judge."""
    import torch

    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with pytest.raises(RecipeError) as caught:
        get_registry().build("scheduler", {"name": "cosine_annealing"}, key="model.optim.sched",
                             optimizer=optimizer, trainer_max_steps=None)
    assert str(caught.value) == ("model.optim.sched (nestkit:cosine_annealing): cosine_annealing needs a step budget: "
                                 "set trainer.max_steps or the scheduler's max_steps")
    assert isinstance(caught.value.__cause__, ValueError) and caught.value.exit_code == 2
