/* filter_int.h: internals shared by the files of filter/ (not a public header). */
#ifndef SPIM_FILTER_INT_H
#define SPIM_FILTER_INT_H

#include "filter.h"

int spim__slice_ieq(const char *p, size_t n, const char *name);
long spim__parse_uint(const char *p, size_t n);
/* "type/subtype; charset=x; boundary=y" into slices (values unquoted). */
void spim__parse_ctype(const char *p, size_t n, struct spim_slice *type, struct spim_slice *sub,
                       struct spim_slice *charset, struct spim_slice *boundary);
/* Decodes the Via value buf[b..e) into the via_* fields of m. */
int spim__decode_via(const char *buf, size_t b, size_t e, struct spim_sip_msg *m);
/* Appends n bytes to b; SPIM_ETOOBIG past its cap. */
int spim__buf_put(struct spim_buf *b, const void *p, size_t n);
int spim__buf_printf(struct spim_buf *b, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* "ip:port" of an address. */
void spim__addr_str(const struct sockaddr_storage *ss, char *out, size_t cap);
/* Loads libosipparser2 (osip_lazy.c) once; SPIM_EIO with the reason in err if it cannot. */
int spim__osip_load(char *err, size_t errcap);

#endif
