"""A small corpus of unrelated topics, and paraphrased questions that should find each."""

from __future__ import annotations

from groundwire.v1 import common_pb2, documents_pb2

DOCS = {
    "volcano": (
        "How volcanoes erupt",
        "Magma rises through cracks in the crust because it is less dense than the "
        "surrounding rock. Gas dissolved in the magma expands as pressure drops, and when "
        "the pressure of the gas exceeds the strength of the overlying rock, the volcano "
        "erupts, throwing out lava, ash and volcanic bombs.",
    ),
    "sourdough": (
        "Baking sourdough bread",
        "A sourdough starter is a culture of wild yeast and lactic acid bacteria. Feed it "
        "flour and water daily. Mix the levain with flour, water and salt, let the dough "
        "ferment in bulk, shape the loaf and bake it in a hot Dutch oven for a crisp crust.",
    ),
    "photosynthesis": (
        "Photosynthesis",
        "Plants capture sunlight with chlorophyll in their chloroplasts and use its energy "
        "to turn carbon dioxide and water into glucose, releasing oxygen as a by-product.",
    ),
    "tides": (
        "Ocean tides",
        "Tides are the regular rise and fall of sea level caused by the gravitational pull "
        "of the Moon and the Sun on the Earth's oceans; spring tides occur at full and new "
        "moon.",
    ),
    "tcp": (
        "TCP congestion control",
        "TCP senders keep a congestion window that limits data in flight. Slow start grows "
        "the window exponentially until loss, then congestion avoidance grows it linearly; "
        "packet loss halves the window.",
    ),
}

PARAPHRASES = {
    "volcano": "why does molten rock burst out of a mountain",
    "sourdough": "how do I make bread with a natural leaven",
    "photosynthesis": "how do green plants make sugar from light",
    "tides": "what makes the sea go up and down every day",
    "tcp": "how does a network protocol avoid overloading the links",
}


def document(doc_id: str, **metadata: str | int) -> documents_pb2.Document:
    """The corpus document ``doc_id``, with metadata."""
    title, text = DOCS[doc_id]
    return documents_pb2.Document(
        doc_id=doc_id,
        title=title,
        text=text,
        source_uri=f"https://example.test/{doc_id}",
        metadata={
            k: common_pb2.MetadataValue(string_value=v)
            if isinstance(v, str)
            else common_pb2.MetadataValue(int_value=v)
            for k, v in metadata.items()
        },
    )


def corpus() -> list[documents_pb2.Document]:
    """Every document, with a `topic` and a `year` to filter on."""
    years = {"volcano": 2020, "sourdough": 2021, "photosynthesis": 2020, "tides": 2022, "tcp": 2023}
    topics = {
        "volcano": "earth",
        "sourdough": "food",
        "photosynthesis": "life",
        "tides": "earth",
        "tcp": "network",
    }
    return [document(d, topic=topics[d], year=years[d]) for d in DOCS]
