;; The callee of benchmarks/lattice_calls.py: `test:bench/calc@0.1.0.add(p: point) -> u32` with
;; `record point { x: u32, y: u32 }`. Written in component text so that an instance costs next to
;; nothing and the benchmark measures the call path, not a guest runtime's start-up.
(component
  (type $point (record (field "x" u32) (field "y" u32)))
  (core module $m
    (func (export "add") (param $x i32) (param $y i32) (result i32)
      (i32.add (local.get $x) (local.get $y)))
  )
  (core instance $i (instantiate $m))
  (func $add (param "p" $point) (result u32) (canon lift (core func $i "add")))
  (instance $exp
    (export "point" (type $point))
    (export "add" (func $add)))
  (export "test:bench/calc@0.1.0" (instance $exp))
)
