"""vocab_arrays / vocab_decoder decode exactly as the tokenizers do, through a measurement file."""

import numpy as np

from lab.data.tokenize import make_tokenizer
from lab.runs import read_measurement, write_measurement
from lab.tokenizer.vocab import vocab_arrays, vocab_decoder

TEXT = "def f(x):\n    return x ** 2  # é, ü, 你好, 🙂\n" * 20


def test_decoding_from_the_arrays_equals_the_tokenizers_decode(tmp_path):
    rng = np.random.default_rng(0)
    for kind in ("byte", "char", "bpe"):
        tok = make_tokenizer(kind, TEXT, vocab_size=300)
        path = write_measurement(tmp_path / f"{kind}.npz", vocab_arrays(tok.token_bytes, tok.vocab_size))
        decode = vocab_decoder(read_measurement(path))
        ids = tok.encode(TEXT)
        assert decode(ids) == tok.decode(ids) == TEXT
        for _ in range(50):  # windows that cut multi-byte characters, and random ids
            a = int(rng.integers(0, len(ids) - 8))
            assert decode(ids[a : a + 7]) == tok.decode(ids[a : a + 7])
            r = rng.integers(0, tok.vocab_size, size=9)
            assert decode(r) == tok.decode(r)
