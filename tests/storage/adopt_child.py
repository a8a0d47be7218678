"""Child process of the adoption crash test: opens the pipeline's stores on a data directory
from before pipeline.db (which moves its files in) and closes them again.

Run as `python adopt_child.py DATA_DIR`; prints `open` once the stores are open.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from stellwerk.storage.pipeline import pipeline_stores


async def main(data_dir: Path) -> None:
    stores = pipeline_stores(data_dir)
    async with stores.queue, stores.archives:
        print("open", flush=True)


if __name__ == "__main__":
    asyncio.run(main(Path(sys.argv[1])))
