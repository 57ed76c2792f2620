"""A storage node killed mid-read: the read completes from another copy."""

from __future__ import annotations

import cairn
from conftest import pattern, start_separate


def test_read_survives_a_storage_node_killed_mid_read(tmp_cluster_root) -> None:
    c = start_separate(tmp_cluster_root, 3, ("--chunk-size", "1MiB", "--dead-after", "60s"))
    try:
        # No chunk cache, so every chunk is fetched from a node.
        client = c.client(cache_bytes=0)
        data = pattern(12 << 20, 77)
        client.put("/f", data)
        loc = client.locate("/f")
        assert all(len(ch["nodes"]) == 3 for ch in loc["chunks"])
        by_addr = {}
        for p in c.procs[1:]:
            by_addr[p.field("listening on")] = p
        with client.open("/f", buffer_size=1 << 16) as f:
            first = f.read(1 << 20)
            # The node the client reads the last chunks from first.
            victim = loc["chunks"][-1]["nodes"][0]["addr"]
            by_addr[victim].kill()
            rest = f.read()
        assert first + rest == data
        # And a fresh whole-file read and a new write work with one node gone.
        assert client.get("/f") == data
        client.put("/g", b"after", cues="rep=2")
        assert client.get("/g") == b"after"
    finally:
        c.stop()
