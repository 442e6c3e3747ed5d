"""Using a trained model from Python, as README's "Python API" shows it: nestkit.load_model on a
checkpoint, nestkit.load_encoder on what `nestkit export-encoder` wrote; one shape convention."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
import torch

import nestkit
from conftest import RECIPES, ROOT, run_nestkit
from nestkit.errors import CheckpointError
from nestkit.pretrained import save_model


def readme_python_blocks(*needles: str) -> list[str]:
    """README's ```python blocks that use one of ``needles`` (the load_model / load_encoder examples)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.S)
    return [block for block in blocks if any(needle in block for needle in needles)]


@pytest.fixture(scope="module")
def user_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with the demo run's checkpoint where README says it is, and `export-encoder`'s file.
    The model is perturbed from its initialisation, so that any mix-up of weights shows."""
    folder = tmp_path_factory.mktemp("user")
    recipe = nestkit.load_recipe(RECIPES / "nest_demo.yaml")
    model = nestkit.build_model(recipe)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, tensor in model.state_dict().items():
            if name.startswith("encoder.") and tensor.is_floating_point():
                tensor.add_(0.05 * torch.randn_like(tensor))
    checkpoint = folder / "nest_experiments" / "NEST-demo" / "checkpoints" / "last.ckpt"
    save_model(checkpoint, model, recipe, step=7)
    result = run_nestkit("export-encoder", str(checkpoint), "encoder.pt", cwd=folder)
    assert result.returncode == 0, result.stderr
    return folder


def test_readme_examples_run_and_agree_on_shapes(user_folder: Path) -> None:
    blocks = readme_python_blocks("nestkit.load_model", "nestkit.load_encoder")
    assert len(blocks) == 2 and len(blocks[0].strip().splitlines()) == 5
    namespace: dict = {}
    cwd = os.getcwd()
    os.chdir(user_folder)
    try:
        for block in blocks:
            exec(compile(block, "README.md", "exec"), namespace)  # noqa: S102 - README's own example
    finally:
        os.chdir(cwd)
    model, recipe, frames = namespace["model"], namespace["recipe"], namespace["frames"]
    d_model = recipe.data["model"]["encoder"]["d_model"]
    final, blocks_out = namespace["final"], namespace["blocks"]
    assert not model.training and isinstance(model, torch.nn.Module)
    assert final.shape[:2] == (2, d_model) and len(blocks_out) == 2
    assert all(b.shape == final.shape for b in blocks_out)
    assert frames.shape == (2,) and frames[1] < frames[0] <= final.shape[2]  # valid frames of each utterance
    # The exported encoder and its preprocessor give the model's own features (float rounding aside).
    torch.testing.assert_close(namespace["encoded"], final, atol=1e-5, rtol=1e-5)
    assert torch.equal(namespace["encoded_len"], frames)
    encoder, preprocessor = namespace["encoder"], namespace["preprocessor"]
    assert not encoder.training and not preprocessor.training
    assert all(torch.equal(v, model.state_dict()[f"preprocessor.{k}"]) for k, v in preprocessor.state_dict().items())


def test_extract_files_have_the_python_layout(user_folder: Path, tmp_path: Path) -> None:
    """`nestkit extract` writes what model.extract returns for each utterance: (d_model, frames)."""
    manifest = ROOT / "nestkit" / "demo_data" / "val_manifest.json"
    checkpoint = user_folder / "nest_experiments" / "NEST-demo" / "checkpoints" / "last.ckpt"
    result = run_nestkit("extract", str(checkpoint), str(manifest), str(tmp_path / "f"), "--format", "pt")
    assert result.returncode == 0, result.stderr
    import json

    from nestkit.data.audio import read_audio

    entry = json.loads((tmp_path / "f" / "features_manifest.json").read_text().splitlines()[0])
    model, _ = nestkit.load_model(checkpoint)
    audio = read_audio(entry["audio_filepath"], sample_rate=16000)
    (final,), frames = model.extract(audio[None], torch.tensor([audio.shape[0]]))
    saved = torch.load(tmp_path / "f" / entry["feature_filepath"], weights_only=True)
    assert saved.shape == final[0, :, : int(frames[0])].shape == (final.shape[1], entry["frames"])
    torch.testing.assert_close(saved, final[0, :, : int(frames[0])], atol=1e-4, rtol=1e-4)


def test_export_encoder_help_names_the_demo_folder_and_the_call() -> None:
    result = run_nestkit("export-encoder", "--help")
    assert result.returncode == 0
    assert "nest_experiments/NEST-demo/checkpoints/last.ckpt" in result.stdout
    assert "nestkit.load_encoder" in result.stdout
    extract_help = run_nestkit("extract", "--help")
    assert "nest_experiments/NEST-demo/checkpoints/last.ckpt" in extract_help.stdout
    assert "(d_model, frames)" in extract_help.stdout


def test_load_encoder_refuses_files_it_cannot_rebuild(user_folder: Path, tmp_path: Path) -> None:
    checkpoint = user_folder / "nest_experiments" / "NEST-demo" / "checkpoints" / "last.ckpt"
    with pytest.raises(CheckpointError, match="not a file of `nestkit export-encoder`"):
        nestkit.load_encoder(checkpoint)
    old = torch.load(user_folder / "encoder.pt", weights_only=True)
    for key in ("preprocessor_config", "preprocessor_state_dict"):
        del old[key]
    torch.save(old, tmp_path / "old.pt")
    with pytest.raises(CheckpointError, match="without its preprocessor; export it again"):
        nestkit.load_encoder(tmp_path / "old.pt")
