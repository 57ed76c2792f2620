"""Objects by reference: the DI-store API."""

from __future__ import annotations

import pytest

import cairn
from conftest import Cluster, pattern


def test_put_get_delete_object(client: cairn.Client) -> None:
    data = pattern(100_000, 1)
    ref = client.put_object(data)
    assert isinstance(ref, str) and len(ref) == 32
    assert client.get_object(ref) == data
    buf = bytearray(len(data))
    assert client.get_object(ref, into=buf) == len(data) and buf == data
    assert client.object_exists(ref)
    # an ordinary file of the namespace, under the documented prefix
    assert client.stat(f"{cairn.OBJECTS_DIR}/{ref}").size == len(data)
    client.delete_object(ref)
    assert not client.object_exists(ref)
    with pytest.raises(FileNotFoundError):
        client.get_object(ref)
    with pytest.raises(FileNotFoundError):
        client.delete_object(ref)


def test_references_are_distinct_and_stable(client: cairn.Client) -> None:
    refs = {client.put_object(b"%d" % i) for i in range(50)}
    assert len(refs) == 50
    c2 = cairn.Client(client.meta, client.secret_file)
    for r in refs:
        assert c2.get_object(r) == client.get_object(r)


def test_objects_are_visible_to_the_cli(cluster: Cluster, client: cairn.Client) -> None:
    ref = client.put_object(b"seen by the CLI")
    out = cluster.cli("cat", f"{cairn.OBJECTS_DIR}/{ref}").stdout
    assert out == b"seen by the CLI"


def test_prefetch_group_is_the_hot_cue(client: cairn.Client) -> None:
    ref = client.put_object(b"hot data", prefetch_group="actor")
    assert client.get_object(ref) == b"hot data"
    path = client.object_path(ref)
    if cairn.hot_cue_supported():
        assert "hot=actor" in client.cues(path)["effective"]
    else:
        # This Cairn has no groups yet: the object is stored all the same.
        assert client.stat(path).size == 8
    with pytest.raises(cairn.InvalidInput):
        client.put_object(b"x", prefetch_group="bad/name")


def test_register_group_joins_this_hosts_nodes(client: cairn.Client) -> None:
    # `cairn server` runs its nodes on this host.
    joined = client.register_group("actor")
    assert len(joined) == 3
    assert sorted(client.groups()["actor"]) == sorted(joined)
    assert all("actor" in n["groups"] for n in client.nodes())
    ref = client.put_object(b"for the actors", prefetch_group="actor")
    assert "hot=actor" in client.cues(client.object_path(ref))["effective"]
    assert client.get_object(ref) == b"for the actors"
    assert client.unregister_group("actor") == joined
    assert not client.groups().get("actor")
    with pytest.raises(cairn.CairnError, match="no storage node runs on host"):
        client.register_group("actor", host="no-such-host")
