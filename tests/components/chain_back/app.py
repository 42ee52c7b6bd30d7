"""The last component of the chain test: exports `test:chain/judge`."""

import time

from wit_world import exports
from wit_world.imports.types import Item, Verdict, Verdict_Accept, Verdict_Reject, Verdict_Unknown


class Judge(exports.Judge):
    def judge(self, it: Item) -> Verdict:
        if "bad" in it.tags:
            return Verdict_Reject(min(it.weight, 255))
        if not it.tags:
            return Verdict_Unknown()
        return Verdict_Accept(f"{it.name}:{it.weight}")

    def sign(self, trail: list[str]) -> list[str]:
        return [*trail, "back"]

    def slow(self, ms: int) -> int:
        time.sleep(ms / 1000)
        return ms

    def crash(self) -> None:
        raise RuntimeError("the back component crashed on purpose")
