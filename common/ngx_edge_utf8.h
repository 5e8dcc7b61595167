/*
 * Strict UTF-8 (RFC 3629), for every module that puts outside bytes into
 * a format that must be valid UTF-8 (metrics labels, JSON, headers).
 *
 * Valid means: no overlong forms, no surrogates (U+D800-DFFF), nothing
 * above U+10FFFF, no bytes C0, C1 or F5-FF, no stray continuation byte,
 * no sequence cut short.  nginx's ngx_utf8_decode() is not a validator
 * (it accepts some of these, and what it accepts changed in 1.23.4), so
 * this file does not use it.
 *
 * Sanitizing replaces each "maximal subpart" of an ill-formed sequence
 * (Unicode 15, section 3.9; what browsers do) by U+FFFD, the three bytes
 * EF BF BD.  Each replaced subpart is at least one byte, so the output is
 * at most NGX_EDGE_UTF8_SANITIZED_MAX(len) bytes.
 *
 * The file needs nothing from nginx, so a test program can build it alone.
 */

#ifndef _NGX_EDGE_UTF8_H_INCLUDED_
#define _NGX_EDGE_UTF8_H_INCLUDED_


#include <stddef.h>


#ifndef NGX_EDGE_API
#if (defined __GNUC__ || defined __clang__)
#define NGX_EDGE_API  __attribute__((visibility("hidden")))
#else
#define NGX_EDGE_API
#endif
#endif


/* U+FFFD REPLACEMENT CHARACTER */
#define NGX_EDGE_UTF8_REPLACEMENT      "\xef\xbf\xbd"
#define NGX_EDGE_UTF8_REPLACEMENT_LEN  3

/* the most bytes ngx_edge_utf8_sanitize() writes for len bytes of input */
#define NGX_EDGE_UTF8_SANITIZED_MAX(len)  (3 * (len))


/*
 * The character at p (len > 0 bytes available): returns its length (1-4)
 * if it is valid, or 0 and sets *bad to the length of the maximal subpart
 * to replace (1-3).
 */
NGX_EDGE_API size_t ngx_edge_utf8_char(const unsigned char *p, size_t len,
    size_t *bad);

/* the length of the longest valid prefix: len when all of it is valid */
NGX_EDGE_API size_t ngx_edge_utf8_valid_prefix(const unsigned char *p,
    size_t len);

/* 1 if all len bytes are valid UTF-8, else 0 */
NGX_EDGE_API int ngx_edge_utf8_valid(const unsigned char *p, size_t len);

/*
 * Copies src to dst, each maximal ill-formed subpart replaced by U+FFFD,
 * writing at most size bytes and never a part of a character: when the
 * next character (or replacement) does not fit, it stops there.  Returns
 * the bytes written.  size = NGX_EDGE_UTF8_SANITIZED_MAX(len) always
 * takes the whole input; a smaller size truncates on a character
 * boundary.  dst and src must not overlap.
 */
NGX_EDGE_API size_t ngx_edge_utf8_sanitize(unsigned char *dst, size_t size,
    const unsigned char *src, size_t len);


#endif /* _NGX_EDGE_UTF8_H_INCLUDED_ */
