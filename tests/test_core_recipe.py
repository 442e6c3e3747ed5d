"""Recipes: YAML errors, extends, interpolation, overrides, validation messages."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
import yaml
from pydantic import Field

from nestkit.errors import RecipeError, RecipeErrors
from conftest import ROOT
from nestkit.overrides import apply_overrides
from nestkit.recipe import interpolate, load_raw, load_recipe
from nestkit.registry import Component, ComponentConfig, Registry, section_field


class EncConfig(ComponentConfig):
    n_heads: int = 4
    subsampling_factor: int = 8


class ModelConfig(ComponentConfig):
    sample_rate: int = 16000
    encoder: dict = section_field("encoder")
    combine_time_steps: int = 8


class SgdConfig(ComponentConfig):
    lr: float = Field(0.1, gt=0)


@pytest.fixture()
def registry() -> Registry:
    reg = Registry()
    reg.add(Component("encoder", "conv", dict, EncConfig, "enc"), provider="p")
    reg.add(Component("model", "nest", dict, ModelConfig, "model"), provider="p")
    reg.add(Component("optimizer", "sgd", dict, SgdConfig, "sgd"), provider="p")
    return reg


BASE = {
    "name": "t",
    "model": {
        "sample_rate": 16000,
        "combine_time_steps": "${model.encoder.subsampling_factor}",
        "encoder": {"name": "conv", "n_heads": 4, "subsampling_factor": 4},
        "optim": {"name": "sgd", "lr": 0.5},
    },
    "trainer": {"max_steps": 10},
}


def write(tmp_path: Path, name: str, data: dict | str) -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_interpolation_keeps_types_and_follows_overrides(registry: Registry, tmp_path: Path) -> None:
    recipe = load_recipe(write(tmp_path, "r.yaml", BASE), ["model.encoder.subsampling_factor=8"], registry=registry)
    assert recipe.data["model"]["combine_time_steps"] == 8
    assert recipe.trainer.max_steps == 10
    assert recipe.model_section["name"] == "nest"
    assert "optim" not in recipe.model_section


def test_interpolation_inside_strings_and_cycles() -> None:
    assert interpolate({"a": {"b": 3}, "c": "x-${a.b}-y"})["c"] == "x-3-y"
    with pytest.raises(RecipeError, match="circular"):
        interpolate({"a": "${b}", "b": "${a}"})
    with pytest.raises(RecipeError, match=r"^c: '\$\{a\.z\}' refers to a key that does not exist$"):
        interpolate({"a": {"b": 3}, "c": "${a.z}"})


def test_overrides_are_yaml_typed_and_unknown_parents_suggest() -> None:
    data = apply_overrides(BASE, ["trainer.max_steps=100", "model.optim.lr=1e-3", "model.encoder.n_heads=2", "trainer.betas=[0.9,0.98]"])
    assert data["trainer"]["max_steps"] == 100
    assert data["model"]["optim"]["lr"] == 1e-3
    assert data["trainer"]["betas"] == [0.9, 0.98]
    with pytest.raises(RecipeError, match=r"model has no key 'encodr'; did you mean 'encoder'\?"):
        apply_overrides(BASE, ["model.encodr.n_heads=2"])
    with pytest.raises(RecipeError, match="must look like dotted.key=value"):
        apply_overrides(BASE, ["trainer.max_steps"])


def test_unknown_leaf_override_fails_validation_with_suggestion(registry: Registry, tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", BASE)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["model.encoder.n_head=2"], registry=registry)
    assert str(err.value) == f"{path}: model.encoder: unknown field 'n_head'; did you mean 'n_heads'?"


def test_type_errors_name_file_and_key(registry: Registry, tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", BASE)
    with pytest.raises(RecipeError) as err:
        load_recipe(path, ["model.encoder.n_heads=eight"], registry=registry)
    assert str(err.value) == f"{path}: model.encoder.n_heads: expected an integer, got 'eight'"
    with pytest.raises(RecipeError, match=r"model\.optim\.lr: input should be greater than 0, got -1"):
        load_recipe(path, ["model.optim.lr=-1"], registry=registry)
    with pytest.raises(RecipeError, match=r"trainer: unknown field 'max_step'; did you mean 'max_steps'\?"):
        load_recipe(path, ["trainer.max_step=3"], registry=registry)
    with pytest.raises(RecipeError, match=r"unknown section 'trainr'; did you mean 'trainer'\?"):
        load_recipe({**BASE, "trainr": {}}, registry=registry)


def test_yaml_syntax_error_has_line_and_column(registry: Registry, tmp_path: Path) -> None:
    path = write(tmp_path, "bad.yaml", "name: x\nmodel:\n  encoder: {name: conv\n  foo: [1, 2\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path, registry=registry)
    assert str(err.value).startswith(f"{path}:4:")
    assert "YAML syntax error" in str(err.value)


def test_extends_merges_and_is_relative_to_the_file(registry: Registry, tmp_path: Path) -> None:
    write(tmp_path, "base.yaml", BASE)
    (tmp_path / "sub").mkdir()
    child = write(tmp_path / "sub", "child.yaml", {"extends": "../base.yaml", "model": {"encoder": {"n_heads": 2}}})
    recipe = load_recipe(child, registry=registry)
    assert recipe.data["model"]["encoder"] == {"name": "conv", "n_heads": 2, "subsampling_factor": 4}
    loop = write(tmp_path, "loop.yaml", {"extends": "loop.yaml"})
    with pytest.raises(RecipeError, match="cycle"):
        load_recipe(loop, registry=registry)


def test_extends_replaces_a_section_whose_component_changes(registry: Registry, tmp_path: Path) -> None:
    reg = registry
    reg.add(Component("encoder", "other", dict, ComponentConfig, "other"), provider="p")
    write(tmp_path, "base.yaml", BASE)
    child = write(tmp_path, "child.yaml", {"extends": "base.yaml", "model": {"encoder": {"name": "other"}}})
    recipe = load_recipe(child, ["model.combine_time_steps=8"], registry=reg)
    assert recipe.data["model"]["encoder"] == {"name": "other"}


def test_overrides_fill_sections_the_file_leaves_at_defaults(registry: Registry, tmp_path: Path) -> None:
    data = {k: v for k, v in BASE.items() if k != "trainer"}
    recipe = load_recipe(write(tmp_path, "r.yaml", data), ["trainer.max_steps=7", "exp_manager.name=x"], registry=registry)
    assert recipe.trainer.max_steps == 7 and recipe.exp_manager.name == "x"
    with pytest.raises(RecipeError, match=r"unknown section 'trainr'; did you mean 'trainer'\?"):
        load_recipe(write(tmp_path, "r.yaml", data), ["trainr.max_steps=7"], registry=registry)


class TinyEncoder:
    def __init__(self, cfg: EncConfig) -> None:
        self.cfg = cfg


class TinyModel:
    def __init__(self, cfg: ModelConfig, *, registry: Registry) -> None:
        self.encoder = registry.build("encoder", cfg.encoder, key="encoder")


def test_the_registry_a_recipe_was_validated_with_is_the_one_that_builds(tmp_path: Path) -> None:
    import nestkit

    reg = Registry()  # names the installed plugins do not have: the global registry cannot build this
    reg.add(Component("encoder", "tiny_enc", TinyEncoder, EncConfig, "enc"), provider="test")
    reg.add(Component("model", "tiny_model", TinyModel, ModelConfig, "model"), provider="test")
    data = {"model": {"name": "tiny_model", "encoder": {"name": "tiny_enc", "n_heads": 2}}}
    recipe = nestkit.load_recipe(data, registry=reg)
    assert recipe.registry is reg
    model = nestkit.build_model(recipe)
    assert isinstance(model, TinyModel) and isinstance(model.encoder, TinyEncoder)
    assert model.encoder.cfg.n_heads == 2
    with pytest.raises(RecipeError, match=r"model\.name: unknown model 'tiny_model'"):
        nestkit.load_recipe(data)  # the installed plugins do not know it


def test_every_problem_of_every_section_is_reported_at_once(registry: Registry, tmp_path: Path) -> None:
    path = write(tmp_path, "r.yaml", {**BASE, "exp_manager": {"nam": "x"}, "extra": 1})
    overrides = ["model.encoder.n_heads=eight", "model.optim.lr=-1", "trainer.max_step=3", "model.sample_rate=x",
                 "model.train_ds.batch_size=0"]
    with pytest.raises(RecipeErrors) as err:
        load_recipe(path, overrides, registry=registry)
    assert [str(e) for e in err.value.errors] == [
        f"{path}: extra: unknown section 'extra'",
        f"{path}: model.train_ds.batch_size: input should be greater than or equal to 1, got 0",
        f"{path}: model.sample_rate: expected an integer, got 'x'",
        f"{path}: model.encoder.n_heads: expected an integer, got 'eight'",
        f"{path}: model.optim.lr: input should be greater than 0, got -1",
        f"{path}: trainer: unknown field 'max_step'; did you mean 'max_steps'?",
        f"{path}: exp_manager: unknown field 'nam'; did you mean 'name'?",
    ]


def test_every_bad_override_is_reported_at_once() -> None:
    with pytest.raises(RecipeErrors) as err:
        apply_overrides(BASE, ["model.encodr.n_heads=2", "trainer.max_steps", "trainer.max_steps=3"])
    assert [str(e) for e in err.value.errors] == [
        "override 'model.encodr.n_heads=2': model has no key 'encodr'; did you mean 'encoder'?",
        "override 'trainer.max_steps' must look like dotted.key=value",
    ]


def test_a_bundled_recipe_is_named_from_any_folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no recipes/ folder here
    assert load_raw(Path("nestkit:nest_demo.yaml"))["name"] == "NEST-demo"
    assert load_raw(Path("nestkit:sizes/nest_small"))["model"]["encoder"]["d_model"] == 176
    with pytest.raises(RecipeError, match=r"nestkit:nest_dmeo.yaml: nestkit has no bundled recipe 'nest_dmeo.yaml' "
                                          r"\(bundled: nest_demo.yaml, nest_fast_conformer.yaml, sizes/"):
        load_raw(Path("nestkit:nest_dmeo.yaml"))


def test_bundled_recipes_ship_in_the_wheel(tmp_path: Path) -> None:
    """``extends: nestkit:NAME`` works wherever nestkit is installed, not only from a checkout: the
    wheel's setuptools build holds the recipes, and a recipe in an unrelated folder extends one
    from the unpacked wheel alone (the demo audio is left out of the copy: not under test, 16 MB)."""
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "nestkit", source / "nestkit", ignore=shutil.ignore_patterns("__pycache__", "demo_data"))
    subprocess.run([sys.executable, "-c", "from setuptools import build_meta; build_meta.build_wheel('dist')"],
                   cwd=source, check=True, capture_output=True, timeout=300)
    (wheel,) = (source / "dist").glob("nestkit-*.whl")
    site = tmp_path / "site"
    zipfile.ZipFile(wheel).extractall(site)
    elsewhere = tmp_path / "my_plugin" / "recipes"
    elsewhere.mkdir(parents=True)
    (elsewhere / "mine.yaml").write_text("extends: nestkit:nest_demo.yaml\nname: mine\ntrainer:\n  max_steps: 7\n")
    probe = ("import json, sys; from pathlib import Path; import nestkit.recipe as r; "
             "d = r.load_raw(Path(sys.argv[1])); print(json.dumps([r.__file__, d['name'], d['trainer']['max_steps'], "
             "d['model']['encoder']['name']]))")
    done = subprocess.run([sys.executable, "-c", probe, str(elsewhere / "mine.yaml")], cwd=elsewhere, text=True,
                          capture_output=True, timeout=120, env={**os.environ, "PYTHONPATH": str(site)})
    assert done.returncode == 0, done.stderr
    module, name, max_steps, encoder = json.loads(done.stdout)
    assert Path(module).is_relative_to(site)  # nestkit came from the wheel, not from this checkout
    assert (name, max_steps, encoder) == ("mine", 7, "fast_conformer")


def test_datasets_are_read_at_the_model_sample_rate(tmp_path: Path) -> None:
    """A dataset resampled to another rate than the model's would feed the preprocessor audio at
    the wrong speed: refused at validation. Without datasets, the demo data is read at the model's."""
    from nestkit.train.data import resolve_datasets

    demo = ROOT / "recipes" / "nest_demo.yaml"
    with pytest.raises(RecipeErrors) as caught:
        load_recipe(demo, ["model.train_ds.sample_rate=8000", "model.validation_ds.sample_rate=22050"])
    assert [line.split(": ", 2)[1:] for line in str(caught.value).splitlines()] == [
        ["model.train_ds.sample_rate", "8000 differs from model.sample_rate (16000): write sample_rate: ${model.sample_rate}"],
        ["model.validation_ds.sample_rate", "22050 differs from model.sample_rate (16000): write sample_rate: ${model.sample_rate}"],
    ]
    eight_k = ["model.sample_rate=8000", "model.preprocessor.sample_rate=8000"]
    recipe = load_recipe(demo, [*eight_k, "model.train_ds=null", "model.validation_ds=null"])
    sets = resolve_datasets(recipe)
    assert (sets.train.sample_rate, sets.validation.sample_rate) == (8000, 8000)
    unwritten = load_recipe(demo, [*eight_k, "model.train_ds={batch_size: 4}"])  # a section without sample_rate
    assert unwritten.train_ds.sample_rate == 8000


