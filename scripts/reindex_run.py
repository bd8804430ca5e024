"""A reindex on a real Qdrant server with SciFact documents, under a bounded Retrieve load.

Starts Qdrant (``../shared/bin/qdrant``, distributed mode, one peer) and redis-server,
serves the first judged SciFact documents (plus fillers up to ``--docs``) from an in-process
groundwire server on the int8 ONNX MiniLM (``GROUNDWIRE_EMBEDDER=local``), then:

1. ``reindex build`` to the fp32 torch MiniLM (``local-torch``: another embedder id) while
   the load runs;
2. ``reindex switch`` while the load runs on the old server, then a second server with the
   new configuration starts (a rolling restart's new replica) and takes load too;
3. ``reindex compare`` of the two on the judged queries of the subset.

Prints the time of each step and the Retrieve calls made from the switch until the new
server answered ``--after`` calls, by status. Run: ``.venv/bin/python scripts/reindex_run.py``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import grpc

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from groundwire.server.app import GroundwireServer  # noqa: E402
from groundwire.server.components import build_components, build_dense_embedder  # noqa: E402
from groundwire.server.reindex import command as reindex  # noqa: E402
from groundwire.server.settings import Settings, load_settings  # noqa: E402
from groundwire.tools.evaluation import compare  # noqa: E402
from groundwire.v1 import (  # noqa: E402
    documents_pb2,
    documents_pb2_grpc,
    retrieval_pb2,
    retrieval_pb2_grpc,
)
from tests.qdrant_server import QdrantServer, qdrant_binary  # noqa: E402
from tests.redis_server import RedisServer  # noqa: E402

KEY = "key-scifact-0123456789"
SCIFACT = ROOT.parent / "shared" / "datasets" / "scifact"


def subset(docs: int, folder: Path) -> tuple[list[dict[str, str]], list[str]]:
    """The corpus rows of the first judged queries' documents, filled up to ``docs``; writes
    a BEIR folder of the subset (queries whose documents are all in it) to ``folder``."""
    qrels: dict[str, set[str]] = {}
    for line in (SCIFACT / "qrels" / "test.tsv").read_text().splitlines()[1:]:
        query, doc, _ = line.split("\t")
        qrels.setdefault(query, set()).add(doc)
    rows = [json.loads(line) for line in (SCIFACT / "corpus.jsonl").open()]
    by_id = {r["_id"]: r for r in rows}
    chosen: dict[str, dict[str, str]] = {}
    judged: list[str] = []
    for query, relevant in qrels.items():
        if len(chosen) + len(relevant) > docs // 2:
            break
        judged.append(query)
        chosen.update({d: by_id[d] for d in relevant})
    for row in rows:
        if len(chosen) >= docs:
            break
        chosen.setdefault(row["_id"], row)
    (folder / "qrels").mkdir(parents=True)
    with (folder / "corpus.jsonl").open("w") as out:
        for row in chosen.values():
            out.write(json.dumps(row) + "\n")
    (folder / "queries.jsonl").write_text((SCIFACT / "queries.jsonl").read_text())
    lines = ["query-id\tcorpus-id\tscore"] + [
        f"{q}\t{d}\t1" for q in judged for d in sorted(qrels[q])
    ]
    (folder / "qrels" / "test.tsv").write_text("\n".join(lines) + "\n")
    queries = {
        json.loads(line)["_id"]: json.loads(line)["text"]
        for line in (SCIFACT / "queries.jsonl").open()
    }
    return list(chosen.values()), [queries[q] for q in judged]


async def start(settings: Settings) -> tuple[GroundwireServer, grpc.aio.Channel]:
    server = GroundwireServer(settings, await build_components(settings))
    port = await server.start()
    return server, grpc.aio.insecure_channel(f"127.0.0.1:{port}")


async def main(args: argparse.Namespace) -> None:
    binary = qdrant_binary()
    if binary is None:
        raise SystemExit("no Qdrant binary (../shared/bin/qdrant or GROUNDWIRE_TEST_QDRANT_BIN)")
    work = Path(tempfile.mkdtemp(prefix="gw-reindex-"))
    rows, questions = subset(args.docs, work / "scifact-subset")
    with QdrantServer(binary, cluster_args=()) as qdrant, RedisServer() as redis:

        def settings(embedder: str) -> Settings:
            return load_settings(
                read_environment=False,
                listen="127.0.0.1:0",
                auth_mode="api_key",
                api_keys={"scifact": KEY},
                vector_store="qdrant",
                qdrant_url=qdrant.url,
                qdrant_grpc_port=qdrant.grpc_port,
                qdrant_collection="scifact",
                redis_url=redis.url,
                embedder=embedder,
                metrics_port=None,
                data_dir=work / "data",
            )

        old_settings, new_settings = settings("local"), settings("local-torch")
        old, old_channel = await start(old_settings)
        metadata = (("authorization", f"Bearer {KEY}"),)
        docs = [
            documents_pb2.Document(doc_id=r["_id"], title=r.get("title", ""), text=r["text"])
            for r in rows
        ]

        async def requests():  # type: ignore[no-untyped-def]
            for doc in docs:
                yield documents_pb2.IngestDocumentsRequest(document=doc)

        started = time.perf_counter()
        summary = await documents_pb2_grpc.DocumentServiceStub(old_channel).IngestDocuments(
            requests(), metadata=metadata
        )
        print(
            f"ingest: {len(docs)} documents, {summary.chunks_written} chunks, "
            f"{time.perf_counter() - started:.1f} s (old server, embedder local)"
        )

        outcomes: list[tuple[str, str, str]] = []  # (phase, server, status)
        phase = ["build"]
        stop = asyncio.Event()
        enough = asyncio.Event()  # the new server answered --after calls

        async def drive(name: str, channel: grpc.aio.Channel) -> None:
            stub = retrieval_pb2_grpc.RetrievalServiceStub(channel)
            turn = 0
            while not stop.is_set():
                query = questions[turn % len(questions)]
                turn += 1
                try:
                    await stub.Retrieve(
                        retrieval_pb2.RetrieveRequest(query=query, top_k=10),
                        metadata=metadata,
                        timeout=30,
                    )
                    status = "OK"
                except grpc.aio.AioRpcError as error:
                    status = error.code().name
                outcomes.append((phase[0], name, status))
                if name == "new" and sum(1 for o in outcomes if o[1] == "new") >= args.after:
                    enough.set()

        drivers = [asyncio.create_task(drive("old", old_channel)) for _ in range(args.concurrency)]
        dense = await build_dense_embedder(new_settings)
        started = time.perf_counter()
        await reindex.build(new_settings, dense)
        build_s = time.perf_counter() - started

        phase[0] = "switch"
        started = time.perf_counter()
        await reindex.switch(new_settings, dense)
        switch_s = time.perf_counter() - started
        new, new_channel = await start(new_settings)  # the rolling restart's new replica
        drivers += [asyncio.create_task(drive("new", new_channel)) for _ in range(args.concurrency)]
        await enough.wait()
        stop.set()
        await asyncio.gather(*drivers)
        if dense is not None:
            await dense.close()

        print(f"build: {build_s:.1f} s; switch (catch-up + alias): {switch_s:.2f} s")
        print("Retrieve calls by phase, server and status (concurrency", args.concurrency, "each):")
        for (p, n, s), count in sorted(Counter(outcomes).items()):
            print(f"  {p:<7} {n:<4} {s:<18} {count}")

        compared = await compare.compare(
            argparse.Namespace(
                dataset=work / "scifact-subset",
                split="test",
                limit_queries=None,
                old=f"127.0.0.1:{old.port}",
                new=f"127.0.0.1:{new.port}",
                api_key=KEY,
                modes="dense,hybrid",
                top_k=100,
            )
        )
        print(f"compare on {len(questions)} judged queries of the subset:")
        print("\n".join(compare.table(compared)))
        for server, channel in ((old, old_channel), (new, new_channel)):
            await channel.close()
            await server.stop(grace_s=1)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--docs", type=int, default=300)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--after", type=int, default=100, help="calls on the new server")
    asyncio.run(main(parser.parse_args()))
