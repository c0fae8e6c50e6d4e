"""Where hourly aggregates go: a local directory (default) or S3 through aiobotocore."""

from __future__ import annotations

import asyncio
import contextlib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

__all__ = ["DriftSink", "LocalSink", "S3Sink", "hour_key", "make_sink", "split_s3"]


def hour_key(hour: int, name: str) -> str:
    t = datetime.fromtimestamp(hour, UTC)
    return f"date={t:%Y-%m-%d}/hour={t:%H}/{name}"


def split_s3(url: str) -> tuple[str, str]:
    """``s3://bucket/prefix`` → (bucket, prefix without slashes at either end)."""
    rest = url.removeprefix("s3://")
    bucket, _, prefix = rest.partition("/")
    return bucket, prefix.strip("/")


class DriftSink(Protocol):
    async def put(self, hour: int, name: str, body: bytes) -> None: ...
    async def close(self) -> None: ...


class LocalSink:
    def __init__(self, root: Path) -> None:
        self.root = root

    async def put(self, hour: int, name: str, body: bytes) -> None:
        path = self.root / hour_key(hour, name)
        await asyncio.to_thread(_write_atomic, path, body)

    async def close(self) -> None:
        return None


def _write_atomic(path: Path, body: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_bytes(body)
    tmp.replace(path)


class S3Sink:
    def __init__(self, url: str, region: str, endpoint_url: str | None = None) -> None:
        self.bucket, self.prefix = split_s3(url)
        self._region = region
        self._endpoint = endpoint_url
        self._client: Any = None
        self._stack = contextlib.AsyncExitStack()

    async def _open(self) -> Any:
        if self._client is None:
            from aiobotocore.session import get_session

            kwargs: dict[str, Any] = {"region_name": self._region}
            if self._endpoint:
                kwargs["endpoint_url"] = self._endpoint
            self._client = await self._stack.enter_async_context(
                get_session().create_client("s3", **kwargs)
            )
        return self._client

    async def put(self, hour: int, name: str, body: bytes) -> None:
        client = await self._open()
        key = hour_key(hour, name)
        await client.put_object(
            Bucket=self.bucket, Key=f"{self.prefix}/{key}" if self.prefix else key, Body=body
        )

    async def close(self) -> None:
        await self._stack.aclose()
        self._client = None


def make_sink(target: str, base_dir: Path, region: str, endpoint_url: str | None) -> DriftSink:
    if target.startswith("s3://"):
        return S3Sink(target, region, endpoint_url)
    path = Path(target)
    return LocalSink(path if path.is_absolute() else base_dir / path)
