"""The RWKV World tokenizer step: the upstream vocab -> `tokenizer_model`, and its conformance check.

MLC's runtime reads RWKV World tokens from a file named `tokenizer_model`: a
msgpack map {int id: bytes} that tokenizers-cpp loads (FromBlobRWKVWorld).
Neither MLC flow puts it in the bundle, so the factory makes it from the
upstream vocab that the `rwkv` package ships, and checks it before use:

- the file maps exactly the upstream vocab;
- a multilingual corpus encoded the way the pinned runtime encodes gives the
  reference tokenizer's ids (the `rwkv` package's TRIE_TOKENIZER) and decodes
  back to the same text.

tokenizers-cpp changed its encoder in PR #19 (4456fa8c, 2023-11-16). Before
it, the encoder grew a match one byte at a time and stopped at the first
prefix missing from the vocab; since then it takes the longest prefix in the
vocab, as the reference does. Toolchains pinned before #19 fail the check.
"""

from __future__ import annotations

import ast
import functools
import importlib.resources
import os
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import msgpack

from factory.errors import FactoryError, InputError, Problem, read_input_text

VOCAB_NAME = "rwkv_vocab_v20230424.txt"
TOKENIZER_FILE = "tokenizer_model"

Encoder = Literal["longest-prefix", "byte-extend"]

FIXED_COMMIT = "27dbe17d7268801ec720569167af905c88d3db50"
"""A tokenizers-cpp commit with #19, pinned by mlc-llm b44cdc53: the suggested override."""

# mlc-llm's 3rdparty/tokenizers-cpp submodule (`git ls-tree COMMIT 3rdparty/tokenizers-cpp`)
# at the commits the factory knows; a test holds the pins with a recorded contract to it.
# Whether each submodule commit has #19 is recorded in the contracts, not here.
MLC_LLM_TOKENIZERS_CPP = {
    "9434126358a370a3ed76e06aa0774e086edcec97": "eec72a6b234b92609cd95050198c0cac68d25d69",
    "b44cdc53381bd804ef000775bb280de1c7ca6439": "27dbe17d7268801ec720569167af905c88d3db50",
    "bb586e51eb20cba2e82216b75d22d8dd6657cce1": "34885cfd7b9ef27b859c28a41e71413dd31926f5",
    "79d603f085f50500e9509fa01785ffa7ecfaaa93": "34885cfd7b9ef27b859c28a41e71413dd31926f5",  # world.yaml
}

# Chinese, English, code, emoji, mixed scripts and whitespace: the texts every build checks.
CORPUS: tuple[str, ...] = (
    "The quick brown fox jumps over the lazy dog.",
    "User: What is the capital of France?\n\nAssistant: The capital of France is Paris.",
    "我们提出了 Eagle (RWKV-5) 和 Finch (RWKV-6)，它们是基于 RWKV-4 架构的序列模型改进版本。",
    "人工智能正在改变世界，深度学习模型的推理效率越来越重要。",
    "def fibonacci(n: int) -> int:\n    return n if n < 2 else fibonacci(n - 1) + fibonacci(n - 2)\n",
    'for (int i = 0; i < n; ++i) { printf("%d\\n", a[i]); }  // C loop',
    "Emoji: 🙂🚀👩‍💻🇫🇷 ❤️ and symbols ∑∫√ ≠ ≤ ≥",
    "日本語のテキスト、한국어 텍스트, русский текст, العربية, हिन्दी, ελληνικά.",
    "Mixed 中文 and English 混合 text with numbers 12345 and 3.14159.",
    "   leading spaces, tabs\tand\r\nwindows newlines\n\n\n",
    "https://github.com/mlc-ai/mlc-llm/pull/848?tab=files#diff-1",
    "anthropomorphization incomprehensibilities antidisestablishmentarianism",
)


class TokenizerCheckError(FactoryError):
    """The tokenizer conformance gate rejected the tokenizer. Exit code 4."""

    exit_code = 4


