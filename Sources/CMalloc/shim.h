// glibc's malloc tuning (mallopt), which the Glibc module of Swift does not export.
#include <malloc.h>
