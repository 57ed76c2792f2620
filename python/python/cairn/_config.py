"""How a client finds its cluster, exactly as the ``cairn`` CLI does
(crates/cairn-cli/src/config.rs): arguments, then ``CAIRN_META`` /
``CAIRN_SECRET_FILE``, then the ``client.conf`` a ``cairn server`` writes for
this user, then the defaults of a local ``cairn server`` in ``./cairn-data``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Optional, Sequence, Union

DEFAULT_META = "127.0.0.1:7420"
DEFAULT_DATA = "cairn-data"
CLIENT_KEY_FILE = "client.key"


def client_conf_path() -> Optional[Path]:
    """``$XDG_CONFIG_HOME/cairn/client.conf``, else ``~/.config/cairn/client.conf``."""
    x = os.environ.get("XDG_CONFIG_HOME")
    if x:
        return Path(x) / "cairn" / "client.conf"
    home = os.environ.get("HOME")
    return Path(home) / ".config" / "cairn" / "client.conf" if home else None


def read_conf(path: Optional[Path]) -> dict[str, str]:
    """``key = value`` lines; ``#`` starts a comment line; values may be quoted."""
    out: dict[str, str] = {}
    if path is None:
        return out
    try:
        text = path.read_text()
    except OSError:
        return out
    for line in text.splitlines():
        if line.lstrip().startswith("#") or "=" not in line:
            continue
        k, v = line.split("=", 1)
        out.setdefault(k.strip(), v.strip().strip('"'))
    return out


def resolve(
    meta: Union[str, Sequence[str], None] = None,
    secret_file: Union[str, os.PathLike, None] = None,
) -> tuple[list[str], str]:
    """Meta addresses and the secret file for a client."""
    conf = read_conf(client_conf_path())
    if meta is None:
        meta = os.environ.get("CAIRN_META") or conf.get("meta") or DEFAULT_META
    if isinstance(meta, str):
        addrs = [a.strip() for a in meta.split(",") if a.strip()]
    else:
        addrs = [str(a).strip() for a in meta if str(a).strip()]
    if secret_file is None:
        secret_file = (
            os.environ.get("CAIRN_SECRET_FILE")
            or conf.get("secret_file")
            or str(Path(DEFAULT_DATA) / "meta" / CLIENT_KEY_FILE)
        )
    return addrs, os.fspath(secret_file)
