#ifndef KV_CROCKSDB_SHIM_H
#define KV_CROCKSDB_SHIM_H
#include <rocksdb/c.h>
#endif
