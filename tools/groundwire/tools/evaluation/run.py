"""One evaluation run: read the dataset, open the server, ingest, retrieve in each mode,
answer, check the gates, write the result files and print the summary."""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from groundwire.sdk import errors as sdk_errors
from groundwire.tools.evaluation import report
from groundwire.tools.evaluation.answer_eval import answer_all, summarize_answers
from groundwire.tools.evaluation.beir import (
    Dataset,
    DatasetError,
    ReferenceAnswer,
    load_answers,
    load_dataset,
    tenant_for,
)
from groundwire.tools.evaluation.defaults import (
    DEFAULT_OUTPUT_ROOT,
    EXIT_BAD_INPUT,
    EXIT_GATE_FAILED,
    EXIT_RUN_FAILED,
)
from groundwire.tools.evaluation.gates import gate_checks, reproduce_command
from groundwire.tools.evaluation.judge import (
    AnswerJudge,
    JudgeUnavailableError,
    default_api_key,
    default_base_url,
    judge_endpoint,
    load_judge,
)
from groundwire.tools.evaluation.reference import PUBLISHED
from groundwire.tools.evaluation.retrieval_eval import (
    fit_queries,
    ingest_corpus,
    retrieve_all,
    score_mode,
)
from groundwire.tools.measure.plots import PlotsUnavailableError
from groundwire.tools.measure.progress import progress_enabled
from groundwire.tools.measure.results import environment, write_json
from groundwire.tools.measure.target import (
    ServerStartError,
    Target,
    open_target,
    quiet_server_logs,
)
from groundwire.v1 import capabilities_pb2, capabilities_pb2_grpc

ANSWERS_FILE = "answers.jsonl"
CAPABILITIES_TIMEOUT_S = 30.0


class UsageError(ValueError):
    """The arguments do not fit the server (exit 2)."""


# A dataset, an argument or the configuration that cannot be used: exit 2.
BAD_INPUT = (DatasetError, UsageError, JudgeUnavailableError)


@dataclass(frozen=True)
class Inputs:
    """The dataset and, when there are any, the reference answers and their file."""

    dataset: Dataset
    answers: list[ReferenceAnswer]
    answers_file: Path | None


def load_inputs(args: argparse.Namespace) -> Inputs:
    """Read everything the run needs from disk; raises :class:`DatasetError`."""
    dataset = load_dataset(args.dataset, args.split, args.limit_queries)
    answers_file: Path | None = args.answers
    if answers_file is None and (args.dataset / ANSWERS_FILE).is_file():
        answers_file = args.dataset / ANSWERS_FILE
    answers: list[ReferenceAnswer] = []
    if answers_file is not None and args.limit_answers != 0:
        answers = load_answers(answers_file)[: args.limit_answers]
    return Inputs(dataset, answers, answers_file if answers else None)


def _capabilities(response: capabilities_pb2.GetCapabilitiesResponse) -> dict[str, Any]:
    return {
        "version": response.server_version,
        "embedder_id": response.embedder_id,
        "features": dict(response.features),
        "models": [m.name for m in response.models],
        "max_top_k": response.limits.max_top_k,
    }


def _target_info(target: Target, args: argparse.Namespace) -> dict[str, Any]:
    local = target.local
    if local is None:
        return {"address": args.address, "in_process": False}
    # "in_process": started by this command (a child process since the tools left the
    # server's package); its configuration is the GROUNDWIRE_* variables it was given.
    return {
        "address": f"started here ({target.address})",
        "in_process": True,
        "data_dir": str(local.data_dir),
        "log": str(local.log_path),
        "settings": dict(sorted(local.env.items())),
    }


def _chunk_tokens(target: Target) -> int | None:
    """The chunk size of a server started here when its environment names one."""
    value = target.local.env.get("GROUNDWIRE_CHUNK_TOKENS") if target.local else None
    return int(value) if value and value.isdigit() else None


