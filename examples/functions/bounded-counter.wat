;; A counter that stops at a maximum: an update function for `kv` (docs/functions.md).
;;
;; The row holds the count as ASCII decimal digits; an absent row counts as 0. The
;; arguments are the maximum, also in decimal. Each apply adds one, or refuses once the
;; count has reached the maximum, so concurrent applies never count past it.
;;
;;   curl -X POST --data-binary @examples/functions/bounded-counter.wat \
;;        http://127.0.0.1:7700/v1/_functions/bounded-counter
;;   curl -X POST -d 10 'http://127.0.0.1:7700/v1/_apply/app/counters/visits?function=bounded-counter'
(module
  ;; One page is plenty; the limit keeps any run within 1 MiB.
  (memory (export "memory") 1 16)
  ;; Where the next allocation starts: below it are the answer buffer and the messages.
  (global $heap (mut i32) (i32.const 1024))

  (data (i32.const 64) "the counter is at its maximum")
  (data (i32.const 128) "the arguments must be the maximum, a decimal number")
  (data (i32.const 192) "the row does not hold a decimal number")

  ;; Hands out `len` bytes, growing the memory when it has to. Nothing is ever freed: a
  ;; run's instance is thrown away when the run ends.
  (func $alloc (export "alloc") (param $len i32) (result i32)
    (local $ptr i32)
    (local $end i32)
    (local $size i32)
    (local.set $ptr (global.get $heap))
    (local.set $end
      (i32.and (i32.add (i32.add (local.get $ptr) (local.get $len)) (i32.const 7)) (i32.const -8)))
    (local.set $size (i32.mul (memory.size) (i32.const 65536)))
    (if (i32.gt_u (local.get $end) (local.get $size))
      (then
        (if (i32.lt_s
              (memory.grow
                (i32.shr_u (i32.add (i32.sub (local.get $end) (local.get $size)) (i32.const 65535))
                           (i32.const 16)))
              (i32.const 0))
          (then unreachable))))
    (global.set $heap (local.get $end))
    (local.get $ptr))

  ;; The number written in ASCII decimal at `ptr`, or -1 when the bytes are not 1 to 18
  ;; digits.
  (func $parse (param $ptr i32) (param $len i32) (result i64)
    (local $i i32)
    (local $digit i32)
    (local $n i64)
    (if (i32.or (i32.eqz (local.get $len)) (i32.gt_u (local.get $len) (i32.const 18)))
      (then (return (i64.const -1))))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $i) (local.get $len)))
        (local.set $digit
          (i32.sub (i32.load8_u (i32.add (local.get $ptr) (local.get $i))) (i32.const 48)))
        (if (i32.gt_u (local.get $digit) (i32.const 9)) (then (return (i64.const -1))))
        (local.set $n
          (i64.add (i64.mul (local.get $n) (i64.const 10)) (i64.extend_i32_u (local.get $digit))))
        (local.set $i (i32.add (local.get $i) (i32.const 1)))
        (br $next)))
    (local.get $n))

  ;; Writes `n` in decimal, right-aligned in the answer buffer (bytes 0 to 31), and
  ;; returns where it starts and its length.
  (func $format (param $n i64) (result i32 i32)
    (local $p i32)
    (local.set $p (i32.const 32))
    (loop $digit
      (local.set $p (i32.sub (local.get $p) (i32.const 1)))
      (i32.store8 (local.get $p)
        (i32.add (i32.const 48) (i32.wrap_i64 (i64.rem_u (local.get $n) (i64.const 10)))))
      (local.set $n (i64.div_u (local.get $n) (i64.const 10)))
      (br_if $digit (i64.ne (local.get $n) (i64.const 0))))
    (local.get $p)
    (i32.sub (i32.const 32) (local.get $p)))

  ;; Answers (action, pointer, length): 0 writes the bytes, 3 refuses with the message.
  (func (export "update")
    (param $value i32) (param $value_len i32) (param $args i32) (param $args_len i32)
    (result i32 i32 i32)
    (local $count i64)
    (local $maximum i64)
    (local.set $maximum (call $parse (local.get $args) (local.get $args_len)))
    (if (i64.lt_s (local.get $maximum) (i64.const 0))
      (then (return (i32.const 3) (i32.const 128) (i32.const 51))))
    (if (i32.ne (local.get $value_len) (i32.const -1))
      (then
        (local.set $count (call $parse (local.get $value) (local.get $value_len)))
        (if (i64.lt_s (local.get $count) (i64.const 0))
          (then (return (i32.const 3) (i32.const 192) (i32.const 38))))))
    (if (i64.ge_s (local.get $count) (local.get $maximum))
      (then (return (i32.const 3) (i32.const 64) (i32.const 29))))
    (i32.const 0)
    (call $format (i64.add (local.get $count) (i64.const 1)))))
