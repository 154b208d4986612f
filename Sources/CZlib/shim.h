// The only C header of zlib that the Decompression target sees.
#include <zlib.h>

/// inflateInit2 is a macro, which Swift cannot call; this wrapper passes the version and size.
static inline int czlib_inflate_init2(z_stream *stream, int window_bits) {
    return inflateInit2(stream, window_bits);
}
