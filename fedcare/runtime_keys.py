"""The run-config keys the coordinator sets per run (core: the site side hashes the same App).

``fedcare coordinator start/run/status`` write and read these; importing them from
``fedcare.server.app`` would load Flower's ServerApp, torch and the strategies for every such
command.
"""

from __future__ import annotations

OUT_DIR_KEY = "out-dir"
MIN_SITES_KEY = "min-sites"
SIM_SITES_KEY = "sim-sites"  # read by simulated ClientApps only
REGISTRY_KEY = "site-registry"  # the coordinator's sites.json; "" in a simulation
# What the ServerApp does: "train" (rounds of training) or "validate" (cross-site validation
# of the model in CANDIDATE_KEY, fedcare.server.model_validation).
MODE_KEY = "mode"
TRAIN_MODE = "train"
VALIDATE_MODE = "validate"
CANDIDATE_KEY = "candidate"  # validate: the weights (safetensors) every site scores
INITIAL_MODEL_KEY = "initial-model"  # train: start from these weights, not a fresh model
PREPROCESSING_FILE_KEY = "preprocessing-file"  # validate: the statistics the model trained with
# validate: a subgroup cell with fewer patients, or fewer events or non-events, is not sent.
MIN_SUBGROUP_PATIENTS_KEY = "min-subgroup-patients"
MIN_SUBGROUP_EVENTS_KEY = "min-subgroup-events"
DEFAULT_MIN_SUBGROUP_PATIENTS = 11  # the small-cell rule of CMS and many hospital data offices
DEFAULT_MIN_SUBGROUP_EVENTS = 5
# train: continue the run in OUT_DIR_KEY from its last complete checkpoint (a new Flower run;
# fedcare.server.checkpoint), instead of starting it.
RESUME_KEY = "resume"
# How long one exchange waits for the sites' replies (seconds): a round then goes on with the
# replies that came, and a silent site is recorded as missing ("timeout").
ROUND_TIMEOUT_KEY = "round-timeout"
DEFAULT_ROUND_TIMEOUT_S = 600
RUNTIME_KEYS = frozenset(
    {
        OUT_DIR_KEY, MIN_SITES_KEY, SIM_SITES_KEY, REGISTRY_KEY, MODE_KEY, CANDIDATE_KEY,
        INITIAL_MODEL_KEY, MIN_SUBGROUP_PATIENTS_KEY, MIN_SUBGROUP_EVENTS_KEY,
        PREPROCESSING_FILE_KEY, RESUME_KEY, ROUND_TIMEOUT_KEY,
    }
)  # fmt: skip
ROUNDS_FILE = "rounds.json"


def default_runtime_config() -> dict[str, str | int]:
    """Runtime keys' defaults in the Flower App; each run overrides them (``--run-config``)."""
    return {
        OUT_DIR_KEY: "fedcare-out",
        MIN_SITES_KEY: 2,
        REGISTRY_KEY: "",
        MODE_KEY: TRAIN_MODE,
        CANDIDATE_KEY: "",
        INITIAL_MODEL_KEY: "",
        PREPROCESSING_FILE_KEY: "",
        MIN_SUBGROUP_PATIENTS_KEY: DEFAULT_MIN_SUBGROUP_PATIENTS,
        MIN_SUBGROUP_EVENTS_KEY: DEFAULT_MIN_SUBGROUP_EVENTS,
        RESUME_KEY: 0,
        ROUND_TIMEOUT_KEY: DEFAULT_ROUND_TIMEOUT_S,
    }
