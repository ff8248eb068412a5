"""What zero-prior relies on about ai-toolkit (commit 27a03a91), named once.

Values copied from ai-toolkit's code so that modules which never import it
(the config rules, the experiment, the launcher) agree with it; each says
where it comes from.
"""

from __future__ import annotations

# The ``type`` of our process in a job config: the extension's uid (``runtime.extension``).
PROCESS_TYPE = "zero_prior_trainer"
# The switch under ``train:`` that selects placeholder training (true) or the baseline (false).
TOGGLE = "train_placeholder_token"
# toolkit/config_modules.py TrainConfig defaults: train.lr, train.steps.
TRAIN_LR_DEFAULT = 1e-6
TRAIN_STEPS_DEFAULT = 1000
# The UILogger's per-step database in a job's save root (logging.use_ui_logger), toolkit/logging_aitk.py.
STEP_LOG = "loss_log.db"
# The image types ai-toolkit trains on (toolkit/data_loader.py: image_extensions).
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp")
# Where a dataset names its control image folders (toolkit/config_modules.py DatasetConfig): edit models need one.
CONTROL_PATH_KEYS = ("control_path", "control_path_1", "control_path_2", "control_path_3")
