"""`groundwire eval`'s arithmetic and inputs: ranking and answer metrics against values
computed by hand, BEIR loading (CRLF, headers) and the errors a malformed dataset gets."""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import pytest

from groundwire.tools.evaluation.beir import (
    DatasetError,
    load_answers,
    load_dataset,
    load_qrels,
    tenant_for,
)
from groundwire.tools.evaluation.gates import gate_checks, reproduce_command
from groundwire.tools.evaluation.judge import judge_prompt, parse_grade
from groundwire.tools.evaluation.metrics import (
    documents_in_rank_order,
    exact_match,
    mean_metrics,
    mrr_at_k,
    ndcg_at_k,
    normalize_answer,
    ranking_metrics,
    recall_at_k,
    token_f1,
)

LOG2_3 = math.log2(3)  # the discount at rank 2
LOG2_5 = math.log2(5)  # the discount at rank 4


# --------------------------------------------------------------------------- ranking


def test_binary_ndcg_recall_and_mrr_by_hand() -> None:
    relevance = {"a": 1, "b": 1}
    ranking = ["x", "a", "y", "b"]
    # DCG = 1/log2(3) + 1/log2(5) = 1.06161; the ideal puts both first: 1 + 1/log2(3).
    assert ndcg_at_k(ranking, relevance, 10) == pytest.approx(
        (1 / LOG2_3 + 1 / LOG2_5) / (1 + 1 / LOG2_3)
    )
    assert ndcg_at_k(ranking, relevance, 10) == pytest.approx(0.65092, abs=1e-5)
    assert ndcg_at_k(ranking, relevance, 2) == pytest.approx(0.38685, abs=1e-5)
    assert recall_at_k(ranking, relevance, 2) == 0.5
    assert recall_at_k(ranking, relevance, 10) == 1.0
    assert mrr_at_k(ranking, relevance, 10) == 0.5
    assert mrr_at_k(ranking, relevance, 1) == 0.0


def test_graded_ndcg_uses_the_grades_as_gains() -> None:
    graded = {"a": 2, "b": 1}
    # b (1) before a (2): DCG = 1 + 2/log2(3) = 2.26186; ideal = 2 + 1/log2(3) = 2.63093.
    assert ndcg_at_k(["b", "a"], graded, 10) == pytest.approx(0.85972, abs=1e-5)
    assert ndcg_at_k(["a", "b"], graded, 10) == pytest.approx(1.0)
    # A grade-0 judgement is not relevant and a negative one gains nothing.
    assert ndcg_at_k(["z", "a"], {"a": 1, "z": 0}, 10) == pytest.approx(1 / LOG2_3)
    assert ndcg_at_k(["n", "a"], {"a": 1, "n": -1}, 10) == pytest.approx(1 / LOG2_3)
    assert recall_at_k(["z"], {"z": 0, "a": 1}, 10) == 0.0
    assert mrr_at_k(["z", "a"], {"z": 0, "a": 3}, 10) == 0.5


def test_the_ideal_ranking_is_cut_at_k_too() -> None:
    many = {doc: 1 for doc in "abcdefghijkl"}  # 12 relevant, 10 retrieved, all relevant
    assert ndcg_at_k(list("abcdefghij"), many, 10) == pytest.approx(1.0)
    assert recall_at_k(list("abcdefghij"), many, 10) == pytest.approx(10 / 12)


def test_empty_rankings_and_queries_without_relevant_documents_score_zero() -> None:
    assert ranking_metrics([], {"a": 1}) == {
        "ndcg@10": 0.0,
        "recall@10": 0.0,
        "recall@100": 0.0,
        "mrr@10": 0.0,
    }
    assert ranking_metrics(["a", "b"], {"a": 0}) == dict.fromkeys(
        ("ndcg@10", "recall@10", "recall@100", "mrr@10"), 0.0
    )
    # A judged query that got no ranking counts as zero in the mean.
    means = mean_metrics({"q1": ["a"], "q2": []}, {"q1": {"a": 1}, "q2": {"b": 1}})
    assert means["mrr@10"] == 0.5 and means["ndcg@10"] == 0.5


