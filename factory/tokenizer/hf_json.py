"""RWKV World as a Hugging Face `tokenizer.json`, exact: for clients that read only that
format (WebLLM, and mlc-llm's own runtime, which prefers it to `tokenizer_model`).

RWKV World encodes by greedy longest match over UTF-8 bytes (the reference's trie). The
file expresses that with stock `tokenizers` parts and no added tokens:

- a ByteLevel pre-tokenizer (no prefix space, no GPT-2 regex) turns the text into the
  byte-level alphabet, one character per byte, so partial UTF-8 tokens are expressible;
- a Split pre-tokenizer whose pattern is the vocab's trie written as a regex, with
  `(?:...)?` after every node that ends a token: a backtracking or leftmost-first engine
  prefers the deeper branch, so each match is the longest token at that position and the
  pieces are exactly the reference's tokens (every single byte is a token, so nothing is
  left between matches);
- a WordPiece model with no continuing-subword prefix, which maps each piece, a whole
  vocab entry, to its id in one lookup;
- a ByteLevel decoder back to bytes.

Encoding is linear in the text (a WordPiece over whole words is quadratic: 115 s for
14,380 characters here). The check holds the `tokenizers` package's ids and round trip to
the reference on the corpus, as `tokenizer_model`'s check does.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

TOKENIZER_JSON = "tokenizer.json"  # the name every client looks for
JSON_RECIPE = "trie-split-wordpiece/1"
"""In the tokenizer node's build key: change it when the file's recipe changes (the
`tokenizers` package that writes it is pinned in pyproject.toml)."""
UNK = "<|endoftext|>"
"""Id 0, which the RWKV vocab leaves free (it ends a document in RWKV's training data)."""


@functools.cache
def _byte_alphabet() -> dict[int, str]:
    """GPT-2's byte -> printable character table, the one `tokenizers`' ByteLevel uses."""
    printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
    table = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in table:
            table[b] = chr(256 + extra)
            extra += 1
    return table


def byte_level(data: bytes) -> str:
    alphabet = _byte_alphabet()
    return "".join(alphabet[b] for b in data)


def _trie_pattern(tokens: Sequence[str]) -> str:
    """The longest-match regex of `tokens` (byte-level strings), built from their trie."""
    end = ""  # a key no byte-level character equals
    root: dict[str, Any] = {}
    for token in tokens:
        node = root
        for char in token:
            node = node.setdefault(char, {})
        node[end] = True

    # Iterative post-order walk: tokens are up to 128 bytes deep, past Python's recursion comfort.
    done: dict[int, str] = {}
    stack: list[tuple[dict[str, Any], bool]] = [(root, False)]
    while stack:
        node, expanded = stack.pop()
        children = sorted(k for k in node if k != end)
        if not expanded:
            stack.append((node, True))
            stack.extend((node[k], False) for k in children)
            continue
        branches = [re.escape(k) + done[id(node[k])] for k in children]
        if not branches:
            done[id(node)] = ""
            continue
        body = branches[0] if len(branches) == 1 else "(?:" + "|".join(branches) + ")"
        # A node that ends a token may stop here; `?` is greedy, so longer tokens win.
        done[id(node)] = f"(?:{body})?" if node is not root and end in node else body
    return done[id(root)]


def tokenizer_json(vocab: Mapping[int, bytes]) -> str:
    """The `tokenizer.json` text for `vocab` ({id: token bytes}); deterministic."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers

    if 0 in vocab:
        raise ValueError("the RWKV World vocab leaves id 0 free; this one uses it")
    pieces = {byte_level(value): index for index, value in vocab.items()}
    model = models.WordPiece(
        vocab={UNK: 0, **pieces}, unk_token=UNK, continuing_subword_prefix="", max_input_chars_per_word=1 << 16
    )
    tokenizer = Tokenizer(model)
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
            pre_tokenizers.Split(Regex(_trie_pattern(sorted(pieces))), behavior="isolated"),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    text: str = tokenizer.to_str(pretty=False)
    return text + "\n"


@dataclass(frozen=True)
class JsonCheck:
    texts: int
    mismatches: tuple[str, ...]
    roundtrip_failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not (self.mismatches or self.roundtrip_failures)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"tokenizer.json check {verdict}: {self.texts} texts through the `tokenizers` package, "
            f"{len(self.mismatches)} id mismatches, {len(self.roundtrip_failures)} round-trip failures"
        )


def check_tokenizer_json(text: str, reference: Any, corpus: Sequence[str], vocab_size: int | None = None) -> JsonCheck:
    """Load `text` with the `tokenizers` package and compare its ids with `reference(text)`
    (the reference tokenizer's encode) and its decode with the text, on every corpus text."""
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_str(text)
    mismatches, roundtrip = [], []
    if vocab_size is not None and tokenizer.get_vocab_size() != vocab_size + 1:
        mismatches.append(f"{tokenizer.get_vocab_size()} entries, expected {vocab_size} tokens and {UNK}")
    for sample in corpus:
        got = tokenizer.encode(sample, add_special_tokens=False).ids
        expected = list(reference(sample))
        if got != expected:
            pairs = zip(got, expected, strict=False)
            at = next((i for i, (a, b) in enumerate(pairs) if a != b), min(len(got), len(expected)))
            shown = f"reference {expected[at : at + 4]}, got {got[at : at + 4]}"
            mismatches.append(f"{sample[:30]!r}: ids differ at {at}: {shown}")
        if tokenizer.decode(got, skip_special_tokens=False) != sample:
            roundtrip.append(f"{sample[:30]!r} does not decode back to itself")
    return JsonCheck(texts=len(corpus), mismatches=tuple(mismatches), roundtrip_failures=tuple(roundtrip))
