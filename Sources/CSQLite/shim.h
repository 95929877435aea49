#ifndef KV_CSQLITE_SHIM_H
#define KV_CSQLITE_SHIM_H
#include <sqlite3.h>
#endif
