#ifndef KV_CMARIADB_SHIM_H
#define KV_CMARIADB_SHIM_H
#include <mysql.h>
#endif
