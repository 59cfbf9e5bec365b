"""The bundled MiniLM model, loaded offline, through the embedder resource."""

import numpy as np

from resources import ComputeDevice, SentenceEmbedder


def test_bundled_minilm_embeds_offline_and_puts_similar_texts_close():
    emb = SentenceEmbedder(compute=ComputeDevice(device="cpu"), batch_size=2)
    texts = ["The striker scored twice in the cup final.", "A late goal won the football match.",
             "Shares fell as the central bank raised interest rates."]
    x = emb.encode(texts)
    assert x.shape == (3, 384) and x.dtype == np.float32
    assert np.allclose(np.linalg.norm(x, axis=1), 1.0, atol=1e-5)
    sim = x @ x.T
    assert sim[0, 1] > sim[0, 2] + 0.2  # two sports sentences are closer than sport vs finance
    assert np.allclose(emb.encode(texts), x, atol=1e-6)  # deterministic
    assert emb.device == "cpu"


def test_max_seq_length_truncates():
    head = "The striker scored twice in the cup final and the crowd went wild"
    tail = " while the central bank raised interest rates again, sending shares lower" * 5
    short = SentenceEmbedder(compute=ComputeDevice(device="cpu"), max_seq_length=12)
    full = SentenceEmbedder(compute=ComputeDevice(device="cpu"))
    a, b = short.encode([head, head + tail])
    assert np.allclose(a, b, atol=1e-5)  # both cut to the same first 12 tokens
    c, d = full.encode([head, head + tail])
    assert float(c @ d) < 0.95  # the tail matters when nothing is cut


# ---- precision (float32 / bfloat16 / auto) and order ---------------------------------------------

import pytest  # noqa: E402

from resources import ExampleSource  # noqa: E402
from resources import embedder as embedder_module  # noqa: E402


def _cpu_embedder(**kw) -> SentenceEmbedder:
    return SentenceEmbedder(compute=ComputeDevice(device="cpu"), **kw)


def _cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return (a * b).sum(1) / (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1))


@pytest.fixture(scope="module")
def bbc_texts() -> list[str]:
    """32 real news articles of mixed lengths (cut to 128 tokens by the embedders below, to stay fast)."""
    return ExampleSource().load_shard("bbc-0").column("text").to_pylist()[:32]


needs_bf16 = pytest.mark.skipif(not embedder_module.cpu_has_native_bf16(),
                                reason="this CPU has no native bfloat16 (AMX / AVX512-BF16)")


@needs_bf16
def test_forced_bfloat16_stays_within_cosine_0999_of_float32(bbc_texts):
    f32 = _cpu_embedder(precision="float32", max_seq_length=128).encode(bbc_texts)
    bf16 = _cpu_embedder(precision="bfloat16", max_seq_length=128).encode(bbc_texts)
    assert bf16.dtype == np.float32 and bf16.shape == f32.shape
    assert not np.array_equal(bf16, f32)  # it really ran in reduced precision
    assert _cosines(f32, bf16).min() >= embedder_module.PRECISION_MIN_COSINE
    assert _cpu_embedder(precision="bfloat16", max_seq_length=128).precision_report()["precision"] == "bfloat16"


def test_auto_is_repeatable_and_its_decision_follows_the_rule(bbc_texts):
    embedder_module._AUTO_DECISIONS.clear()  # the decision is per process: start this one afresh
    auto = _cpu_embedder(max_seq_length=128)
    assert auto.precision == "auto" and auto.precision_report()["precision"] is None  # nothing decided yet
    x1, x2 = auto.encode(bbc_texts), auto.encode(bbc_texts)
    assert x1.dtype == np.float32 and np.array_equal(x1, x2)
    report = auto.precision_report()
    native = embedder_module.cpu_has_native_bf16()
    assert report["native_reduced_precision"] == native
    f32 = _cpu_embedder(precision="float32", max_seq_length=128).encode(bbc_texts)
    if native:
        bf16 = _cpu_embedder(precision="bfloat16", max_seq_length=128).encode(bbc_texts)
        min_cos = float(_cosines(f32, bf16).min())
        assert report["calibration_texts"] == len(bbc_texts)  # all 32 are within the first 64
        assert report["min_cosine"] == pytest.approx(min_cos, abs=1e-6)
        expected = "bfloat16" if min_cos >= embedder_module.PRECISION_MIN_COSINE else "float32"
        assert report["precision"] == expected
        assert np.array_equal(x1, bf16 if expected == "bfloat16" else f32)  # auto ran what it reports
    else:
        assert report["precision"] == "float32" and report["min_cosine"] is None
        assert np.array_equal(x1, f32)
    # Decided once per process: a later call with other texts keeps the same precision.
    auto.encode(["One short sentence."])
    assert auto.precision_report() == report


def test_float32_is_exactly_plain_sentence_transformers(bbc_texts):
    emb = _cpu_embedder(precision="float32", max_seq_length=128, batch_size=8)
    plain = emb._load().encode(bbc_texts, batch_size=8, normalize_embeddings=True)
    assert np.array_equal(emb.encode(bbc_texts), plain)
    assert emb.precision_report()["precision"] == "float32"


@pytest.mark.parametrize("precision", ["float32", "auto"])
def test_order_is_kept_for_texts_of_very_different_lengths(bbc_texts, precision):
    texts = ["Rates rose.", bbc_texts[0], "The striker scored twice in the cup final.", bbc_texts[1][:300],
             "Shares fell.", bbc_texts[2]]
    emb = _cpu_embedder(precision=precision, max_seq_length=128, batch_size=2)  # 3 batches, sorted across them
    together = emb.encode(texts)
    alone = np.vstack([emb.encode([t]) for t in texts])
    if precision == "float32":
        assert np.allclose(together, alone, atol=1e-5)
    else:  # bfloat16 rounding depends on the padded batch shape: close, and each row nearest its own text
        assert _cosines(together, alone).min() >= embedder_module.PRECISION_MIN_COSINE
    assert (np.argmax(together @ alone.T, axis=1) == np.arange(len(texts))).all()


@pytest.mark.parametrize("bad", ["fp16", "float16", "", None])
def test_bad_precision_is_refused_naming_the_field(bad):
    with pytest.raises(ValueError, match="precision"):
        _cpu_embedder(precision=bad)