def upstream_vocab_path() -> Path:
    """The vocab file inside the installed `rwkv` package."""
    return Path(str(importlib.resources.files("rwkv") / VOCAB_NAME))


def parse_vocab(path: Path) -> dict[int, bytes]:
    """Read an RWKV vocab file: lines of `id <Python str or bytes literal> byte-length`."""
    lines = read_input_text(
        path, what="vocab", fix=f"pass the upstream {VOCAB_NAME} (the `rwkv` package ships it)"
    ).splitlines()
    vocab: dict[int, bytes] = {}
    seen: dict[bytes, int] = {}
    for number, line in enumerate(lines, start=1):
        token = _parse_line(path, number, line)
        index, value = token
        if index in vocab or value in seen:
            raise _bad_line(path, number, f"duplicate {'id' if index in vocab else 'token'} on this line")
        vocab[index] = value
        seen[value] = index
    if not vocab:
        raise _bad_line(path, 1, "the vocab is empty")
    return vocab


def _parse_line(path: Path, number: int, line: str) -> tuple[int, bytes]:
    head, space, rest = line.partition(" ")
    literal, space2, length = rest.rpartition(" ")
    if not space or not space2 or not head.isdigit() or not length.isdigit():
        raise _bad_line(path, number, "expected `ID LITERAL LENGTH`")
    try:
        value = ast.literal_eval(literal)
    except (ValueError, SyntaxError):
        raise _bad_line(path, number, f"{literal[:40]!r} is not a Python str or bytes literal") from None
    if isinstance(value, str):
        value = value.encode("utf-8")
    if not isinstance(value, bytes):
        raise _bad_line(path, number, "the token must be a str or bytes literal")
    if len(value) != int(length):
        raise _bad_line(path, number, f"the token has {len(value)} bytes, the line says {length}")
    return int(head), value


def _bad_line(path: Path, number: int, message: str) -> InputError:
    return InputError(
        [
            Problem(
                file=str(path),
                field="",
                line=number,
                message=message,
                fix=f"use the upstream {VOCAB_NAME} unmodified (the `rwkv` package ships it)",
            )
        ]
    )


def pack(vocab: Mapping[int, bytes]) -> bytes:
    """The `tokenizer_model` bytes: msgpack {id: bytes}, ids ascending so equal vocabs give equal files."""
    packed: bytes = msgpack.packb({index: vocab[index] for index in sorted(vocab)}, use_bin_type=True)
    return packed


def unpack(blob: bytes) -> dict[int, bytes]:
    loaded = msgpack.unpackb(blob, raw=True, strict_map_key=False)
    if not isinstance(loaded, dict):
        raise ValueError("tokenizer_model is not a msgpack map")
    return {int(k): bytes(v) for k, v in loaded.items()}


def write_tokenizer_model(vocab: Mapping[int, bytes], out: Path) -> None:
    """Write atomically, so a reader never sees half a tokenizer."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(pack(vocab))
        os.replace(tmp, out)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def encode_longest_prefix(token_ids: Mapping[bytes, int], max_len: int, data: bytes) -> list[int]:
    """tokenizers-cpp since #19 (and the reference): at each position take the longest vocab prefix."""
    ids = []
    position = 0
    while position < len(data):
        for length in range(min(max_len, len(data) - position), 0, -1):
            token = token_ids.get(data[position : position + length])
            if token is not None:
                ids.append(token)
                position += length
                break
        else:
            raise ValueError(f"byte {data[position]:#04x} is not in the vocab")
    return ids


def encode_byte_extend(token_ids: Mapping[bytes, int], max_len: int, data: bytes) -> list[int]:
    """tokenizers-cpp before #19: grow the match a byte at a time and stop at the
    first prefix the vocab lacks, even if a longer one is in it."""
    ids = []
    position = 0
    while position < len(data):
        length = 1
        token = token_ids.get(data[position : position + 1])
        if token is None:
            raise ValueError(f"byte {data[position]:#04x} is not in the vocab")
        while position + length < len(data):
            longer = token_ids.get(data[position : position + length + 1])
            if longer is None:
                break
            token, length = longer, length + 1
        ids.append(token)
        position += length
    return ids