class Evaluation:
    """``groundwire eval`` for one set of arguments."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.progress = progress_enabled(args.progress)
        self.latencies_ms: dict[str, list[float]] = {}
        self.judge: AnswerJudge | None = None
        self.judge_base_url: str | None = None

    async def run(self) -> int:
        """The whole run; the exit status."""
        args = self.args
        started = time.perf_counter()
        try:
            inputs = load_inputs(args)
            self.judge_base_url = self._judge_base_url(inputs)
        except BAD_INPUT as exc:
            print(f"groundwire eval: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        quiet_server_logs()
        try:
            result = await self._measure(inputs)
        except grpc.aio.AioRpcError as error:
            described = sdk_errors.from_rpc_error(error).describe()
            print(f"groundwire eval: error: {described}", file=sys.stderr)
            return EXIT_RUN_FAILED
        except ServerStartError as exc:
            print(f"groundwire eval: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT if exc.bad_settings else EXIT_RUN_FAILED
        except BAD_INPUT as exc:
            print(f"groundwire eval: error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        finally:
            if self.judge is not None:
                await self.judge.close()
        result["timings"]["total_s"] = time.perf_counter() - started
        return self._finish(result)

    def _judge_base_url(self, inputs: Inputs) -> str | None:
        """The judge's endpoint, checked before any server starts; None without a judge."""
        if self.args.judge_model is None:
            return None
        if not inputs.answers:
            raise UsageError(
                "--judge-model needs reference answers (DATASET/answers.jsonl or --answers)"
            )
        return judge_endpoint(self.args.judge_model, self.args.judge_base_url or default_base_url())

    def _load_judge(
        self, capabilities: capabilities_pb2.GetCapabilitiesResponse
    ) -> AnswerJudge | None:
        if self.judge_base_url is None:
            return None
        self.judge = load_judge(
            self.args.judge_model,
            capabilities,
            base_url=self.judge_base_url,
            api_key=self.args.judge_api_key or default_api_key(),
        )
        return self.judge

    async def _measure(self, inputs: Inputs) -> dict[str, Any]:
        args = self.args
        dataset = inputs.dataset
        tenant = tenant_for(dataset.name, dataset.fingerprint)
        print(
            f"{dataset.name} ({dataset.split}): {len(dataset.corpus)} documents, "
            f"{len(dataset.queries)} judged queries, {len(inputs.answers)} reference answers",
            flush=True,
        )
        timings: dict[str, float] = {}
        async with (
            open_target(
                args,
                local_tenant=tenant,
                data_dir=args.data_dir,
                GROUNDWIRE_MAX_TOP_K=str(max(args.top_k, 100)),
            ) as target,
            target.channel() as channel,
        ):
            metadata = target.metadata
            capabilities = await capabilities_pb2_grpc.CapabilitiesServiceStub(
                channel
            ).GetCapabilities(
                capabilities_pb2.GetCapabilitiesRequest(),
                metadata=metadata,
                timeout=CAPABILITIES_TIMEOUT_S,
            )
            if args.top_k > capabilities.limits.max_top_k:
                raise UsageError(
                    f"--top-k {args.top_k} exceeds the server's max_top_k "
                    f"{capabilities.limits.max_top_k}"
                )
            judge = self._load_judge(capabilities)
            queries, long_queries = fit_queries(
                dataset.queries, capabilities.limits.max_query_chars, args.long_queries
            )
            qrels = {q: relevance for q, relevance in dataset.qrels.items() if q in queries}
            if long_queries.query_ids:
                print(report.long_queries_line(long_queries.as_dict()), flush=True)
            ingest = await ingest_corpus(channel, metadata, dataset.corpus, progress=self.progress)
            timings["ingest_s"] = ingest.seconds
            print(report.ingest_line(ingest.as_dict()), flush=True)
            for failure in ingest.failures[:5]:
                print(f"  failed {failure['doc_id']!r}: {failure['field']}: {failure['reason']}")

            begun = time.perf_counter()
            runs = await retrieve_all(
                channel,
                metadata,
                queries,
                args.modes,
                top_k=args.top_k,
                concurrency=args.concurrency,
                progress=self.progress,
            )
            timings["retrieve_s"] = time.perf_counter() - begun
            print(
                f"retrieve: {len(queries)} queries x {len(args.modes)} modes in "
                f"{timings['retrieve_s']:.1f}s",
                flush=True,
            )
            self.latencies_ms = {
                mode: [s * 1000.0 for s in run.latency_s.values()] for mode, run in runs.items()
            }
            modes = {
                mode: score_mode(run, qrels, ignore_identical_ids=args.ignore_identical_ids)
                for mode, run in runs.items()
            }

            reference = None
            if args.reference:
                begun = time.perf_counter()
                reference = await self._reference(
                    dataset, queries, qrels, target, channel, capabilities.embedder_id
                )
                timings["reference_s"] = time.perf_counter() - begun

            answers = None
            if inputs.answers:
                begun = time.perf_counter()
                records = await answer_all(
                    channel,
                    metadata,
                    inputs.answers,
                    tier=args.tier,
                    model=args.model,
                    judge=judge,
                    concurrency=args.concurrency,
                    progress=self.progress,
                )
                timings["answers_s"] = time.perf_counter() - begun
                answers = {
                    "file": str(inputs.answers_file),
                    "judge_model": judge.name if judge is not None else None,
                    **summarize_answers(records),
                    "records": [r.as_dict() for r in records],
                }
            target_info = _target_info(target, args)

        in_process = target_info["in_process"]
        return {
            "dataset": {
                "name": dataset.name,
                "path": str(dataset.path),
                "split": dataset.split,
                "documents": len(dataset.corpus),
                "queries": len(dataset.queries),
                "judgements": sum(len(r) for r in dataset.qrels.values()),
                "relevant_judgements_missing_from_corpus": dataset.judged_docs_missing,
                "fingerprint": dataset.fingerprint,
            },
            "tenant": args.tenant or (tenant if in_process else "(the API key's tenant)"),
            "target": target_info,
            "server": _capabilities(capabilities),
            "ingest": ingest.as_dict(),
            "retrieval": {
                "top_k_chunks": args.top_k,
                "concurrency": args.concurrency,
                "long_queries": long_queries.as_dict(),
                "ignore_identical_ids": args.ignore_identical_ids,
                "modes": modes,
            },
            "published": PUBLISHED.get((dataset.name, capabilities.embedder_id)),
            "reference": reference,
            "answers": answers,
            "timings": timings,
            "environment": environment(),
        }

    async def _reference(
        self,
        dataset: Dataset,
        queries: dict[str, str],
        qrels: dict[str, dict[str, int]],
        target: Target,
        channel: grpc.aio.Channel,
        server_embedder: str,
    ) -> dict[str, Any]:
        from groundwire.clients.embedder import TorchEmbedder
        from groundwire.clients.embedding_base import MINILM_MODEL_NAME, LocalModelEmbedder
        from groundwire.clients.onnx_embedder import OnnxEmbedder
        from groundwire.tools.evaluation.metrics import mean_metrics
        from groundwire.tools.evaluation.reference import (
            corpus_profile,
            dense_score_gap,
            reference_dense,
        )

        # The local model the server runs: torch when it serves the fp32 vectors
        # (all-MiniLM-L6-v2/384), else the default, int8 ONNX.
        embedder: LocalModelEmbedder
        if server_embedder.startswith(f"{MINILM_MODEL_NAME}/"):
            embedder = await TorchEmbedder.load()
        else:
            embedder = await OnnxEmbedder.load()
        try:
            rankings = await reference_dense(
                embedder,
                dataset.corpus,
                queries,
                cache_dir=self.args.data_dir,
                progress=self.progress,
            )
            gap = None
            if server_embedder == embedder.embedder_id and "dense" in self.args.modes:
                gap = await dense_score_gap(
                    channel, target.metadata, embedder, list(queries.values())[:5]
                )
            if self.args.ignore_identical_ids:
                rankings = {q: [d for d in r if d != q] for q, r in rankings.items()}
            return {
                "embedder_id": embedder.embedder_id,
                "metrics": mean_metrics(rankings, qrels),
                "corpus_profile": corpus_profile(embedder, dataset.corpus, _chunk_tokens(target)),
                "dense_score_max_abs_diff": gap,
            }
        finally:
            await embedder.close()

    def _finish(self, result: dict[str, Any]) -> int:
        args = self.args
        checks = gate_checks(args, result["retrieval"]["modes"])
        result["gates"] = {"checks": checks, "passed": all(c["passed"] for c in checks)}
        out: Path = args.output or DEFAULT_OUTPUT_ROOT / result["dataset"]["name"]
        out.mkdir(parents=True, exist_ok=True)
        written = ["eval.json", "report.md"]
        try:
            written += report.draw_plots(result, self.latencies_ms, out)
        except PlotsUnavailableError as exc:
            print(f"groundwire eval: no plots: {exc}", file=sys.stderr)
        write_json(out / "eval.json", result)
        (out / "report.md").write_text(
            report.markdown_report(result, reproduce_command(args)), encoding="utf-8"
        )
        print()
        print(report.terminal_summary(result))
        print(f"\nwrote {', '.join(str(out / name) for name in written)}")
        timings = result["timings"]
        print("time: " + ", ".join(f"{k.removesuffix('_s')} {v:.1f}s" for k, v in timings.items()))
        failed = [c for c in checks if not c["passed"]]
        for check in failed:
            print(f"groundwire eval: gate failed: {check['detail']}", file=sys.stderr)
        return EXIT_GATE_FAILED if failed else 0
