#ifndef POSTGRES_DRIVERS_LIBPQ_SHIM_H
#define POSTGRES_DRIVERS_LIBPQ_SHIM_H
#include <libpq-fe.h>
#endif