ENCODERS: dict[Encoder, Callable[[Mapping[bytes, int], int, bytes], list[int]]] = {
    "longest-prefix": encode_longest_prefix,
    "byte-extend": encode_byte_extend,
}


class UnknownTokenizersCpp(FactoryError):
    """A tokenizers-cpp commit whose encoder the factory cannot vouch for. Exit code 2."""

    exit_code = 2


def runtime_encoder(tokenizers_cpp_commit: str | None, *, context: str = "") -> Encoder:
    """The encoder a runtime with tokenizers-cpp at this commit uses, decided by whether
    PR #19 is among its ancestors, as the toolchain contracts record it. A commit no
    contract records, or no commit at all, is refused: passing it would trust an
    encoder nobody has checked."""
    from factory.toolchains.contract import tokenizers_cpp_commit as recorded

    where = f" ({context})" if context else ""
    if not tokenizers_cpp_commit:
        raise UnknownTokenizersCpp(
            f"the tokenizers-cpp commit of this toolchain is unknown{where}: its mlc-llm pin is not in "
            "factory/tokenizer/rwkv_world.py MLC_LLM_TOKENIZERS_CPP and the toolchain has no `tokenizers_cpp:` pin",
            hint="add `tokenizers_cpp: {repo: https://github.com/mlc-ai/tokenizers-cpp, commit: ...}` to the "
            f"toolchain, e.g. commit {FIXED_COMMIT} (has PR #19)",
        )
    entry = recorded(tokenizers_cpp_commit)
    if entry is None:
        raise UnknownTokenizersCpp(
            f"tokenizers-cpp {tokenizers_cpp_commit}{where} is recorded in no toolchain contract "
            "(factory/toolchains/contracts/*.json, tokenizers_cpp.commits), so whether its RWKV World "
            "encoder has the fix of PR #19 (4456fa8c) is unknown",
            hint="pin a recorded commit (e.g. "
            f"{FIXED_COMMIT}), or read its ancestry in mlc-ai/tokenizers-cpp "
            f"(`git merge-base --is-ancestor 4456fa8c {tokenizers_cpp_commit[:12]}`) and record it "
            "in the pin's contract under tokenizers_cpp.commits",
        )
    return "longest-prefix" if entry.rwkv_world_fix else "byte-extend"


def reference_encoder(vocab: Path | None = None) -> Callable[[str], list[int]]:
    """The `rwkv` package's TRIE_TOKENIZER encode for `vocab` (default: the upstream one)."""
    return _reference(str(vocab or upstream_vocab_path()))


@functools.lru_cache(maxsize=2)
def _reference(vocab_path: str) -> Callable[[str], list[int]]:
    from rwkv.rwkv_tokenizer import TRIE_TOKENIZER  # the upstream reference implementation

    encode: Callable[[str], list[int]] = TRIE_TOKENIZER(vocab_path).encode
    return encode


@dataclass(frozen=True)
class Mismatch:
    text: str
    expected: Sequence[int]
    got: Sequence[int]

    @property
    def first_difference(self) -> int:
        for index, (a, b) in enumerate(zip(self.expected, self.got, strict=False)):
            if a != b:
                return index
        return min(len(self.expected), len(self.got))


@dataclass(frozen=True)
class CheckReport:
    encoder: Encoder
    tokens: int
    texts: int
    vocab_problems: tuple[str, ...]
    mismatches: tuple[Mismatch, ...]
    roundtrip_failures: tuple[str, ...]

    @property
    def passed(self) -> bool:
        return not (self.vocab_problems or self.mismatches or self.roundtrip_failures)

    def summary(self) -> str:
        verdict = "PASS" if self.passed else "FAIL"
        return (
            f"tokenizer check {verdict}: {self.tokens} tokens, {self.texts} texts, encoder {self.encoder}, "
            f"{len(self.vocab_problems)} vocab problems, {len(self.mismatches)} id mismatches, "
            f"{len(self.roundtrip_failures)} round-trip failures"
        )


