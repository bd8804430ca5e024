"""``groundwire eval``: retrieval and answer quality on a BEIR-format dataset."""
