"""`train --init-from WD-FOLDER`: the model a WD v3 tagger folder describes, its head regrown
to the run's label space by tag name.

    wd = wd_source(settings)                 # None unless --init-from is a WD v3 folder
    tags, plan = label_space(wd.tags, data_tags, settings.keep_tags)
    model = build_from_wd(wd, [t["name"] for t in tags], settings, priors)

The backbone is timm's `architecture` with the folder's `model_args` (img_size, class_token,
global_pool, ...), every backbone tensor loaded strictly from model.safetensors; the head is
our linear head, with the folder's classifier rows copied for the carried tags and fresh
rows, biased at each tag's base rate, for the added ones. The run takes the folder's
architecture, image size and preprocessing (train/wd_folder.py), and records them.
"""

from __future__ import annotations

import logging
from pathlib import Path

from .errors import TrainError
from .head_surgery import copy_rows
from .models import Tagger, build_model, prior_bias
from .settings import TrainSettings
from .wd_folder import WdFolder, is_wd_timm_folder, read_wd_folder

log = logging.getLogger(__name__)


def wd_source(settings: TrainSettings) -> WdFolder | None:
    """The WD folder `--init-from` names (None for a run, a checkpoint or nothing); sets the
    settings' architecture, weights and image size to the folder's, so config.json says
    what the model is. Raises TrainError for a head or task a WD tagger cannot be."""
    if not settings.init_from or not is_wd_timm_folder(Path(settings.init_from)):
        return None
    wd = read_wd_folder(Path(settings.init_from))
    if settings.head != "linear":
        raise TrainError(f"--init-from {wd.path}: a WD tagger's head is linear, not "
                         f"--head {settings.head}")
    if settings.task not in (None, "multilabel"):
        raise TrainError(f"--init-from {wd.path}: a WD tagger is multilabel, not "
                         f"--task {settings.task}")
    arch = f"timm:{wd.architecture}"
    if settings.model not in (arch, TrainSettings.model):
        log.warning("--init-from %s: the folder's architecture is %s; --arch %s is ignored",
                    wd.path, arch, settings.model)
    if settings.image_size != wd.image_size:
        log.warning("--init-from %s: the folder's model takes %d px pictures; --image-size %d "
                    "is replaced by it", wd.path, wd.image_size, settings.image_size)
    settings.model, settings.weights, settings.image_size = arch, str(wd.path), wd.image_size
    return wd


def build_from_wd(wd: WdFolder, names: list[str], settings: TrainSettings,
                  priors=None) -> Tagger:
    """The folder's model with a head of `names` (carried rows copied exactly, new rows at
    their base rates when `priors` are given); `model.normalization` is the folder's."""
    model = build_model(f"timm:{wd.architecture}", len(names), str(wd.path), "linear",
                        settings.dropout, wd.image_size, settings.weights_partial,
                        wd.model_args)
    if priors is not None:
        prior_bias(model, priors)
    weight, bias = wd.head_rows()
    copied = copy_rows(model, names, wd.names, weight, bias)
    log.info("init from the WD tagger %s (%s): every backbone tensor, %d of its %d "
             "classifier rows", wd.path, wd.architecture, copied, len(wd.names))
    model.normalization = wd.normalization()
    return model