@pytest.mark.parametrize(("override", "key", "why"), [
    ("name=", "exp_manager.name", "an empty name would put the run's files straight into exp_dir"),
    ("exp_manager.name=../elsewhere", "exp_manager.name", "'../elsewhere' is a path, not a folder name"),
    ("exp_manager.name=..", "exp_manager.name", "'..' is a path"),
])
def test_the_run_folder_name_stays_inside_exp_dir(override: str, key: str, why: str) -> None:
    with pytest.raises(RecipeError) as caught:
        load_recipe(ROOT / "recipes" / "nest_demo.yaml", [override])
    [line] = str(caught.value).splitlines()
    assert line.split(": ", 2)[1] == key and line.split(": ", 2)[2].startswith(why), line


def test_the_recipe_name_is_checked_when_it_names_the_folder() -> None:
    demo = ROOT / "recipes" / "nest_demo.yaml"
    with pytest.raises(RecipeError, match=r"nest_demo.yaml: name: '../out' is a path, not a folder name"):
        load_recipe(demo, ["name=../out", "exp_manager.name=null"])
    # exp_manager.name names the folder: the recipe's name is then only a label
    assert load_recipe(demo, ["name=../out", "exp_manager.name=run1"]).name == "../out"


def test_an_error_names_the_file_of_the_extends_chain_that_wrote_the_key(tmp_path: Path) -> None:
    """A typo in a base recipe is the base's to fix; a key the recipe or the command line rewrites is theirs."""
    base = tmp_path / "base.yaml"
    base.write_text("extends: nestkit:nest_demo.yaml\ntrainer:\n  max_step: 3\nmodel:\n  encoder:\n    n_heads: eight\n")
    child = tmp_path / "child.yaml"
    child.write_text("extends: base.yaml\nname: child\n")
    with pytest.raises(RecipeErrors) as caught:
        load_recipe(child)
    assert sorted(str(caught.value).splitlines()) == [
        f"{base}: model.encoder.n_heads: expected an integer, got 'eight'",
        f"{base}: trainer: unknown field 'max_step'; did you mean 'max_steps'?",
    ]
    child.write_text("extends: base.yaml\ntrainer:\n  max_step: 4\n")
    with pytest.raises(RecipeErrors) as caught:
        load_recipe(child, ["model.encoder.n_heads=nine"])
    assert sorted(str(caught.value).splitlines()) == [
        f"{child}: model.encoder.n_heads: expected an integer, got 'nine'",
        f"{child}: trainer: unknown field 'max_step'; did you mean 'max_steps'?",
    ]


