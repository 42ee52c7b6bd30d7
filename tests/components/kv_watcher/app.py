"""A `wasi:keyvalue/watcher@0.2.0-draft` guest: it records what it is told in the watched bucket.

`on-set(key, value)` writes `seen:<key>` = value and `on-delete(key)` writes `deleted:<key>` = "1",
both through the bucket handle it is given (keys starting with `seen:` or `deleted:` are its own
writes and are ignored, so nothing loops). A set of the key `trap` traps, to show that a failing
call is logged and the next change is still delivered.
"""

from wit_world import exports


class Watcher(exports.Watcher):
    def on_set(self, bucket, key, value):
        if key.startswith(("seen:", "deleted:")):
            return
        if key == "trap":
            raise RuntimeError("deliberate trap in on-set")
        bucket.set("seen:" + key, value)

    def on_delete(self, bucket, key):
        if key.startswith(("seen:", "deleted:")):
            return
        bucket.set("deleted:" + key, b"1")
