;; Mean and count of the first dataset's values, as a raw core module (ABI fades-core/1).
;; Build: fades fn build examples/functions/mean_core.wat --key KEY
(module
  (import "fades" "result_f64" (func $result (param i32 i32 f64)))
  (memory (export "memory") 1)
  (global $heap (mut i32) (i32.const 1024))
  (data (i32.const 16) "mean")
  (data (i32.const 32) "count")

  ;; Bump allocator: grows memory as needed, returns 0 when the cap forbids it.
  (func (export "fades_alloc") (param $size i32) (result i32)
    (local $ptr i32) (local $end i32) (local $need i32)
    (local.set $ptr (global.get $heap))
    (local.set $end (i32.add (local.get $ptr) (local.get $size)))
    (local.set $need
      (i32.sub (i32.shr_u (i32.add (local.get $end) (i32.const 65535)) (i32.const 16))
               (memory.size)))
    (if (i32.gt_s (local.get $need) (i32.const 0))
      (then
        (if (i32.eq (memory.grow (local.get $need)) (i32.const -1))
          (then (return (i32.const 0))))))
    (global.set $heap (i32.and (i32.add (local.get $end) (i32.const 7)) (i32.const -8)))
    (local.get $ptr))

  ;; FDS1: dataset 0's row count is at blob+24, its value column offset at blob+32.
  (func (export "fades_run") (param $blob i32) (param $len i32) (result i32)
    (local $n i32) (local $v i32) (local $i i32) (local $sum f64)
    (local.set $n (i32.load offset=24 (local.get $blob)))
    (local.set $v (i32.add (local.get $blob) (i32.load offset=32 (local.get $blob))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $n)))
        (local.set $sum
          (f64.add (local.get $sum)
                   (f64.load (i32.add (local.get $v) (i32.shl (local.get $i) (i32.const 3))))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (call $result (i32.const 16) (i32.const 4)
      (f64.div (local.get $sum) (f64.convert_i32_u (local.get $n))))
    (call $result (i32.const 32) (i32.const 5) (f64.convert_i32_u (local.get $n)))
    (i32.const 0))
)