def test_chunks_rank_their_document_at_its_best_chunk() -> None:
    assert documents_in_rank_order(["d1", "d2", "d1", "d3", "d2"]) == ["d1", "d2", "d3"]
    assert documents_in_rank_order([]) == []


# --------------------------------------------------------------------------- answers


def test_squad_normalisation() -> None:
    assert normalize_answer("The Moon's  gravity!") == "moons gravity"
    assert normalize_answer("An apple, a day") == "apple day"
    assert normalize_answer("theory") == "theory"  # articles only as whole words


def test_exact_match_ignores_case_punctuation_articles_and_citations() -> None:
    assert exact_match("The Moon's gravity [1].", ["moons gravity"]) == 1.0
    assert exact_match("Jupiter [1, 2]", ["Saturn", "jupiter"]) == 1.0
    assert exact_match("Jupiter is big", ["Jupiter"]) == 0.0


def test_token_f1_by_hand_and_the_best_reference_wins() -> None:
    # "gravity of moon raises tides" (5 tokens) against "moons gravity" (2): one in common;
    # P = 1/5, R = 1/2, F1 = 2PR / (P + R) = 0.2 / 0.7.
    assert token_f1("The gravity of the Moon raises tides [1]", ["Moon's gravity"]) == (
        pytest.approx(0.2 / 0.7)
    )
    # Repeated tokens count as often as both sides have them: "x x y" vs "x y y" → 2 common.
    assert token_f1("x x y", ["x y y"]) == pytest.approx(2 / 3)
    assert token_f1("Tides follow the Moon's gravity", ["nothing", "moon's gravity"]) == (
        pytest.approx(2 / 3)
    )


def test_token_f1_with_empty_sides() -> None:
    assert token_f1("", ["Jupiter"]) == 0.0
    assert token_f1("[1]", ["Jupiter"]) == 0.0  # only a citation: nothing said
    assert token_f1("the", ["a"]) == 1.0  # both normalise to nothing: SQuAD v2 counts a match


def test_judge_grades_are_parsed_and_the_prompt_holds_everything() -> None:
    assert parse_grade("4") == pytest.approx(0.8)
    assert parse_grade("Grade: 5\n") == 1.0
    assert parse_grade("0") == 0.0
    assert math.isnan(parse_grade("10"))  # not a grade on the scale
    assert math.isnan(parse_grade("I cannot tell"))
    prompt = judge_prompt("Which planet?", ["Jupiter", "the gas giant"], "Saturn [1]")
    assert "Which planet?" in prompt and "- Jupiter\n- the gas giant" in prompt
    assert "Saturn [1]" in prompt
    assert "(no answer)" in judge_prompt("q", ["a"], "  ")


# --------------------------------------------------------------------------- datasets


