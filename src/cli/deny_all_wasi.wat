;; The WASI fledge gives a policy whose toolchain cannot build without it (Go's wasip1 runtime imports
;; wasi_snapshot_preview1 even when the program uses none of it): every preview1 function, answered inside the
;; component. No files or sockets (every descriptor is bad), no arguments, no environment, stdout and stderr
;; swallowed, a wall clock stopped at the epoch, a monotonic clock that advances 1 µs per reading, and random
;; bytes that are always the same. `fledge policy componentize` links it as the module's adapter, so the
;; component imports nothing of WASI and the host grants nothing new.
(module
  (import "env" "memory" (memory 0))
  (global $monotonic (mut i64) (i64.const 0))

  ;; errno values of preview1
  (func $badf (result i32) (i32.const 8))
  (func $nosys (result i32) (i32.const 52))

  ;; No arguments and no environment: zero entries of zero bytes.
  (func $zero_sizes (param $count i32) (param $bytes i32) (result i32)
    (i32.store (local.get $count) (i32.const 0))
    (i32.store (local.get $bytes) (i32.const 0))
    (i32.const 0))
  (func (export "args_sizes_get") (param i32 i32) (result i32)
    (call $zero_sizes (local.get 0) (local.get 1)))
  (func (export "environ_sizes_get") (param i32 i32) (result i32)
    (call $zero_sizes (local.get 0) (local.get 1)))
  (func (export "args_get") (param i32 i32) (result i32) (i32.const 0))
  (func (export "environ_get") (param i32 i32) (result i32) (i32.const 0))

  ;; Clock 0 is the wall clock (the epoch, always); the others read the monotonic counter.
  (func (export "clock_time_get") (param $id i32) (param $precision i64) (param $out i32) (result i32)
    (if (i32.eqz (local.get $id))
      (then (i64.store (local.get $out) (i64.const 0)))
      (else
        (global.set $monotonic (i64.add (global.get $monotonic) (i64.const 1000)))
        (i64.store (local.get $out) (global.get $monotonic))))
    (i32.const 0))
  (func (export "clock_res_get") (param $id i32) (param $out i32) (result i32)
    (i64.store (local.get $out) (i64.const 1000))
    (i32.const 0))

  ;; The same bytes every time: a policy's randomness is a fixed seed.
  (func (export "random_get") (param $buf i32) (param $len i32) (result i32)
    (memory.fill (local.get $buf) (i32.const 42) (local.get $len))
    (i32.const 0))

  ;; Writes to stdout and stderr succeed and go nowhere; every other descriptor is bad.
  (func (export "fd_write") (param $fd i32) (param $iovs i32) (param $count i32) (param $written i32) (result i32)
    (local $total i32)
    (if (i32.gt_u (local.get $fd) (i32.const 2)) (then (return (i32.const 8))))
    (block $done
      (loop $next
        (br_if $done (i32.eqz (local.get $count)))
        (local.set $total (i32.add (local.get $total) (i32.load offset=4 (local.get $iovs))))
        (local.set $iovs (i32.add (local.get $iovs) (i32.const 8)))
        (local.set $count (i32.sub (local.get $count) (i32.const 1)))
        (br $next)))
    (i32.store (local.get $written) (local.get $total))
    (i32.const 0))
  ;; stdin is empty.
  (func (export "fd_read") (param $fd i32) (param i32 i32) (param $read i32) (result i32)
    (if (i32.gt_u (local.get $fd) (i32.const 2)) (then (return (i32.const 8))))
    (i32.store (local.get $read) (i32.const 0))
    (i32.const 0))

  (func (export "sched_yield") (result i32) (i32.const 0))
  (func (export "proc_exit") (param i32) (unreachable))
  (func (export "proc_raise") (param i32) (result i32) (call $nosys))
  (func (export "poll_oneoff") (param i32 i32 i32 i32) (result i32) (call $nosys))

  (func (export "fd_advise") (param i32 i64 i64 i32) (result i32) (call $badf))
  (func (export "fd_allocate") (param i32 i64 i64) (result i32) (call $badf))
  (func (export "fd_close") (param i32) (result i32) (call $badf))
  (func (export "fd_datasync") (param i32) (result i32) (call $badf))
  (func (export "fd_fdstat_get") (param i32 i32) (result i32) (call $badf))
  (func (export "fd_fdstat_set_flags") (param i32 i32) (result i32) (call $badf))
  (func (export "fd_fdstat_set_rights") (param i32 i64 i64) (result i32) (call $badf))
  (func (export "fd_filestat_get") (param i32 i32) (result i32) (call $badf))
  (func (export "fd_filestat_set_size") (param i32 i64) (result i32) (call $badf))
  (func (export "fd_filestat_set_times") (param i32 i64 i64 i32) (result i32) (call $badf))
  (func (export "fd_pread") (param i32 i32 i32 i64 i32) (result i32) (call $badf))
  (func (export "fd_prestat_get") (param i32 i32) (result i32) (call $badf))
  (func (export "fd_prestat_dir_name") (param i32 i32 i32) (result i32) (call $badf))
  (func (export "fd_pwrite") (param i32 i32 i32 i64 i32) (result i32) (call $badf))
  (func (export "fd_readdir") (param i32 i32 i32 i64 i32) (result i32) (call $badf))
  (func (export "fd_renumber") (param i32 i32) (result i32) (call $badf))
  (func (export "fd_seek") (param i32 i64 i32 i32) (result i32) (call $badf))
  (func (export "fd_sync") (param i32) (result i32) (call $badf))
  (func (export "fd_tell") (param i32 i32) (result i32) (call $badf))
  (func (export "path_create_directory") (param i32 i32 i32) (result i32) (call $badf))
  (func (export "path_filestat_get") (param i32 i32 i32 i32 i32) (result i32) (call $badf))
  (func (export "path_filestat_set_times") (param i32 i32 i32 i32 i64 i64 i32) (result i32) (call $badf))
  (func (export "path_link") (param i32 i32 i32 i32 i32 i32 i32) (result i32) (call $badf))
  (func (export "path_open") (param i32 i32 i32 i32 i32 i64 i64 i32 i32) (result i32) (call $badf))
  (func (export "path_readlink") (param i32 i32 i32 i32 i32 i32) (result i32) (call $badf))
  (func (export "path_remove_directory") (param i32 i32 i32) (result i32) (call $badf))
  (func (export "path_rename") (param i32 i32 i32 i32 i32 i32) (result i32) (call $badf))
  (func (export "path_symlink") (param i32 i32 i32 i32 i32) (result i32) (call $badf))
  (func (export "path_unlink_file") (param i32 i32 i32) (result i32) (call $badf))
  (func (export "sock_accept") (param i32 i32 i32) (result i32) (call $badf))
  (func (export "sock_recv") (param i32 i32 i32 i32 i32 i32) (result i32) (call $badf))
  (func (export "sock_send") (param i32 i32 i32 i32 i32) (result i32) (call $badf))
  (func (export "sock_shutdown") (param i32 i32) (result i32) (call $badf))
)
