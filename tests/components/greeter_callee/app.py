"""Exports `test:greeter/greet`: called by other components through a link, never over HTTP."""

from componentize_py_types import Err
from wit_world import exports
from wit_world.exports.greet import Person

CALLS = 0


class Greet(exports.Greet):
    def hello(self, who: Person) -> str:
        global CALLS
        CALLS += 1
        # A fresh instance per call: CALLS is always 1 here.
        return f"hello {who.name} ({who.age}), call {CALLS}"

    def divide(self, a: int, b: int) -> int:
        if b == 0:
            raise Err("division by zero")
        return a // b

    def crash(self) -> None:
        raise RuntimeError("the callee crashed on purpose")