def test_a_mistake_copied_by_interpolation_is_reported_once() -> None:
    """nest_fast_conformer.yaml copies model.sample_rate into its datasets and preprocessor: one
    bad value there is one line, not four."""
    with pytest.raises(RecipeError) as caught:
        load_recipe(ROOT / "recipes" / "nest_demo.yaml", ["model.sample_rate=0"])
    assert str(caught.value).splitlines() == [
        f"{ROOT / 'recipes' / 'nest_demo.yaml'}: model.sample_rate: input should be greater than 0, got 0"]


def test_a_section_written_as_a_scalar_is_named_by_the_reference_that_reads_it() -> None:
    with pytest.raises(RecipeError, match=r"model.quantizer.combine_time_steps: '\$\{model.encoder.subsampling_factor\}' "
                                          r"cannot be read: model.encoder is 3, not a mapping"):
        load_recipe(ROOT / "recipes" / "nest_demo.yaml", ["model.encoder=3"])


def test_the_file_named_follows_lists_references_copies_and_component_switches(tmp_path: Path) -> None:
    """top.yaml extends mid.yaml extends the bundled demo; the mistakes below are mid.yaml's, but
    for a copy of top.yaml's own name."""
    mid, top = tmp_path / "mid.yaml", tmp_path / "top.yaml"
    top.write_text("extends: mid.yaml\nname: top\n")

    def errors(mid_text: str) -> list[str]:
        mid.write_text("extends: nestkit:nest_demo.yaml\nname: mid\n" + mid_text)
        with pytest.raises(RecipeError) as caught:
            load_recipe(top)
        return sorted(str(caught.value).splitlines())

    assert errors("model:\n  encoder:\n    att_context_size: [-1, abc]\n") == [
        f"{mid}: model.encoder.att_context_size.1: expected an integer, got 'abc'"]  # inside a list
    assert errors("model:\n  train_ds:\n    max_duration: ${name}\n") == [  # a copy: whoever wrote its source
        f"{top}: model.train_ds.max_duration: expected a number, got 'top'"]
    assert errors("model:\n  train_ds:\n    max_duration: ${model.num_classes}x\n") == [  # a template: its own file
        f"{mid}: model.train_ds.max_duration: expected a number, got '64x'"]
    assert errors("model:\n  train_ds:\n    max_duration: ${model.nope}\n") == [
        f"{mid}: model.train_ds.max_duration: '${{model.nope}}' refers to a key that does not exist"]
    assert errors("model:\n  train_ds:\n    batch_augmentor:\n      prob: 2\n"
                  "  validation_ds:\n    batch_augmentor: ${model.train_ds.batch_augmentor}\n") == [
        f"{mid}: model.train_ds.batch_augmentor.prob: input should be less than or equal to 1, got 2"]  # once
    assert errors("model:\n  optim:\n    sched:\n      name: NoamAnnealing\n") == [  # the file that switched it
        f"{mid}: model.optim.sched.d_model: required field is missing"]


