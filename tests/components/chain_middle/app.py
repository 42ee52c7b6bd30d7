"""The middle of the chain test: exports `test:chain/stage`, calls `test:chain/judge`."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import judge
from wit_world.imports import store as config
from wit_world.imports.types import Item, Verdict


class Stage(exports.Stage):
    def process(self, items: list[Item], note: str | None) -> tuple[list[str], list[Verdict]]:
        if note == "refuse":
            raise Err("the middle refuses this batch")
        # Each host scales the middle with its own `where` config: the trail shows who served.
        where = config.get("where") or "?"
        trail = judge.sign(["front" if note is None else f"front({note})", f"middle@{where}"])
        return trail, [judge.judge(it) for it in items]
