"""The RWKV World tokenizer step against the real upstream vocab and reference tokenizer."""

from __future__ import annotations

from pathlib import Path

import msgpack
import pytest
from typer.testing import CliRunner

from factory.cli import app
from factory.errors import InputError
from factory.tokenizer import rwkv_world as tok

runner = CliRunner()
UPSTREAM = tok.upstream_vocab_path()
OLD_TOKENIZERS_CPP = "eec72a6b234b92609cd95050198c0cac68d25d69"  # pinned by mlc-llm #848


@pytest.fixture(scope="module")
def upstream() -> dict[int, bytes]:
    return tok.parse_vocab(UPSTREAM)


def test_upstream_vocab_is_the_65529_token_world_vocab(upstream: dict[int, bytes]) -> None:
    assert len(upstream) == 65529
    assert upstream[1] == b"\x00"
    assert all(len(upstream[i]) == 1 for i in range(1, 257))  # every byte has a token


def test_tokenizer_model_is_the_msgpack_map_mlc_reads(upstream: dict[int, bytes]) -> None:
    blob = tok.pack(upstream)
    loaded = msgpack.unpackb(blob, raw=True, strict_map_key=False)
    assert loaded == upstream
    assert tok.pack(dict(reversed(list(upstream.items())))) == blob  # deterministic bytes


def test_current_encoder_matches_the_reference_on_the_corpus(upstream: dict[int, bytes]) -> None:
    report = tok.check_tokenizer(tok.pack(upstream), encoder="longest-prefix")
    assert report.passed, report.summary()
    assert report.texts == len(tok.CORPUS) >= 10


def test_pre_pr19_encoder_fails_and_says_why(upstream: dict[int, bytes]) -> None:
    report = tok.check_tokenizer(tok.pack(upstream), encoder=tok.runtime_encoder(OLD_TOKENIZERS_CPP))
    assert report.encoder == "byte-extend"
    assert not report.passed and report.mismatches and not report.vocab_problems
    error = tok.explain_failure(report, f"tokenizers-cpp {OLD_TOKENIZERS_CPP}")
    assert error.exit_code == 4
    assert error.hint is not None and "PR #19" in error.hint and tok.FIXED_COMMIT in error.hint


def test_the_two_encoders_differ_exactly_where_a_prefix_is_missing() -> None:
    vocab = {b"a": 1, b"b": 2, b"c": 3, b"abc": 4}
    assert tok.encode_longest_prefix(vocab, 3, b"abc") == [4]
    assert tok.encode_byte_extend(vocab, 3, b"abc") == [1, 2, 3]  # stops at the missing "ab"
    vocab[b"ab"] = 5
    assert tok.encode_byte_extend(vocab, 3, b"abc") == [4]


def test_known_toolchain_pins_map_to_their_encoders() -> None:
    by_mlc = tok.MLC_LLM_TOKENIZERS_CPP
    assert tok.runtime_encoder(by_mlc["9434126358a370a3ed76e06aa0774e086edcec97"]) == "byte-extend"
    assert tok.runtime_encoder(by_mlc["b44cdc53381bd804ef000775bb280de1c7ca6439"]) == "longest-prefix"
    assert tok.runtime_encoder(by_mlc["bb586e51eb20cba2e82216b75d22d8dd6657cce1"]) == "longest-prefix"


def test_a_vocab_missing_a_token_fails_the_vocab_comparison(upstream: dict[int, bytes]) -> None:
    broken = dict(upstream)
    del broken[10000]
    report = tok.check_tokenizer(tok.pack(broken), encoder="longest-prefix")
    assert not report.passed
    assert report.vocab_problems and "missing" in report.vocab_problems[0]


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("1 '\\x00' 2", "has 1 bytes, the line says 2"),
        ("1 not-a-literal 1", "not a Python str or bytes literal"),
        ("x 'a' 1", "ID LITERAL LENGTH"),
        ("1 __import__('os') 1", "not a Python str or bytes literal"),
    ],
)
def test_malformed_vocab_lines_are_input_errors(tmp_path: Path, line: str, words: str) -> None:
    vocab = tmp_path / "vocab.txt"
    vocab.write_text("2 'b' 1\n" + line + "\n")
    with pytest.raises(InputError) as info:
        tok.parse_vocab(vocab)
    problem = info.value.problems[0]
    assert problem.line == 2 and words in problem.message and problem.file == str(vocab)


