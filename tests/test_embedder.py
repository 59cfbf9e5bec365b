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
