;; Appends an item to a JSON list: an update function for `kv` (docs/functions.md).
;;
;; The row holds a JSON array; an absent row is an empty one. The arguments are the
;; JSON value to append, taken as they are: the function checks the array's brackets,
;; not the item. Concurrent applies each add their item; none is lost.
;;
;;   curl -X POST --data-binary @examples/functions/append-to-list.wat \
;;        http://127.0.0.1:7700/v1/_functions/append-to-list
;;   curl -X POST -d '"milk"' 'http://127.0.0.1:7700/v1/_apply/app/lists/shopping?function=append-to-list'
(module
  ;; Up to 16 MiB: a list as large as an inline value, with room for its copy.
  (memory (export "memory") 1 256)
  (global $heap (mut i32) (i32.const 1024))

  (data (i32.const 64) "the row does not hold a JSON array")
  (data (i32.const 128) "the arguments must be the JSON value to append")

  ;; Hands out `len` bytes, growing the memory when it has to.
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

  ;; Whether the byte is JSON whitespace.
  (func $is_space (param $c i32) (result i32)
    (i32.or
      (i32.or (i32.eq (local.get $c) (i32.const 32)) (i32.eq (local.get $c) (i32.const 10)))
      (i32.or (i32.eq (local.get $c) (i32.const 13)) (i32.eq (local.get $c) (i32.const 9)))))

  ;; Answers (action, pointer, length): 0 writes the bytes, 3 refuses with the message.
  (func (export "update")
    (param $value i32) (param $value_len i32) (param $args i32) (param $args_len i32)
    (result i32 i32 i32)
    (local $first i32)
    (local $close i32)
    (local $p i32)
    (local $empty i32)
    (local $out i32)
    (if (i32.eqz (local.get $args_len))
      (then (return (i32.const 3) (i32.const 128) (i32.const 46))))
    ;; An absent row: the list is [item].
    (if (i32.eq (local.get $value_len) (i32.const -1))
      (then
        (local.set $out (call $alloc (i32.add (local.get $args_len) (i32.const 2))))
        (i32.store8 (local.get $out) (i32.const 91))
        (memory.copy (i32.add (local.get $out) (i32.const 1)) (local.get $args) (local.get $args_len))
        (i32.store8 (i32.add (i32.add (local.get $out) (i32.const 1)) (local.get $args_len)) (i32.const 93))
        (return (i32.const 0) (local.get $out) (i32.add (local.get $args_len) (i32.const 2)))))
    ;; The first byte that is not whitespace must open the array...
    (block $found
      (loop $next
        (br_if $found (i32.ge_u (local.get $first) (local.get $value_len)))
        (br_if $found
          (i32.eqz (call $is_space (i32.load8_u (i32.add (local.get $value) (local.get $first))))))
        (local.set $first (i32.add (local.get $first) (i32.const 1)))
        (br $next)))
    ;; ...and the last one close it.
    (local.set $close (local.get $value_len))
    (block $found
      (loop $next
        (br_if $found (i32.le_u (local.get $close) (local.get $first)))
        (br_if $found
          (i32.eqz (call $is_space
            (i32.load8_u (i32.add (local.get $value) (i32.sub (local.get $close) (i32.const 1)))))))
        (local.set $close (i32.sub (local.get $close) (i32.const 1)))
        (br $next)))
    (if (i32.lt_u (i32.sub (local.get $close) (local.get $first)) (i32.const 2))
      (then (return (i32.const 3) (i32.const 64) (i32.const 34))))
    (local.set $close (i32.sub (local.get $close) (i32.const 1)))
    (if (i32.or
          (i32.ne (i32.load8_u (i32.add (local.get $value) (local.get $first))) (i32.const 91))
          (i32.ne (i32.load8_u (i32.add (local.get $value) (local.get $close))) (i32.const 93)))
      (then (return (i32.const 3) (i32.const 64) (i32.const 34))))
    ;; Whether the array is empty: only whitespace between its brackets.
    (local.set $empty (i32.const 1))
    (local.set $p (i32.add (local.get $first) (i32.const 1)))
    (block $done
      (loop $next
        (br_if $done (i32.ge_u (local.get $p) (local.get $close)))
        (if (i32.eqz (call $is_space (i32.load8_u (i32.add (local.get $value) (local.get $p)))))
          (then
            (local.set $empty (i32.const 0))
            (br $done)))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))
        (br $next)))
    ;; The answer: everything before the closing bracket, a comma unless the array was
    ;; empty, the item, and the bracket.
    (local.set $out
      (call $alloc (i32.add (i32.add (local.get $close) (local.get $args_len)) (i32.const 2))))
    (memory.copy (local.get $out) (local.get $value) (local.get $close))
    (local.set $p (i32.add (local.get $out) (local.get $close)))
    (if (i32.eqz (local.get $empty))
      (then
        (i32.store8 (local.get $p) (i32.const 44))
        (local.set $p (i32.add (local.get $p) (i32.const 1)))))
    (memory.copy (local.get $p) (local.get $args) (local.get $args_len))
    (local.set $p (i32.add (local.get $p) (local.get $args_len)))
    (i32.store8 (local.get $p) (i32.const 93))
    (i32.const 0)
    (local.get $out)
    (i32.sub (i32.add (local.get $p) (i32.const 1)) (local.get $out))))
