#include "rocksdb_flush.h"

#include <rocksdb/db.h>

#include <cstdlib>
#include <cstring>
#include <vector>

// The C API's handles are structs holding the C++ object as their only member
// (rocksdb/c.cc). They are declared again here, identically, to reach the C++ call the
// C API lacks.
struct rocksdb_t {
    rocksdb::DB *rep;
};
struct rocksdb_column_family_handle_t {
    rocksdb::ColumnFamilyHandle *rep;
};

extern "C" void kv_rocksdb_flush_families(
    rocksdb_t *db, rocksdb_column_family_handle_t *const *families, size_t count, char **errptr) {
    std::vector<rocksdb::ColumnFamilyHandle *> handles;
    handles.reserve(count);
    for (size_t index = 0; index < count; ++index) handles.push_back(families[index]->rep);
    rocksdb::FlushOptions options;
    options.wait = true;
    // Waiting for compaction to make room first would hold a writer for seconds; the
    // flush itself is what the caller waits for, and RocksDB's own write stalls still
    // slow everyone down when L0 fills.
    options.allow_write_stall = true;
    rocksdb::Status status = db->rep->Flush(options, handles);
    if (!status.ok()) {
        if (*errptr != nullptr) std::free(*errptr);
        *errptr = strdup(status.ToString().c_str());
    }
}
