"""The exact RWKV World tokenizer.json against the reference TRIE_TOKENIZER, through the
`tokenizers` package (the Rust code tokenizers-cpp and WebLLM compile)."""

from __future__ import annotations

import json
import random

import pytest

from factory.tokenizer import hf_json
from factory.tokenizer import rwkv_world as tok


@pytest.fixture(scope="module")
def upstream() -> dict[int, bytes]:
    return tok.parse_vocab(tok.upstream_vocab_path())


@pytest.fixture(scope="module")
def text(upstream: dict[int, bytes]) -> str:
    return hf_json.tokenizer_json(upstream)


def _wide_corpus() -> list[str]:
    """The check's corpus, all of it in one long text, and random characters from every
    plane the vocab covers in part (CJK, symbols, emoji): where partial UTF-8 tokens and
    single bytes must take over from whole-character tokens."""
    rng = random.Random(7)
    ranges = [(0x20, 0x7E), (0xA0, 0x2FFF), (0x3000, 0x9FFF), (0xAC00, 0xD7A3), (0x1F300, 0x1FAFF)]
    chars = [chr(rng.randint(lo, hi)) for lo, hi in ranges for _ in range(1500)]
    rng.shuffle(chars)
    return [*tok.CORPUS, "".join(tok.CORPUS) * 40, "".join(chars)]


def test_tokenizer_json_gives_the_reference_ids_and_round_trip(upstream: dict[int, bytes], text: str) -> None:
    check = hf_json.check_tokenizer_json(text, tok.reference_encoder(), _wide_corpus(), len(upstream))
    assert check.passed, check.summary() + "\n" + "\n".join(check.mismatches + check.roundtrip_failures)
    assert check.texts == len(tok.CORPUS) + 2


def test_every_token_encodes_to_itself(upstream: dict[int, bytes], text: str) -> None:
    """Each valid UTF-8 token alone encodes as the reference encodes it (mostly itself: the
    longest match of its own text), over all 65,043 of them."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(text)
    reference = tok.reference_encoder()
    wrong = []
    for index, value in upstream.items():
        try:
            sample = value.decode("utf-8")
        except UnicodeDecodeError:
            continue
        got = tokenizer.encode(sample, add_special_tokens=False).ids
        if got != reference(sample):
            wrong.append((index, sample, got))
    assert not wrong, wrong[:5]


def test_the_file_is_deterministic_and_names_unk_at_id_0(upstream: dict[int, bytes], text: str) -> None:
    assert hf_json.tokenizer_json(dict(reversed(list(upstream.items())))) == text
    doc = json.loads(text)
    assert doc["model"]["type"] == "WordPiece" and doc["model"]["vocab"][hf_json.UNK] == 0
    assert doc["model"]["continuing_subword_prefix"] == ""
    assert doc["decoder"]["type"] == "ByteLevel" and doc["added_tokens"] == []
    assert len(doc["model"]["vocab"]) == len(upstream) + 1


def test_a_shortest_match_pattern_fails_the_check(upstream: dict[int, bytes], text: str) -> None:
    """The check can fail: the same trie with lazy `??` takes the shortest token at each
    position, a tokenization that decodes back to the text but has other ids."""
    doc = json.loads(text)
    split = doc["pre_tokenizer"]["pretokenizers"][1]
    split["pattern"]["Regex"] = split["pattern"]["Regex"].replace(")?", ")??")
    check = hf_json.check_tokenizer_json(json.dumps(doc), tok.reference_encoder(), tok.CORPUS, len(upstream))
    assert not check.passed and check.mismatches and not check.roundtrip_failures


def test_a_swapped_id_fails_the_check(upstream: dict[int, bytes], text: str) -> None:
    doc = json.loads(text)
    vocab = doc["model"]["vocab"]
    the, and_ = hf_json.byte_level(b" the"), hf_json.byte_level(b" and")
    vocab[the], vocab[and_] = vocab[and_], vocab[the]
    check = hf_json.check_tokenizer_json(json.dumps(doc), tok.reference_encoder(), tok.CORPUS, len(upstream))
    assert not check.passed and any("ids differ" in m for m in check.mismatches)
