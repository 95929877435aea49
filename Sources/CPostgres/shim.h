#ifndef KV_CPOSTGRES_SHIM_H
#define KV_CPOSTGRES_SHIM_H
#include <libpq-fe.h>
#endif