def _write_dataset(root: Path, qrels: str, newline: str = "\n") -> Path:
    (root / "qrels").mkdir(parents=True)
    docs = [{"_id": "d1", "title": "One", "text": "first"}, {"_id": "d2", "text": "second"}]
    (root / "corpus.jsonl").write_text("".join(json.dumps(d) + "\n" for d in docs))
    queries = [{"_id": "q1", "text": "first?"}, {"_id": "q2", "text": "second?"}]
    (root / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    (root / "qrels" / "test.tsv").write_bytes(qrels.replace("\n", newline).encode())
    return root


def test_a_beir_dataset_with_crlf_qrels_and_a_header(tmp_path: Path) -> None:
    folder = _write_dataset(
        tmp_path / "tiny",
        "query-id\tcorpus-id\tscore\nq2\td2\t2\nq2\td1\t0\nq1\td1\t1\n",
        newline="\r\n",
    )
    dataset = load_dataset(folder)
    assert dataset.name == "tiny" and dataset.split == "test"
    assert [d.doc_id for d in dataset.corpus] == ["d1", "d2"]
    assert dataset.corpus[1].title == ""
    assert dataset.qrels == {"q2": {"d2": 2, "d1": 0}, "q1": {"d1": 1}}
    assert list(dataset.queries) == ["q2", "q1"]  # the qrels' order
    assert dataset.queries["q1"] == "first?"
    assert len(dataset.fingerprint) == 64
    assert dataset.judged_docs_missing == 0
    assert list(load_dataset(folder, limit_queries=1).queries) == ["q2"]


def test_qrels_without_a_header_and_with_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "q.tsv"
    path.write_text("q1\td1\t1\n\nq1\td2\t2\n")
    assert load_qrels(path) == {"q1": {"d1": 1, "d2": 2}}


@pytest.mark.parametrize(
    ("qrels", "message"),
    [
        ("query-id\tcorpus-id\tscore\nq1\td1\n", "test.tsv:2: expected three tab-separated"),
        ("q1\td1\thigh\n", "test.tsv:1: score 'high' is not an integer"),
        ("query-id\tcorpus-id\tscore\n", "test.tsv: no judgements"),
        ("q9\td1\t1\n", "queries.jsonl: 1 query judged in test.tsv has no text here"),
    ],
)
def test_malformed_qrels_name_the_file_and_line(tmp_path: Path, qrels: str, message: str) -> None:
    folder = _write_dataset(tmp_path / "bad", qrels)
    with pytest.raises(DatasetError, match=message):
        load_dataset(folder)


def test_malformed_jsonl_names_the_file_and_line(tmp_path: Path) -> None:
    folder = _write_dataset(tmp_path / "bad", "q1\td1\t1\n")
    corpus = folder / "corpus.jsonl"
    corpus.write_text(corpus.read_text() + "{not json\n")
    with pytest.raises(DatasetError, match=r"corpus.jsonl:3: not valid JSON"):
        load_dataset(folder)
    corpus.write_text('{"_id": "d1", "text": "x"}\n\n{"title": "no id", "text": "y"}\n')
    with pytest.raises(DatasetError, match=r"corpus.jsonl:3: missing '_id'"):
        load_dataset(folder)
    corpus.write_text('{"_id": "d1", "text": "x"}\n{"_id": "d1", "text": "y"}\n')
    with pytest.raises(DatasetError, match=r"corpus.jsonl:2: duplicate _id 'd1'"):
        load_dataset(folder)
    corpus.write_text('["a list"]\n')
    with pytest.raises(DatasetError, match=r"corpus.jsonl:1: each line must be a JSON object"):
        load_dataset(folder)


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="not a directory"):
        load_dataset(tmp_path / "nowhere")
    folder = _write_dataset(tmp_path / "ds", "q1\td1\t1\n")
    with pytest.raises(DatasetError, match=r"qrels/dev.tsv: file not found"):
        load_dataset(folder, split="dev")
    (folder / "corpus.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"corpus.jsonl: file not found"):
        load_dataset(folder)


def test_reference_answers(tmp_path: Path) -> None:
    path = tmp_path / "answers.jsonl"
    rows = [
        {"question": "Which planet is largest?", "answer": "Jupiter", "doc_ids": ["d7", 8]},
        {"id": "x", "question": "Tides?", "answers": ["the Moon", "lunar gravity"]},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    first, second = load_answers(path)
    assert (first.question_id, first.answers, first.doc_ids) == ("1", ("Jupiter",), ("d7", "8"))
    assert (second.question_id, second.answers, second.doc_ids) == (
        "x",
        ("the Moon", "lunar gravity"),
        (),
    )
    path.write_text('{"question": "q"}\n')
    with pytest.raises(DatasetError, match=r"answers.jsonl:1: needs 'answer'"):
        load_answers(path)
    path.write_text('{"answer": "a"}\n')
    with pytest.raises(DatasetError, match=r"answers.jsonl:1: needs 'question'"):
        load_answers(path)
    path.write_text('{"question": "q", "answer": "a", "doc_ids": "d1"}\n')
    with pytest.raises(DatasetError, match=r"answers.jsonl:1: 'doc_ids' must be a list"):
        load_answers(path)


def test_tenant_names_follow_the_tenant_rules() -> None:
    fingerprint = "0123456789abcdef" * 4
    assert tenant_for("scifact", fingerprint) == "eval-scifact-0123456789"
    assert tenant_for("my data/set ü", fingerprint) == "eval-my-data-set-0123456789"
    long = tenant_for("x" * 100, fingerprint)
    assert len(long) == 64 and long.endswith("-0123456789")
    assert tenant_for("..", fingerprint) == "eval-dataset-0123456789"


# --------------------------------------------------------------------------- gates


def _args(**overrides: object) -> argparse.Namespace:
    from groundwire.server.cli import build_parser

    args = build_parser().parse_args(["eval", "../shared/datasets/scifact"])
    for key, value in overrides.items():
        setattr(args, key, value)
    return args


def test_gates_compare_the_figures_and_say_which() -> None:
    modes = {
        "dense": {"metrics": {"ndcg@10": 0.6}},
        "sparse": {"metrics": {"ndcg@10": 0.7}},
        "hybrid": {"metrics": {"ndcg@10": 0.7}},
    }
    assert gate_checks(_args(), modes) == []
    checks = gate_checks(_args(min_dense_ndcg=0.64, require_hybrid_ge_sparse=True), modes)
    assert [(c["name"], c["passed"]) for c in checks] == [
        ("min_dense_ndcg", False),
        ("hybrid_ge_sparse", True),  # equal is enough
    ]
    assert checks[0]["detail"] == "dense nDCG@10 0.6000 < 0.64 (--min-dense-ndcg)"
    modes["dense"]["metrics"]["ndcg@10"] = math.nan
    assert not gate_checks(_args(min_dense_ndcg=0.0), modes)[0]["passed"]


def test_the_reproduce_command_names_what_differs_from_the_defaults() -> None:
    assert reproduce_command(_args()) == (
        "groundwire eval ../shared/datasets/scifact --data-dir data/eval"
    )
    command = reproduce_command(
        _args(
            modes=["dense"],
            min_dense_ndcg=0.64,
            address="host:50051",
            api_key="secret-key-0123456789",
        )
    )
    assert command == (
        "groundwire eval ../shared/datasets/scifact --modes dense --min-dense-ndcg 0.64 "
        '--address host:50051 --api-key "$GROUNDWIRE_API_KEY"'
    )
    assert "secret" not in command


# --------------------------------------------------------------------------- long queries


def test_long_queries_are_cut_to_the_limit_or_left_out() -> None:
    from groundwire.tools.evaluation.retrieval_eval import fit_queries

    queries = {"short": "tides?", "long": "x" * 20, "edge": "y" * 10}
    fitted, long = fit_queries(queries, 10, "truncate")
    assert fitted == {"short": "tides?", "long": "x" * 10, "edge": "y" * 10}
    assert long.as_dict() == {
        "limit_chars": 10,
        "action": "truncate",
        "count": 1,
        "first_ids": ["long"],
    }
    fitted, long = fit_queries(queries, 10, "skip")
    assert list(fitted) == ["short", "edge"] and long.query_ids == ("long",)
    # A server that does not say its limit: the contract's first one, 4,096.
    fitted, long = fit_queries({"q": "z" * 5000}, 0, "truncate")
    assert len(fitted["q"]) == 4096 and long.limit == 4096


def test_ignore_identical_ids_drops_the_query_itself_before_scoring() -> None:
    from groundwire.tools.evaluation.retrieval_eval import ModeRun, score_mode

    run = ModeRun(rankings={"a1": ["a1", "a2", "b"]}, latency_s={"a1": 0.01})
    qrels = {"a1": {"a2": 1}}
    assert score_mode(run, qrels)["per_query"]["a1"]["mrr@10"] == 0.5
    ignored = score_mode(run, qrels, ignore_identical_ids=True)["per_query"]["a1"]
    assert ignored["mrr@10"] == 1.0 and ignored["top10"] == ["a2", "b"]
