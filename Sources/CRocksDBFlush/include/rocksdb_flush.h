#ifndef KV_ROCKSDB_FLUSH_H
#define KV_ROCKSDB_FLUSH_H
#include <stddef.h>
#include <rocksdb/c.h>

#ifdef __cplusplus
extern "C" {
#endif

/// Flushes the memtables of `count` column families and waits until their table files
/// are written and synced. With the database option `atomic_flush` set, the result of
/// every family enters the MANIFEST as one edit: after a crash all or none of them are
/// there. RocksDB's C API (7.8) flushes one family at a time, which cannot give that.
/// On failure `*errptr` is set to a `malloc`ed message, as in the C API.
void kv_rocksdb_flush_families(
    rocksdb_t *db, rocksdb_column_family_handle_t *const *families, size_t count, char **errptr);

#ifdef __cplusplus
}
#endif
#endif