def check_tokenizer(
    blob: bytes, *, encoder: Encoder, reference_vocab: Path | None = None, corpus: Sequence[str] = CORPUS
) -> CheckReport:
    """Compare a `tokenizer_model` with the upstream vocab and, on `corpus`, the
    runtime's encoder with the reference tokenizer."""
    reference_path = reference_vocab or upstream_vocab_path()
    upstream = parse_vocab(reference_path)
    candidate = unpack(blob)
    problems = []
    missing = sorted(set(upstream) - set(candidate))
    extra = sorted(set(candidate) - set(upstream))
    changed = sorted(i for i in set(upstream) & set(candidate) if upstream[i] != candidate[i])
    for label, ids in (("missing", missing), ("not in the upstream vocab", extra), ("mapped differently", changed)):
        if ids:
            problems.append(f"{len(ids)} ids {label} (first: {ids[:5]})")
    token_ids = {value: index for index, value in candidate.items()}
    max_len = max(len(value) for value in candidate.values())
    encode = ENCODERS[encoder]
    reference = _reference(str(reference_path))
    mismatches = []
    roundtrip = []
    for text in corpus:
        try:
            got = encode(token_ids, max_len, text.encode("utf-8"))
        except ValueError as exc:
            roundtrip.append(f"{text[:30]!r}: {exc}")
            continue
        expected = reference(text)
        if got != expected:
            mismatches.append(Mismatch(text, expected, got))
        if b"".join(candidate[i] for i in got) != text.encode("utf-8"):
            roundtrip.append(f"{text[:30]!r} does not decode back to itself")
    return CheckReport(
        encoder=encoder,
        tokens=len(candidate),
        texts=len(corpus),
        vocab_problems=tuple(problems),
        mismatches=tuple(mismatches),
        roundtrip_failures=tuple(roundtrip),
    )


def explain_failure(report: CheckReport, runtime: str) -> TokenizerCheckError:
    lines = [report.summary()]
    lines += [f"  vocab: {p}" for p in report.vocab_problems]
    for m in report.mismatches[:3]:
        i = m.first_difference
        lines.append(
            f"  {m.text[:40]!r}: ids differ at {i}: reference {list(m.expected[i : i + 4])}, "
            f"runtime {list(m.got[i : i + 4])}"
        )
    lines += [f"  {r}" for r in report.roundtrip_failures[:3]]
    if report.encoder == "byte-extend":
        hint = (
            f"{runtime} predates tokenizers-cpp PR #19 and encodes RWKV World text differently from the "
            f"reference; pin a fixed tokenizers-cpp (toolchain `tokenizers_cpp:` override, e.g. commit "
            f"{FIXED_COMMIT}) or an mlc-llm commit whose submodule has the fix"
        )
    elif report.vocab_problems:
        hint = f"build tokenizer_model from the upstream {VOCAB_NAME} unmodified"
    else:
        hint = "the runtime encoder disagrees with the reference; report it with the texts above"
    return TokenizerCheckError("\n".join(lines), hint=hint)


@dataclass(frozen=True)
class TokenizerFile:
    path: Path
    size: int
    source: Path
    report: CheckReport


def make_tokenizer_file(output: Path, *, vocab: Path | None = None, tokenizers_cpp: str | None = None) -> TokenizerFile:
    """`tokenizer_model` from the vocab (default: the `rwkv` package's), checked against
    the reference with the encoder of `tokenizers_cpp` (default: the current one); the
    file is written only when the check passes."""
    source = vocab or upstream_vocab_path()
    blob = pack(parse_vocab(source))
    encoder = runtime_encoder(tokenizers_cpp) if tokenizers_cpp else "longest-prefix"
    report = check_tokenizer(blob, encoder=encoder)
    if not report.passed:
        raise explain_failure(report, f"tokenizers-cpp {tokenizers_cpp or 'at HEAD'}")
    write_tokenizer_model(unpack(blob), output)
    return TokenizerFile(path=output, size=len(blob), source=source, report=report)
