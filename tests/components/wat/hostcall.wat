;; Calls into the host in a loop (for the cost of one host call), and faults on demand:
;; `spin` never returns (epoch deadline), `grow` asks for memory (memory limit), `boom` traps.
(component
  (import "test:micro/host" (instance $host
    (export "ping" (func (param "x" u32) (result u32)))
  ))
  (core func $ping (canon lower (func $host "ping")))
  (core module $m
    (import "host" "ping" (func $ping (param i32) (result i32)))
    (memory (export "mem") 1)
    (func (export "run") (param $n i32) (result i32)
      (local $acc i32)
      (block $done
        (loop $again
          (br_if $done (i32.eqz (local.get $n)))
          (local.set $acc (call $ping (local.get $acc)))
          (local.set $n (i32.sub (local.get $n) (i32.const 1)))
          (br $again)))
      (local.get $acc))
    (func (export "spin") (loop $l (br $l)))
    (func (export "grow") (param $pages i32) (result i32)
      (memory.grow (local.get $pages)))
    (func (export "boom") unreachable)
  )
  (core instance $i (instantiate $m (with "host" (instance (export "ping" (func $ping))))))
  (func $run (param "n" u32) (result u32) (canon lift (core func $i "run")))
  (func $spin (canon lift (core func $i "spin")))
  (func $grow (param "pages" u32) (result s32) (canon lift (core func $i "grow")))
  (func $boom (canon lift (core func $i "boom")))
  (instance $exp
    (export "run" (func $run))
    (export "spin" (func $spin))
    (export "grow" (func $grow))
    (export "boom" (func $boom)))
  (export "test:micro/bench" (instance $exp))
)
