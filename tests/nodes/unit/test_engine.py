"""The embedding engines: the offline default and the pyannote.audio loading path."""

import numpy as np
import pytest
import torch

from tests import audio
from tests.checkpoints import save_checkpoint
from voice.engines import (
    EngineUnavailable,
    PyannoteEngine,
    ResemblyzerEngine,
    get_engine,
    load_engine,
)


@pytest.fixture(scope="module")
def local_checkpoint(tmp_path_factory):
    """A pyannote.audio embedding checkpoint made here (random weights, real architecture)."""
    from pyannote.audio.core.task import Problem, Resolution, Specifications
    from pyannote.audio.models.embedding import WeSpeakerResNet34

    torch.manual_seed(0)
    model = WeSpeakerResNet34()
    model.specifications = Specifications(
        problem=Problem.REPRESENTATION, resolution=Resolution.CHUNK, duration=3.0
    )
    return save_checkpoint(model, tmp_path_factory.mktemp("model") / "pytorch_model.bin")


def test_offline_default_is_resemblyzer_with_a_stamped_version():
    engine = load_engine("resemblyzer")
    assert isinstance(engine, ResemblyzerEngine)
    assert engine.model_id == "resemblyzer/ge2e-voice-encoder"
    assert engine.model_version.startswith("0.1.4+")


def test_resemblyzer_separates_the_two_sample_speakers():
    engine = load_engine("resemblyzer")
    a1, _ = engine.voiceprint(audio.clip(audio.SPEAKER_A))
    a2, _ = engine.voiceprint(audio.clip(audio.SPEAKER_A_CONSENT))
    b, _ = engine.voiceprint(audio.clip(audio.SPEAKER_B))
    assert a1 @ a2 > a1 @ b
    assert np.linalg.norm(a1) == pytest.approx(1.0, abs=1e-5)


def test_local_pyannote_checkpoint_loads_and_embeds(local_checkpoint):
    engine = load_engine(str(local_checkpoint))
    assert isinstance(engine, PyannoteEngine)
    assert engine.model_id == str(local_checkpoint.resolve())
    assert len(engine.model_version) == 16
    assert engine.dimension == 256
    speech = audio.clip(audio.SPEAKER_A)
    vector = engine.embed(speech)
    assert vector.shape == (256,)
    assert np.linalg.norm(vector) == pytest.approx(1.0, abs=1e-5)
    windows = engine.embed_windows(speech, 1.6, 0.5)
    assert windows.shape[1] == 256 and windows.shape[0] > 5


def test_checkpoint_directory_is_accepted(local_checkpoint):
    engine = load_engine(str(local_checkpoint.parent))
    assert engine.dimension == 256


def test_configured_checkpoint_becomes_the_service_engine(settings, local_checkpoint):
    settings.EMBEDDING_MODEL = str(local_checkpoint)
    get_engine.cache_clear()
    try:
        assert isinstance(get_engine(), PyannoteEngine)
    finally:
        get_engine.cache_clear()


def test_missing_checkpoint_is_a_clear_error(tmp_path):
    broken = tmp_path / "broken.ckpt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(EngineUnavailable, match="cannot load embedding model"):
        load_engine(str(broken))


def test_both_engines_embed_many_spans_at_once(local_checkpoint):
    """Diarization embeds thousands of windows per job in batched passes."""
    samples = audio.sample()
    spans = [(0, 24_000), (16_000, 40_000), (100_000, 108_000)]  # the last one is shorter
    for engine in (load_engine("resemblyzer"), load_engine(str(local_checkpoint))):
        vectors = engine.embed_spans(samples, spans)
        assert vectors.shape == (3, engine.dimension)
        np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
        assert engine.embed_spans(samples, []).shape == (0, engine.dimension)
    resemblyzer = load_engine("resemblyzer")
    # A span embedded alone or in a batch is the same window, the shorter one too (not
    # padded to its neighbours' width).
    batched = resemblyzer.embed_spans(samples, spans)
    for row in (0, 2):
        alone = resemblyzer.embed_spans(samples, [spans[row]])[0]
        assert float(alone @ batched[row]) == pytest.approx(1.0, abs=1e-4)
