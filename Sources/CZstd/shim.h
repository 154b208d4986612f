// The only C header of libzstd that the Decompression target sees.
#include <zstd.h>