def test_one_override_may_be_given_as_a_string() -> None:
    """Not read letter by letter ('override 't' must look like dotted.key=value', ...)."""
    assert load_recipe(ROOT / "recipes" / "nest_demo.yaml", "trainer.max_steps=100").trainer.max_steps == 100


def test_epoch_fractions_and_counts_are_told_apart_at_validation() -> None:
    """A float above 1 would silently act as its whole part; a fraction needs data of known length,
    which tarred and Lhotse data lack: both are recipe errors, not tracebacks mid-run."""
    demo = ROOT / "recipes" / "nest_demo.yaml"
    with pytest.raises(RecipeErrors) as caught:
        load_recipe(demo, ["trainer.val_check_interval=1.5", "trainer.limit_val_batches=2.5"])
    assert [line.split(": ", 2)[1] for line in str(caught.value).splitlines()] == [
        "trainer.val_check_interval", "trainer.limit_val_batches"]
    counted = load_recipe(demo, ["trainer.val_check_interval=1000.0", "trainer.limit_val_batches=0.5"]).trainer
    assert (counted.val_check_interval, type(counted.val_check_interval), counted.limit_val_batches) == (1000, int, 0.5)

    tarred = ["model.train_ds.is_tarred=true", "model.train_ds.tarred_audio_filepaths=a_{0..1}.tar",
              "model.validation_ds.is_tarred=true", "model.validation_ds.tarred_audio_filepaths=b.tar"]
    with pytest.raises(RecipeErrors) as caught:
        load_recipe(demo, [*tarred, "trainer.val_check_interval=1.0", "trainer.limit_val_batches=0.5"])
    lines = str(caught.value).splitlines()
    assert [line.split(": ", 2)[1] for line in lines] == ["trainer.val_check_interval", "trainer.limit_val_batches"]
    assert all("is tarred data, whose epoch length is unknown: give a number of" in line for line in lines), lines
    # whole counts, and limit_val_batches 1.0 (all of it), need no length
    assert load_recipe(demo, [*tarred, "trainer.val_check_interval=20", "trainer.limit_val_batches=1.0"]).trainer.val_check_interval == 20


def test_tarred_data_without_shards_is_a_recipe_error() -> None:
    with pytest.raises(RecipeError, match=r"model.train_ds: is_tarred is true but tarred_audio_filepaths is not set"):
        load_recipe(ROOT / "recipes" / "nest_demo.yaml", ["model.train_ds.is_tarred=true"])
