#ifndef KV_CHIREDIS_SHIM_H
#define KV_CHIREDIS_SHIM_H
#include <hiredis/hiredis.h>
#endif
