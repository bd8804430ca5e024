"""GROUNDWIRE_WORKERS, GROUNDWIRE_SERVICES and GROUNDWIRE_RETRIEVAL_URL: parsed and checked at
start, with errors that name the variable; and the remote retriever's request round trip."""

from __future__ import annotations

import pytest

from groundwire.clients.models import FieldMatch, SearchMode
from groundwire.server.owner_path import owner_socket_path
from groundwire.server.pipeline.remote_retrieval import retrieve_request
from groundwire.server.pipeline.retrieval import RetrievalQuery
from groundwire.server.servicers.validation import RetrievalLimits, retrieval_query
from groundwire.server.settings import ServiceRole, SettingsError, load_settings, usable_cores


def test_the_defaults_serve_everything_on_every_usable_core() -> None:
    settings = load_settings(read_environment=False)
    assert settings.workers == usable_cores() >= 1
    assert settings.services == frozenset(ServiceRole)
    assert settings.serves_retrieval and settings.serves_generation


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("retrieval", {ServiceRole.RETRIEVAL}),
        (" Retrieval , generation ", set(ServiceRole)),
        ("all", set(ServiceRole)),
    ],
)
def test_services_are_a_comma_separated_list(value: str, expected: set[ServiceRole]) -> None:
    assert load_settings(read_environment=False, services=value).services == expected


def test_an_unknown_service_is_named() -> None:
    with pytest.raises(SettingsError, match="GROUNDWIRE_SERVICES: unknown service 'search'"):
        load_settings(read_environment=False, services="retrieval,search")


def test_generation_alone_needs_a_retrieval_url() -> None:
    with pytest.raises(SettingsError, match="GROUNDWIRE_RETRIEVAL_URL is required"):
        load_settings(read_environment=False, services="generation")
    settings = load_settings(
        read_environment=False, services="generation", retrieval_url="retrieval:50051"
    )
    assert not settings.serves_retrieval and settings.retrieval_url == "retrieval:50051"


def test_a_retrieval_url_beside_retrieval_is_refused() -> None:
    with pytest.raises(SettingsError, match="only for a process that does not serve retrieval"):
        load_settings(read_environment=False, retrieval_url="retrieval:50051")


@pytest.mark.parametrize("value", ["retrieval", "retrieval:http", "unix:", ":50051"])
def test_a_malformed_retrieval_url_is_named(value: str) -> None:
    with pytest.raises(SettingsError, match="GROUNDWIRE_RETRIEVAL_URL"):
        load_settings(read_environment=False, services="generation", retrieval_url=value)


def test_workers_must_be_positive() -> None:
    with pytest.raises(SettingsError, match="GROUNDWIRE_WORKERS"):
        load_settings(read_environment=False, workers=0)


def test_a_socket_path_too_long_for_unix_falls_back_to_a_private_directory(
    tmp_path: pytest.TempPathFactory,
) -> None:
    short, none = owner_socket_path(tmp_path)  # type: ignore[arg-type]
    assert none is None and short.name == "owner.sock"
    deep = tmp_path / ("d" * 120)  # type: ignore[operator]
    path, directory = owner_socket_path(deep)
    assert directory is not None and path.parent == directory
    assert len(str(path).encode()) <= 107
    assert (directory.stat().st_mode & 0o777) == 0o700
    directory.rmdir()


def test_a_query_survives_the_hop_unchanged() -> None:
    query = RetrievalQuery(
        text="owls at night",
        top_k=7,
        mode=SearchMode.HYBRID,
        filters=(FieldMatch("lang", ("en",)), FieldMatch("year", (2023, 2024))),
        min_score=0.25,
        use_cache=False,
    )
    again = retrieval_query(
        retrieve_request(query),
        RetrievalLimits(
            supported_modes=tuple(SearchMode),
            default_mode=SearchMode.SPARSE,
            default_top_k=8,
            max_top_k=100,
            max_query_chars=4096,
        ),
    )
    assert again == query