def test_cli_writes_the_file_when_the_check_passes(tmp_path: Path, upstream: dict[int, bytes]) -> None:
    out = tmp_path / "params" / "tokenizer_model"
    result = runner.invoke(app, ["tokenizer", "rwkv-world", "-o", str(out)])
    assert result.exit_code == 0, result.output
    assert "tokenizer check PASS" in result.stdout
    assert tok.unpack(out.read_bytes()) == upstream


def test_cli_writes_nothing_when_the_check_fails(tmp_path: Path) -> None:
    out = tmp_path / "tokenizer_model"
    result = runner.invoke(app, ["tokenizer", "rwkv-world", "-o", str(out), "--tokenizers-cpp", OLD_TOKENIZERS_CPP])
    assert result.exit_code == 4
    assert "FAIL" in result.stderr and "PR #19" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_cli_rejects_a_broken_vocab(tmp_path: Path) -> None:
    vocab = tmp_path / "vocab.txt"
    lines = UPSTREAM.read_text(encoding="utf-8").splitlines()
    vocab.write_text("\n".join(lines[:500] + lines[501:]) + "\n", encoding="utf-8")  # one token dropped
    out = tmp_path / "tokenizer_model"
    result = runner.invoke(app, ["tokenizer", "rwkv-world", "-o", str(out), "--vocab", str(vocab)])
    assert result.exit_code == 4
    assert "1 ids missing" in result.stderr and "unmodified" in result.stderr
    assert not out.exists()


# A commit id no contract records: the check must refuse it rather than assume the fix.
UNRECORDED = "0123456789abcdef0123456789abcdef01234567"


def test_an_unrecorded_tokenizers_cpp_commit_is_refused() -> None:
    with pytest.raises(tok.UnknownTokenizersCpp) as info:
        tok.runtime_encoder(UNRECORDED, context="model m")
    error = info.value
    assert error.exit_code == 2
    assert UNRECORDED in error.message and "model m" in error.message and "PR #19" in error.message
    assert error.hint is not None and "merge-base --is-ancestor 4456fa8c" in error.hint
    assert tok.FIXED_COMMIT in error.hint


def test_no_commit_at_all_is_refused() -> None:
    with pytest.raises(tok.UnknownTokenizersCpp, match="tokenizers-cpp commit of this toolchain is unknown"):
        tok.runtime_encoder(None)


def test_the_encoder_follows_the_recorded_ancestry() -> None:
    from factory.toolchains.contract import contract_for, recorded_pins

    seen = 0
    for pin in recorded_pins():
        contract = contract_for(pin)
        assert contract is not None
        facts = contract.tokenizers_cpp
        assert facts.fix.pr == 19 and facts.fix.commit.startswith("4456fa8c")
        # The submodule the contract records is the one the factory's table uses, and it is itself recorded.
        assert tok.MLC_LLM_TOKENIZERS_CPP[pin] == facts.submodule.commit
        assert facts.submodule.commit in {c.commit for c in facts.commits}
        for entry in facts.commits:
            expected = "longest-prefix" if entry.rwkv_world_fix else "byte-extend"
            assert tok.runtime_encoder(entry.commit) == expected
            assert ("succeeds" in entry.evidence) == entry.rwkv_world_fix
            seen += 1
    assert seen >= 10
    assert tok.runtime_encoder(tok.FIXED_COMMIT) == "longest-prefix"
    # Every mlc-llm pin the factory knows maps to a recorded tokenizers-cpp commit.
    for submodule in tok.MLC_LLM_TOKENIZERS_CPP.values():
        tok.runtime_encoder(submodule)


def test_cli_refuses_an_unrecorded_commit(tmp_path: Path) -> None:
    out = tmp_path / "tokenizer_model"
    result = runner.invoke(app, ["tokenizer", "rwkv-world", "-o", str(out), "--tokenizers-cpp", UNRECORDED])
    assert result.exit_code == 2, result.output
    assert "recorded in no toolchain contract" in result.stderr
    assert not out.exists()
